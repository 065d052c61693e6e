"""The built-in resolver's policy index as an enforcer: dict updates, in process."""

from __future__ import annotations

from kzgate.enforce.base import Enforcer
from kzgate.model import Diff, State, diff_between
from kzgate.policy import PolicyIndex


class DnsIndexEnforcer(Enforcer):
    """Keeps a PolicyIndex equal to the effective state."""

    name = "dns"

    def __init__(self, index: PolicyIndex) -> None:
        self.index = index

    async def apply(self, diff: Diff) -> None:
        apply_to_index(self.index, diff)

    async def reconcile(self, state: State) -> Diff:
        current = State(domains=self.index.domains(), prefixes=self.index.prefixes())
        fix = diff_between(current, state)
        apply_to_index(self.index, fix)
        return fix

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: intake normalizes every domain to at most 253 characters (255 octets
        in wire form, which the NameTable holds) and every prefix to a valid network."""
        return Diff()


def apply_to_index(index: PolicyIndex, diff: Diff) -> None:
    # Removals first: a prefix replaced by its parent must not linger beside it.
    for name in diff.domains_removed:
        index.remove_domain(name)
    for net in diff.prefixes_removed:
        index.remove_prefix(net)
    for name, ref in diff.domains_added.items():
        index.set_domain(name, ref)
    for name, ref in diff.domains_relabelled.items():
        index.set_domain(name, ref)
    for net, ref in diff.prefixes_added.items():
        index.set_prefix(net, ref)
