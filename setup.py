"""Only the C part of the build; everything else is in pyproject.toml."""

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup

# The C fast path: its one translation unit and the Python-free headers it includes
# (the libFuzzer harnesses in tests/fuzz/c include them too).
SOURCES = ["kzgate/dns/_fast.c"]
HEADERS = ["kzgate/dns/query_parse.h", "kzgate/nametable_core.h"]


def sources_sha256(paths: list[str]) -> str:
    """What the module says it was built from; tests/unit/test_native_build.py recomputes it."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()


FILES = SOURCES + HEADERS
# Optional for an install without a compiler (the engine then answers in pure
# Python); scripts/test sets KZGATE_REQUIRE_FAST=1, and then a compile error fails
# the install instead of leaving an old module in place.
REQUIRE = os.environ.get("KZGATE_REQUIRE_FAST") == "1"

setup(
    ext_modules=[
        Extension(
            "kzgate.dns._fast",
            sources=SOURCES,
            depends=HEADERS,
            optional=not REQUIRE,
            define_macros=[
                ("KZGATE_SOURCE_SHA256", f'"{sources_sha256(FILES)}"'),
                ("KZGATE_SOURCE_FILES", f'"{" ".join(sorted(FILES))}"'),
            ],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ]
)
