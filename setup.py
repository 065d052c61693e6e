"""Only the C part of the build; everything else is in pyproject.toml."""

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup

# kzgate._native, one module from these C files (kzgate/_native.c puts the parts
# together): the NameTable, and the DNS fast path that reads it in place. The
# Python-free headers (query_parse.h, nametable_core.h) are what the libFuzzer
# harnesses in tests/fuzz/c include on their own.
SOURCES = [
    "kzgate/_native.c",
    "kzgate/nametable.c",
    "kzgate/dns/fast_view.c",
    "kzgate/dns/fast_answer.c",
    "kzgate/dns/fast_udp.c",
]
HEADERS = [
    "kzgate/native.h",
    "kzgate/nametable.h",
    "kzgate/nametable_core.h",
    "kzgate/dns/fast.h",
    "kzgate/dns/query_parse.h",
]


def sources_sha256(paths: list[str]) -> str:
    """What the module says it was built from; tests/unit/test_native_build.py recomputes it."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()


FILES = SOURCES + HEADERS
# Optional for an install without a compiler (a dict NameTable, and the engine
# answers in pure Python); scripts/test sets KZGATE_REQUIRE_FAST=1, and then a
# compile error fails the install instead of leaving an old module in place.
REQUIRE = os.environ.get("KZGATE_REQUIRE_FAST") == "1"

setup(
    ext_modules=[
        Extension(
            "kzgate._native",
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
