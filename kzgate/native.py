"""The compiled module ``kzgate._native``, when the install could build it.

setup.py builds it from every C file under kzgate/: the NameTable
(kzgate/nametable.c, used through kzgate/nametable.py) and the DNS fast path
(kzgate/dns/fast_*.c, used through kzgate/dns/fastpath.py), which reads the
table in place. Without a compiler the install still succeeds, ``NATIVE`` is
None, and the dict NameTable and the engine do everything in Python.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol, cast


class NativeModule(Protocol):
    # What setup.py compiled: the SHA-256 of these C files (tests check it against the disk).
    SOURCE_SHA256: str
    SOURCE_FILES: str


def load() -> ModuleType | None:
    try:
        return importlib.import_module("kzgate._native")
    except ImportError:
        return None


NATIVE = cast(NativeModule | None, load())
