"""The event loop kzgate runs on, chosen here and nowhere else.

uvloop when it is installed and wanted: the DNS hot path is faster on it.
A DNS worker moved to pure Python after repeated crashes does not want it:
that worker's point is to run no C on the data path (README, "DNS workers").
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop(*, prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A new loop: uvloop's when ``prefer_uvloop`` and it is installed, else asyncio's."""
    if prefer_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T], *, prefer_uvloop: bool = True) -> T:
    """``asyncio.run(main)`` on the loop ``new_event_loop`` chooses."""
    factory = functools.partial(new_event_loop, prefer_uvloop=prefer_uvloop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
