"""The policy's names: lower-case wire-form names -> small ints, matched with their parents.

Two twins behind one protocol, equal on every input (tests compare them with a
dict): the compiled NameTable (kzgate/nametable.c over nametable_core.h: about
40 octets a name, and a probe allocates nothing and usually reads one cache
line), and a dict, for an install without a compiler and for a DNS worker that
must run no C. The DNS fast path reads the compiled table in place.
"""

from __future__ import annotations

import sys
from typing import Protocol, cast

from kzgate.native import NATIVE


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


class _Compiled(Protocol):
    NameTable: type[NameTable]


# The compiled table's class (kzgate._native.NameTable), None without the C module.
CompiledNameTable = None if NATIVE is None else cast(_Compiled, NATIVE).NameTable


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
    return CompiledNameTable() if CompiledNameTable is not None else DictNameTable()


def is_compiled(table: NameTable) -> bool:
    """Whether ``table`` is the compiled one, which C code may read in place."""
    return CompiledNameTable is not None and isinstance(table, CompiledNameTable)
