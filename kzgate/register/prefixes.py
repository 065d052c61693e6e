"""The maximal active prefixes: of the active IP prefixes, those inside no other.

Pure, and blind to instructions: here a prefix is active or not, and the
maximal ones are what is enforced (a nested prefix changes nothing while the
wider one is in force). Which instructions name a prefix, and the labels of
a diff, are state.py's.

Representation, chosen for 1M targets:

* A prefix is one int per address family, ``key = network_int << 8 | prefixlen``.
  Sorting keys orders by start address, the containing prefix first, so a
  sorted list plus ``bisect`` answers "what contains / lies inside" in
  O(log n), and list splices are memmoves rather than Python loops.
* Per family: ``_sorted`` is every active key in order, ``_maximal`` the
  maximal ones in order (disjoint, never merged when adjacent).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

from kzgate.names import IPNetwork

PrefixKey = tuple[int, int]  # (family index 0=v4 / 1=v6, key)

BITS = (32, 128)  # address length per family
LOW = 0xFF  # the key of the longest prefix starting at an address: start << 8 | 0xFF
# Above this many keys in one operation, rebuild a list in C (extend+sort,
# comprehension, concatenated slices) instead of one memmove per key.
BATCH = 64


def end(key: int, bits: int) -> int:
    """Last address of the prefix ``key``."""
    return (key >> 8) + (1 << (bits - (key & LOW))) - 1


def parse_addr(addr: str) -> tuple[int, int]:
    """(family, int) of a canonical address; IPv4 without ipaddress, it is hot at load."""
    if ":" in addr:
        return 1, int(ipaddress.IPv6Address(addr))
    a, b, c, d = addr.split(".")
    return 0, int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)


def prefix_key(value: str) -> PrefixKey:
    """The (family, key) of a normalized ``ip`` or ``cidr`` target."""
    addr, _, length = value.partition("/")
    fam, start = parse_addr(addr)
    return fam, start << 8 | (int(length) if length else BITS[fam])


def key_network(fam: int, key: int) -> IPNetwork:
    if fam == 0:
        return ipaddress.IPv4Network((key >> 8, key & LOW))
    return ipaddress.IPv6Network((key >> 8, key & LOW))


def _insert_keys(srt: list[int], keys: list[int]) -> None:
    if len(keys) <= BATCH:
        for k in keys:
            insort(srt, k)
    else:
        srt.extend(keys)
        srt.sort()  # two sorted runs: timsort merges them in C


def _delete_keys(srt: list[int], keys: list[int]) -> None:
    if len(keys) <= BATCH:
        for k in keys:
            del srt[bisect_left(srt, k)]
    else:
        gone = set(keys)
        srt[:] = [k for k in srt if k not in gone]


def _splice(lst: list[int], edits: list[tuple[int, int, list[int]]]) -> None:
    """Replace ``lst[lo:hi]`` by ``items`` for sorted, non-overlapping edits."""
    if len(edits) <= BATCH // 4:
        for lo, hi, items in reversed(edits):
            lst[lo:hi] = items
        return
    out: list[int] = []
    prev = 0
    for lo, hi, items in edits:
        out += lst[prev:lo]
        out += items
        prev = hi
    out += lst[prev:]
    lst[:] = out


class MaximalPrefixes:
    """The active prefix keys of both families, and the maximal ones among them."""

    def __init__(self) -> None:
        self._sorted: tuple[list[int], list[int]] = ([], [])
        self._maximal: tuple[list[int], list[int]] = ([], [])

    @classmethod
    def build(cls, active: tuple[Iterable[int], Iterable[int]]) -> MaximalPrefixes:
        """From every active key of each family at once (start-up)."""
        mp = cls()
        for fam in (0, 1):
            bits = BITS[fam]
            srt = sorted(active[fam])
            mp._sorted[fam][:] = srt
            maximal = mp._maximal[fam]
            last_end = -1
            for k in srt:
                if k >> 8 > last_end:
                    maximal.append(k)
                    last_end = end(k, bits)
        return mp

    def maximal(self, fam: int) -> list[int]:
        """The maximal active keys of family ``fam``, in order (not to be changed)."""
        return self._maximal[fam]

    def grow(self, fam: int, keys: list[int]) -> tuple[list[int], list[int]]:
        """Newly active ``keys`` (sorted here): each new maximal one not inside a
        maximal prefix replaces the maximal prefixes inside it.

        Returns (the keys that became maximal, the keys that no longer are).
        """
        bits = BITS[fam]
        keys.sort()
        _insert_keys(self._sorted[fam], keys)
        maximal = self._maximal[fam]
        became: list[int] = []
        ceased: list[int] = []
        edits: list[tuple[int, int, list[int]]] = []
        last_end = -1
        for key in keys:
            start = key >> 8
            if start <= last_end:  # inside an earlier new key: decided with it
                continue
            stop = last_end = start + (1 << (bits - (key & LOW))) - 1
            i = bisect_right(maximal, start << 8 | LOW) - 1
            if i >= 0 and end(maximal[i], bits) >= stop:
                continue
            lo = bisect_left(maximal, start << 8, max(i, 0))
            hi = bisect_right(maximal, stop << 8 | LOW, lo)
            if hi > lo:
                ceased += maximal[lo:hi]
            became.append(key)
            edits.append((lo, hi, [key]))
        _splice(maximal, edits)
        return became, ceased

    def shrink(self, fam: int, keys: list[int]) -> tuple[list[int], list[int]]:
        """No longer active ``keys`` (sorted here): each maximal one gives way to
        the maximal active prefixes inside it.

        Returns (the keys that became maximal, the keys that no longer are).
        """
        bits = BITS[fam]
        keys.sort()
        srt = self._sorted[fam]
        _delete_keys(srt, keys)
        maximal = self._maximal[fam]
        became: list[int] = []
        ceased: list[int] = []
        edits: list[tuple[int, int, list[int]]] = []
        for key in keys:
            i = bisect_left(maximal, key)
            if i == len(maximal) or maximal[i] != key:
                continue  # was inside another maximal prefix, which stays
            ceased.append(key)
            stop = end(key, bits)
            exposed: list[int] = []
            j = bisect_left(srt, key)
            while j < len(srt) and srt[j] >> 8 <= stop:
                inner = srt[j]
                exposed.append(inner)
                j = bisect_right(srt, end(inner, bits) << 8 | LOW, j)  # skip its insides
            became += exposed
            edits.append((i, i + 1, exposed))
        _splice(maximal, edits)
        return became, ceased
