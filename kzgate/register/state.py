"""The effective state: which domains and maximal IP prefixes are enforced, and by what.

Pure: values in, values out; no SQLite, no I/O. The register feeds it the
targets of each instruction that becomes active (``add``) or stops being
active (``remove``) and passes the returned ``Diff`` to every enforcer.

Here is the counting: which instructions ("refs") name each domain and each
prefix, and the counts by kind; which active prefixes are maximal, and so
enforced, is prefixes.py's.

Representation, chosen for 1M targets: a set of covering instructions is one
shared ``InstructionRef`` object, or a sorted tuple of two or more: no set per
target, and the label (the smallest ref) is ``refs`` itself or ``refs[0]``.
Per family, ``_active`` maps each active prefix key (prefixes.py) to its refs.

Prefix labels are those of the moment a prefix becomes enforced; ``Diff`` has
no "prefix relabelled" field, so a later change of a still-enforced prefix's
smallest ref is not reported (``snapshot`` always gives the current smallest).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kzgate.model import Diff, InstructionRef, State, Target
from kzgate.names import IPNetwork, parent_domains
from kzgate.register.prefixes import (
    BITS,
    LOW,
    MaximalPrefixes,
    PrefixKey,
    key_network,
    parse_addr,
    prefix_key,
)

Refs = InstructionRef | tuple[InstructionRef, ...]


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


class EffectiveState:
    """Active instructions' targets, and the enforced domains and maximal prefixes."""

    def __init__(self) -> None:
        self._domains: dict[str, Refs] = {}
        self._active: tuple[dict[int, Refs], dict[int, Refs]] = ({}, {})
        self._prefixes = MaximalPrefixes()
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
                fam, key = prefix_key(value)
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
                    fam, key = prefix_key(t.value)
                    if ref in _iter(st._active[fam].get(key, ())):
                        named_ip.add((fam, key))
            st._add_targets(ref, targets, [], {}, {}, named_ip)
        for fam in (0, 1):
            bits = BITS[fam]
            st._n_host[fam] = sum(1 for k in st._active[fam] if k & LOW == bits)
        st._prefixes = MaximalPrefixes.build((st._active[0], st._active[1]))
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
                fam, key = prefix_key(value)
                if key & LOW == BITS[fam]:
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
                fam, key = prefix_key(value)
                host = key & LOW == BITS[fam]
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
        """Newly active ``keys``: the prefixes that start or stop being enforced."""
        self._n_host[fam] += sum(1 for k in keys if k & LOW == BITS[fam])
        became, ceased = self._prefixes.grow(fam, keys)
        p_removed.update(key_network(fam, k) for k in ceased)
        active = self._active[fam]
        for k in became:
            p_added[key_network(fam, k)] = _label(active[k])

    def _shrink(
        self,
        fam: int,
        keys: list[int],
        p_added: dict[IPNetwork, InstructionRef],
        p_removed: set[IPNetwork],
    ) -> None:
        """No longer active ``keys``: the prefixes that start or stop being enforced."""
        self._n_host[fam] -= sum(1 for k in keys if k & LOW == BITS[fam])
        became, ceased = self._prefixes.shrink(fam, keys)
        p_removed.update(key_network(fam, k) for k in ceased)
        active = self._active[fam]
        for k in became:
            p_added[key_network(fam, k)] = _label(active[k])

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
            for k in self._prefixes.maximal(fam)
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
        fam, n = parse_addr(addr)
        bits = BITS[fam]
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
            "enforced_v4": len(self._prefixes.maximal(0)),
            "enforced_v6": len(self._prefixes.maximal(1)),
        }
