"""The effective state: which domains and maximal IP prefixes are enforced, and by what.

Pure: values in, values out; no SQLite, no I/O. The register feeds it the
targets of each instruction that becomes active (``add``) or stops being
active (``remove``) and passes the returned ``Diff`` to every enforcer.

Representation, chosen for 1M targets:

* A set of covering instructions ("refs") is one shared ``InstructionRef``
  object, or a sorted tuple of two or more: no set per target, and the label
  (the smallest ref) is ``refs`` itself or ``refs[0]``.
* A prefix is one int per address family, ``key = network_int << 8 | prefixlen``.
  Sorting keys orders by start address, the containing prefix first, so a
  sorted list plus ``bisect`` answers "what contains / lies inside" in
  O(log n), and list splices are memmoves rather than Python loops.
* Per family: ``_active`` maps key to refs, ``_sorted`` is every active key
  in order, ``_enforced`` is the maximal active keys in order (disjoint,
  never merged when adjacent).

Prefix labels are those of the moment a prefix becomes enforced; ``Diff`` has
no "prefix relabelled" field, so a later change of a still-enforced prefix's
smallest ref is not reported (``snapshot`` always gives the current smallest).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from typing import Any

from kzgate.model import Diff, InstructionRef, State, Target
from kzgate.names import IPNetwork, parent_domains

Refs = InstructionRef | tuple[InstructionRef, ...]
PrefixKey = tuple[int, int]  # (family index 0=v4 / 1=v6, key)

_BITS = (32, 128)
_LOW = 0xFF  # the key of the longest prefix starting at an address: start << 8 | 0xFF
# Above this many keys in one operation, rebuild a list in C (extend+sort,
# comprehension, concatenated slices) instead of one memmove per key.
BATCH = 64


def _label(refs: Refs) -> InstructionRef:
    return refs if isinstance(refs, InstructionRef) else refs[0]


def _iter(refs: Refs) -> tuple[InstructionRef, ...]:
    return (refs,) if isinstance(refs, InstructionRef) else refs


def _with(refs: Refs | None, ref: InstructionRef) -> Refs | None:
    """``refs`` plus ``ref``, or None when ``ref`` is already there."""
    if refs is None:
        return ref
    if isinstance(refs, InstructionRef):
        if refs == ref:
            return None
        return (refs, ref) if refs < ref else (ref, refs)
    if ref in refs:
        return None
    return tuple(sorted((*refs, ref)))


def _without(refs: Refs, ref: InstructionRef) -> tuple[bool, Refs | None]:
    """(changed, ``refs`` minus ``ref``); None when nothing is left."""
    if isinstance(refs, InstructionRef):
        return (True, None) if refs == ref else (False, refs)
    if ref not in refs:
        return False, refs
    rest = tuple(r for r in refs if r != ref)
    return True, rest[0] if len(rest) == 1 else rest


def _end(key: int, bits: int) -> int:
    """Last address of the prefix ``key``."""
    return (key >> 8) + (1 << (bits - (key & _LOW))) - 1


def _parse_addr(addr: str) -> tuple[int, int]:
    """(family, int) of a canonical address; IPv4 without ipaddress, it is hot at load."""
    if ":" in addr:
        return 1, int(ipaddress.IPv6Address(addr))
    a, b, c, d = addr.split(".")
    return 0, int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)


def prefix_key(kind: str, value: str) -> PrefixKey:
    """The (family, key) of a normalized ``ip`` or ``cidr`` target."""
    addr, _, length = value.partition("/")
    fam, start = _parse_addr(addr)
    return fam, start << 8 | (int(length) if length else _BITS[fam])


def key_network(fam: int, key: int) -> IPNetwork:
    if fam == 0:
        return ipaddress.IPv4Network((key >> 8, key & _LOW))
    return ipaddress.IPv6Network((key >> 8, key & _LOW))


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


class EffectiveState:
    """Active instructions' targets, and the enforced domains and maximal prefixes."""

    def __init__(self) -> None:
        self._domains: dict[str, Refs] = {}
        self._active: tuple[dict[int, Refs], dict[int, Refs]] = ({}, {})
        self._sorted: tuple[list[int], list[int]] = ([], [])
        self._enforced: tuple[list[int], list[int]] = ([], [])
        self._n_host = [0, 0]  # active /32 and /128 keys, per family
        # Only for counts(): a /32 or /128 can be named as "ip" or as "cidr"
        # (rare); these record which instructions named it as cidr, and which
        # of those did not also name it as ip.
        self._host_cidr: dict[PrefixKey, set[InstructionRef]] = {}
        self._host_cidr_only: dict[PrefixKey, set[InstructionRef]] = {}
        self._other: dict[tuple[str, str], int] = {}  # url/app: instructions naming it
        self._n_other = {"url": 0, "app": 0}
        self._interned: dict[InstructionRef, InstructionRef] = {}

    # -- building -----------------------------------------------------------

    @classmethod
    def load(cls, active: Iterable[tuple[InstructionRef, Iterable[Target]]]) -> EffectiveState:
        """Build the state of many active instructions at once (start-up)."""
        return cls.from_rows((ref, t.kind, t.value) for ref, targets in active for t in targets)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[InstructionRef, str, str]]) -> EffectiveState:
        """Like ``load``, from flat (ref, kind, value) rows, e.g. a streamed SELECT."""
        st = cls()
        domains = st._domains
        last: InstructionRef | None = None
        ref = InstructionRef("", "", "")
        others: dict[InstructionRef, list[Target]] = {}
        for row_ref, kind, value in rows:
            if row_ref is not last:  # rows come grouped: intern once per run
                last = row_ref
                ref = st._interned.setdefault(row_ref, row_ref)
            if kind == "domain":
                cur = domains.get(value)
                if cur is None:
                    domains[value] = ref
                else:
                    new = _with(cur, ref)
                    if new is not None:
                        domains[value] = new
            elif kind == "ip":
                fam, key = prefix_key(kind, value)
                active = st._active[fam]
                cur = active.get(key)
                if cur is None:
                    active[key] = ref
                else:
                    new = _with(cur, ref)
                    if new is not None:
                        active[key] = new
            else:  # cidr, url, app: go through the exact path for their bookkeeping
                others.setdefault(ref, []).append(Target(kind, value))  # type: ignore[arg-type]
        for ref, targets in others.items():
            # cidr rows are deferred, so ``ref`` is on a host key now only if it
            # also named that address as "ip": seed the ip/cidr bookkeeping with that.
            named_ip: set[PrefixKey] = set()
            for t in targets:
                if t.kind == "cidr":
                    fam, key = prefix_key(t.kind, t.value)
                    if ref in _iter(st._active[fam].get(key, ())):
                        named_ip.add((fam, key))
            st._add_targets(ref, targets, [], {}, {}, named_ip)
        for fam in (0, 1):
            bits = _BITS[fam]
            srt = sorted(st._active[fam])
            st._sorted[fam][:] = srt
            st._n_host[fam] = sum(1 for k in srt if k & _LOW == bits)
            enforced = st._enforced[fam]
            last_end = -1
            for k in srt:
                if k >> 8 > last_end:
                    enforced.append(k)
                    last_end = _end(k, bits)
        return st

    # -- changes ------------------------------------------------------------

    def add(self, ref: InstructionRef, targets: Iterable[Target]) -> Diff:
        """Instruction ``ref`` becomes active with ``targets``: what starts being enforced."""
        ref = self._interned.setdefault(ref, ref)
        new_keys: list[list[int]] = [[], []]
        added: dict[str, InstructionRef] = {}
        relabelled: dict[str, InstructionRef] = {}
        self._add_targets(ref, targets, new_keys, added, relabelled)
        p_added: dict[IPNetwork, InstructionRef] = {}
        p_removed: set[IPNetwork] = set()
        for fam in (0, 1):
            if new_keys[fam]:
                self._grow(fam, new_keys[fam], p_added, p_removed)
        return Diff(added, frozenset(), relabelled, p_added, frozenset(p_removed))

    def remove(self, ref: InstructionRef, targets: Iterable[Target]) -> Diff:
        """Instruction ``ref`` stops being active: what nothing else covers any more."""
        gone_keys: list[list[int]] = [[], []]
        removed: set[str] = set()
        relabelled: dict[str, InstructionRef] = {}
        host_cidr: set[PrefixKey] = set()
        host_ip: set[PrefixKey] = set()
        seen_other: set[tuple[str, str]] = set()
        for t in targets:
            kind, value = t.kind, t.value
            if kind == "domain":
                cur = self._domains.get(value)
                if cur is None:
                    continue
                changed, rest = _without(cur, ref)
                if not changed:
                    continue
                if rest is None:
                    del self._domains[value]
                    removed.add(value)
                else:
                    self._domains[value] = rest
                    if _label(rest) != _label(cur):
                        relabelled[value] = _label(rest)
            elif kind == "ip" or kind == "cidr":
                fam, key = prefix_key(kind, value)
                if key & _LOW == _BITS[fam]:
                    (host_ip if kind == "ip" else host_cidr).add((fam, key))
                active = self._active[fam]
                cur = active.get(key)
                if cur is None:
                    continue
                changed, rest = _without(cur, ref)
                if not changed:
                    continue
                if rest is None:
                    del active[key]
                    gone_keys[fam].append(key)
                else:
                    active[key] = rest
            elif (kind, value) not in seen_other:
                seen_other.add((kind, value))
                self._count_other(kind, value, -1)
        self._note_host_cidr(ref, host_cidr, host_ip, adding=False)
        p_added: dict[IPNetwork, InstructionRef] = {}
        p_removed: set[IPNetwork] = set()
        for fam in (0, 1):
            if gone_keys[fam]:
                self._shrink(fam, gone_keys[fam], p_added, p_removed)
        return Diff({}, frozenset(removed), relabelled, p_added, frozenset(p_removed))

    def _add_targets(
        self,
        ref: InstructionRef,
        targets: Iterable[Target],
        new_keys: list[list[int]],
        added: dict[str, InstructionRef],
        relabelled: dict[str, InstructionRef],
        named_ip: set[PrefixKey] | None = None,
    ) -> None:
        """Record ``ref`` on each target; collect new domains and newly active keys."""
        host_cidr: set[PrefixKey] = set()
        host_ip: set[PrefixKey] = named_ip or set()
        seen_other: set[tuple[str, str]] = set()
        for t in targets:
            kind, value = t.kind, t.value
            if kind == "domain":
                cur = self._domains.get(value)
                new = _with(cur, ref)
                if new is None:
                    continue
                self._domains[value] = new
                if cur is None:
                    added[value] = ref
                elif _label(new) != _label(cur):
                    relabelled[value] = ref
            elif kind == "ip" or kind == "cidr":
                fam, key = prefix_key(kind, value)
                host = key & _LOW == _BITS[fam]
                if host:
                    (host_ip if kind == "ip" else host_cidr).add((fam, key))
                active = self._active[fam]
                cur = active.get(key)
                new = _with(cur, ref)
                if new is None:
                    continue
                active[key] = new
                if cur is None and new_keys:
                    new_keys[fam].append(key)
            elif (kind, value) not in seen_other:
                seen_other.add((kind, value))
                self._count_other(kind, value, +1)
        self._note_host_cidr(ref, host_cidr, host_ip, adding=True)

    def _count_other(self, kind: str, value: str, delta: int) -> None:
        n = self._other.get((kind, value), 0) + delta
        if n > 0:
            self._other[(kind, value)] = n
        else:
            self._other.pop((kind, value), None)
        if (n == 1 and delta > 0) or (n == 0 and delta < 0):
            self._n_other[kind] = self._n_other.get(kind, 0) + delta

    def _note_host_cidr(
        self, ref: InstructionRef, cidr: set[PrefixKey], ip: set[PrefixKey], *, adding: bool
    ) -> None:
        for pk in cidr:
            for table, applies in ((self._host_cidr, True), (self._host_cidr_only, pk not in ip)):
                if not applies:
                    continue
                refs = table.setdefault(pk, set())
                if adding:
                    refs.add(ref)
                else:
                    refs.discard(ref)
                    if not refs:
                        del table[pk]

    def _grow(
        self,
        fam: int,
        keys: list[int],
        p_added: dict[IPNetwork, InstructionRef],
        p_removed: set[IPNetwork],
    ) -> None:
        """Newly active ``keys``: each new maximal one not inside an enforced prefix
        replaces the enforced prefixes inside it."""
        bits = _BITS[fam]
        keys.sort()
        self._n_host[fam] += sum(1 for k in keys if k & _LOW == bits)
        _insert_keys(self._sorted[fam], keys)
        enforced = self._enforced[fam]
        edits: list[tuple[int, int, list[int]]] = []
        last_end = -1
        for key in keys:
            start = key >> 8
            if start <= last_end:  # inside an earlier new key: decided with it
                continue
            end = last_end = start + (1 << (bits - (key & _LOW))) - 1
            i = bisect_right(enforced, start << 8 | _LOW) - 1
            if i >= 0 and _end(enforced[i], bits) >= end:
                continue
            lo = bisect_left(enforced, start << 8, max(i, 0))
            hi = bisect_right(enforced, end << 8 | _LOW, lo)
            if hi > lo:
                p_removed.update(key_network(fam, k) for k in enforced[lo:hi])
            p_added[key_network(fam, key)] = _label(self._active[fam][key])
            edits.append((lo, hi, [key]))
        _splice(enforced, edits)

    def _shrink(
        self,
        fam: int,
        keys: list[int],
        p_added: dict[IPNetwork, InstructionRef],
        p_removed: set[IPNetwork],
    ) -> None:
        """No longer active ``keys``: each enforced one gives way to the maximal
        active prefixes inside it."""
        bits = _BITS[fam]
        keys.sort()
        self._n_host[fam] -= sum(1 for k in keys if k & _LOW == bits)
        srt = self._sorted[fam]
        _delete_keys(srt, keys)
        enforced = self._enforced[fam]
        active = self._active[fam]
        edits: list[tuple[int, int, list[int]]] = []
        for key in keys:
            i = bisect_left(enforced, key)
            if i == len(enforced) or enforced[i] != key:
                continue  # was inside another enforced prefix, which stays
            p_removed.add(key_network(fam, key))
            end = _end(key, bits)
            exposed: list[int] = []
            j = bisect_left(srt, key)
            while j < len(srt) and srt[j] >> 8 <= end:
                inner = srt[j]
                exposed.append(inner)
                p_added[key_network(fam, inner)] = _label(active[inner])
                j = bisect_right(srt, _end(inner, bits) << 8 | _LOW, j)  # skip its insides
            edits.append((i, i + 1, exposed))
        _splice(enforced, edits)

    # -- queries ------------------------------------------------------------

    def snapshot(self) -> State:
        """Every enforced domain and maximal prefix, each with its smallest covering ref."""
        # A C-speed copy, then only the names with several refs fixed up: calling
        # _label() for each of 1M names cost a third of a second at start-up.
        domains: dict[str, Any] = dict(self._domains)
        for name in [d for d, r in domains.items() if r.__class__ is tuple]:
            domains[name] = domains[name][0]
        prefixes = {
            key_network(fam, k): _label(self._active[fam][k])
            for fam in (0, 1)
            for k in self._enforced[fam]
        }
        return State(domains, prefixes)

    def covering_domain(self, name: str) -> list[tuple[str, InstructionRef]]:
        """Restricted names covering ``name`` (itself, then its parents), each with
        every instruction naming it."""
        out: list[tuple[str, InstructionRef]] = []
        for suffix in parent_domains(name):
            refs = self._domains.get(suffix)
            if refs is not None:
                out.extend((suffix, r) for r in _iter(refs))
        return out

    def covering_ip(self, addr: str) -> list[tuple[IPNetwork, InstructionRef]]:
        """Every active prefix containing ``addr``, most specific first, with every
        instruction naming it."""
        fam, n = _parse_addr(addr)
        bits = _BITS[fam]
        active = self._active[fam]
        out: list[tuple[IPNetwork, InstructionRef]] = []
        for plen in range(bits, -1, -1):
            key = (n >> (bits - plen) << (bits - plen)) << 8 | plen
            refs = active.get(key)
            if refs is not None:
                out.extend((key_network(fam, key), r) for r in _iter(refs))
        return out

    def counts(self) -> dict[str, int]:
        """Distinct active targets by kind, and the enforced domain/prefix counts."""
        n_host = self._n_host[0] + self._n_host[1]
        n_keys = len(self._active[0]) + len(self._active[1])
        # a /32 named only as cidr (by every instruction naming it) is not an ip target
        cidr_only = sum(
            1
            for (fam, key), refs in self._host_cidr_only.items()
            if len(_iter(self._active[fam][key])) == len(refs)
        )
        return {
            "domain": len(self._domains),
            "ip": n_host - cidr_only,
            "cidr": n_keys - n_host + len(self._host_cidr),
            "url": self._n_other["url"],
            "app": self._n_other["app"],
            "enforced_domains": len(self._domains),
            "enforced_v4": len(self._enforced[0]),
            "enforced_v6": len(self._enforced[1]),
        }
