"""Giving back what start-up used only for a moment.

Loading a million names builds large temporary dicts (the state snapshot, the
start-up diff); glibc keeps much of the freed heap mapped unless asked. And the
objects that survive start-up live as long as the process: the cyclic GC need
not walk them again on every full collection (about 50 ms with 1M names).
"""

from __future__ import annotations

import ctypes
import gc


def keep_for_life() -> None:
    """What exists now lives as long as the process (the register's effective state,
    just loaded): no collection need walk it again. At 1M prefixes this spares
    start-up's reconciles about 1 s of full collections (routes from empty 5.5 ->
    4.6 s, bench/routes.py), and forked DNS workers the copies a walk would touch."""
    gc.freeze()


def settle_after_start() -> None:
    gc.freeze()
    trim_heap()


def trim_heap() -> None:
    """Return free heap pages to the system (glibc's malloc_trim); elsewhere, nothing."""
    try:
        # The process's own symbols, libc's among them: find_library would run ldconfig.
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # not glibc (musl has no malloc_trim)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
