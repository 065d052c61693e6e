"""The compiled UDP hot path (kzgate/dns/_fast.c), when the install could build it.

The C module answers blocked names and cache hits straight from the engine's
own structures (``Engine.fast_view``) and hands every other query back, so the
engine stays the one reference for what an answer is. Without a compiler the
install still succeeds, ``FAST`` is None and the engine answers everything.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Protocol, cast

from kzgate.dns.types import DnsStats

Address = tuple[Any, ...]

# What kzgate/dns/_fast.c reads, in this order (it checks each member's type): the
# policy's NameTable and its list of InstructionRefs, the cache's dict, the block
# answers' plans, SOA tail and EDE memo, and the counters.
FastView = tuple[object, list[Any], object, object, bytes, object, dict[str, int], DnsStats]


class NameTable(Protocol):
    """Lower-case wire-form names -> small ints, matched with their parents (policy.py)."""

    def set(self, name: bytes, value: int) -> None: ...

    def discard(self, name: bytes) -> bool: ...

    def get(self, name: bytes) -> int | None: ...

    def match(self, qname: bytes) -> tuple[int, int] | None:
        """(offset of the matching suffix, its value) for the name or its nearest listed parent."""

    def items(self) -> list[tuple[bytes, int]]: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


class FastModule(Protocol):
    NameTable: type[NameTable]
    # What setup.py compiled: the SHA-256 of these C files (tests check it against the disk).
    SOURCE_SHA256: str
    SOURCE_FILES: str

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


class DictNameTable:
    """The NameTable without the C module: a dict, one probe per label."""

    def __init__(self) -> None:
        self._names: dict[bytes, int] = {}

    def set(self, name: bytes, value: int) -> None:
        self._names[_checked(name)] = value

    def discard(self, name: bytes) -> bool:
        return self._names.pop(_checked(name), None) is not None

    def get(self, name: bytes) -> int | None:
        return self._names.get(_checked(name))

    def match(self, qname: bytes) -> tuple[int, int] | None:
        names = self._names
        off = 0
        end = len(qname) - 1
        while off < end:
            value = names.get(qname[off:])
            if value is not None:
                return off, value
            off += qname[off] + 1
        return None

    def items(self) -> list[tuple[bytes, int]]:
        return list(self._names.items())

    def clear(self) -> None:
        self._names.clear()

    def __len__(self) -> int:
        return len(self._names)

    @property
    def nbytes(self) -> int:
        return sys.getsizeof(self._names) + sum(map(sys.getsizeof, self._names))


def _checked(name: bytes) -> bytes:
    # The same refusal as the C table's, so the twins agree on every input.
    if not 1 <= len(name) <= 255:
        raise ValueError("a wire-form name is 1 to 255 octets")
    return name


def new_name_table() -> NameTable:
    """The compiled table when built, else the dict one."""
    return FAST.NameTable() if FAST is not None else DictNameTable()
