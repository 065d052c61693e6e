"""The built-in resolver's policy index as an enforcer: dict updates, in process.

It carries the domains of a diff; prefixes are nftables' (DNS cannot block an
address), so it leaves them out, as the nftables enforcer leaves out domains.
"""

from __future__ import annotations

from kzgate.enforce.base import Enforcer
from kzgate.model import Diff, State, diff_between
from kzgate.policy import PolicyIndex


class DnsIndexEnforcer(Enforcer):
    """Keeps a PolicyIndex equal to the effective state's domains."""

    name = "dns"

    def __init__(self, index: PolicyIndex) -> None:
        self.index = index

    async def apply(self, diff: Diff) -> None:
        apply_to_index(self.index, diff)

    async def reconcile(self, state: State) -> Diff:
        fix = diff_between(State(self.index.domains(), {}), State(state.domains, {}))
        apply_to_index(self.index, fix)
        return fix

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: intake normalizes every domain to at most 253 characters (255 octets
        in wire form, which the NameTable holds); prefixes are not the DNS's to carry."""
        return Diff()


def apply_to_index(index: PolicyIndex, diff: Diff) -> None:
    for name in diff.domains_removed:
        index.remove_domain(name)
    for name, ref in diff.domains_added.items():
        index.set_domain(name, ref)
    for name, ref in diff.domains_relabelled.items():
        index.set_domain(name, ref)
