"""Sequential diffs folded into one, pure: what a page of tasks changes, applied once.

A feed's catch-up records a page of tasks in one transaction; each task's
diff is computed by the effective state as usual, and the enforcers get
``compose`` of them: one apply (one RPZ serial, one nft batch) per page.

Each diff is read as its enforcers apply it: removals, then additions, then
relabels. Per key, the first diff that touches it says whether it was enforced
before (added: no; removed or relabelled: yes), the last one whether it is
after, and the net diff follows: added (with the latest ref), removed,
relabelled with the latest ref (a domain enforced before and after: some step
re-added or relabelled it, so its label may have changed), or nothing (added
then removed). ``Diff`` has no prefix relabel, so a prefix enforced before and
after keeps the label it has: the label an enforcer holds for a prefix is the
one of the moment it became enforced, as for diffs applied one by one, except
when a page removed and re-added it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from kzgate.model import Diff, InstructionRef
from kzgate.names import IPNetwork

K = TypeVar("K", bound=Hashable)


def compose(diffs: Sequence[Diff]) -> Diff:
    """The one diff that changes a state as ``diffs`` applied in order do."""
    steps = [d for d in diffs if not d.is_empty()]
    if len(steps) <= 1:
        return steps[0] if steps else Diff()
    d_before: dict[str, bool] = {}
    d_after: dict[str, InstructionRef | None] = {}
    p_before: dict[IPNetwork, bool] = {}
    p_after: dict[IPNetwork, InstructionRef | None] = {}
    for diff in steps:
        _fold(
            d_before, d_after, diff.domains_removed, diff.domains_added, diff.domains_relabelled
        )
        _fold(p_before, p_after, diff.prefixes_removed, diff.prefixes_added, {})
    domains_added, domains_removed, domains_kept = _net(d_before, d_after)
    prefixes_added, prefixes_removed, _ = _net(p_before, p_after)
    return Diff(
        domains_added=domains_added,
        domains_removed=domains_removed,
        domains_relabelled=domains_kept,
        prefixes_added=prefixes_added,
        prefixes_removed=prefixes_removed,
    )


def _fold(
    before: dict[K, bool],
    after: dict[K, InstructionRef | None],
    removed: Iterable[K],
    added: Mapping[K, InstructionRef],
    relabelled: Mapping[K, InstructionRef],
) -> None:
    """One step: ``before`` learns each key's state before the first step touching it."""
    for key in removed:
        before.setdefault(key, True)
        after[key] = None
    for key, ref in added.items():
        before.setdefault(key, False)
        after[key] = ref
    for key, ref in relabelled.items():
        before.setdefault(key, True)
        after[key] = ref


def _net(
    before: dict[K, bool], after: dict[K, InstructionRef | None]
) -> tuple[dict[K, InstructionRef], frozenset[K], dict[K, InstructionRef]]:
    """(added, removed, enforced before and after with their latest ref)."""
    added: dict[K, InstructionRef] = {}
    removed: list[K] = []
    kept: dict[K, InstructionRef] = {}
    for key, ref in after.items():
        if before[key]:
            if ref is None:
                removed.append(key)
            else:
                kept[key] = ref
        elif ref is not None:
            added[key] = ref
    return added, frozenset(removed), kept
