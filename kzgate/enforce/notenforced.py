"""What each enforcer cannot carry, for receipts, the metric and the status (pure).

An enforcer names what it cannot represent (``Enforcer.uncarried``) and leaves
it out; everything else is enforced as usual. ``for_targets`` turns that into
the receipt's ``not_enforced`` for one task; ``NotEnforced`` keeps, per
enforcer, the set of active targets it leaves out, in step with every diff
the pipeline applies, so a scrape reads a count and never walks the state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kzgate.enforce.base import Enforcer
from kzgate.model import Diff, InstructionRef, State, Target
from kzgate.names import IPNetwork, network_of


def for_targets(
    enforcers: Sequence[Enforcer], ref: InstructionRef, targets: Iterable[Target]
) -> dict[str, list[str]]:
    """Per enforcer that cannot carry some of ``targets``, their values in the task's order.

    Each target is judged by itself (an address inside a wider prefix of another
    instruction is judged as its own prefix).
    """
    items = list(targets)
    domains = {t.value: ref for t in items if t.kind == "domain"}
    prefixes = {network_of(t.kind, t.value): ref for t in items if t.kind in ("ip", "cidr")}
    asked = Diff(domains_added=domains, prefixes_added=prefixes)
    out: dict[str, list[str]] = {}
    for enforcer in enforcers:
        left = enforcer.uncarried(asked)
        if not (left.domains_added or left.prefixes_added):
            continue
        out[enforcer.name] = [
            t.value
            for t in items
            if (t.kind == "domain" and t.value in left.domains_added)
            or (t.kind in ("ip", "cidr") and network_of(t.kind, t.value) in left.prefixes_added)
        ]
    return out


class NotEnforced:
    """Per enforcer, the targets of the effective state it leaves out."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = list(names)
        self._domains: dict[str, set[str]] = {name: set() for name in names}
        self._prefixes: dict[str, set[IPNetwork]] = {name: set() for name in names}

    def reset(self, enforcer: Enforcer, state: State) -> None:
        """Recompute ``enforcer``'s set from the whole ``state``."""
        left = enforcer.uncarried(Diff(domains_added=state.domains, prefixes_added=state.prefixes))
        self._domains[enforcer.name] = set(left.domains_added)
        self._prefixes[enforcer.name] = set(left.prefixes_added)

    def update(self, enforcer: Enforcer, diff: Diff) -> list[str]:
        """Follow one applied diff; the values it newly leaves out."""
        domains = self._domains.setdefault(enforcer.name, set())
        prefixes = self._prefixes.setdefault(enforcer.name, set())
        domains.difference_update(diff.domains_removed)
        prefixes.difference_update(diff.prefixes_removed)
        if not (diff.domains_added or diff.prefixes_added):
            return []
        left = enforcer.uncarried(diff)
        new = [d for d in left.domains_added if d not in domains]
        new += [str(p) for p in left.prefixes_added if p not in prefixes]
        domains.update(left.domains_added)
        prefixes.update(left.prefixes_added)
        return new

    def counts(self) -> dict[str, int]:
        """Per enforcer (every one, 0 when it carries everything), the targets left out."""
        return {
            name: len(self._domains[name]) + len(self._prefixes[name]) for name in self._domains
        }

    def values(self, name: str, limit: int | None = None) -> list[str]:
        """The first ``limit`` values ``name`` leaves out, domains then prefixes, sorted."""
        domains = sorted(self._domains.get(name, ()))
        prefixes = [str(p) for p in sorted(self._prefixes.get(name, ()), key=_net_key)]
        return (domains + prefixes)[:limit]


def _net_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)
