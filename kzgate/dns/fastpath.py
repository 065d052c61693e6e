"""The compiled UDP hot path (kzgate/dns/_fast.c), when the install could build it.

The C module answers blocked names and cache hits straight from the engine's
own structures (``Engine.fast_view``) and hands every other query back, so the
engine stays the one reference for what an answer is. Without a compiler the
install still succeeds, ``FAST`` is None and the engine answers everything.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

from kzgate.dns.engine import FastView

Address = tuple[Any, ...]


class FastModule(Protocol):
    BATCH: int
    BUF_SIZE: int

    def serve(self, fd: int, now: float, view: FastView) -> list[tuple[bytes, Address]] | None:
        """Answer what waits on the non-blocking UDP socket ``fd``; the rest, with senders."""

    def answer(self, data: bytes, now: float, view: FastView) -> bytes | None:
        """What serve() would send for ``data``; None: the engine's to answer."""


def load() -> FastModule | None:
    try:
        return cast(FastModule, importlib.import_module("kzgate.dns._fast"))
    except ImportError:
        return None


FAST = load()
