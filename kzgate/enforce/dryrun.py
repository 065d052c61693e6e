"""The dry-run twin of the nftables enforcer: it logs what it would change for IP
targets and keeps a copy of their prefixes. Domains are enforced for real by the
DNS index, so they are only counted, never copied (a second 1M-name dict).

It is the enforcer used when ``nftables.enabled`` is false, and the smallest
complete one: the walk-through in enforce/base.py follows it. It needs none of
the lifecycle hooks (nothing to open, serve or close).
"""

from __future__ import annotations

import logging

from kzgate.enforce.base import Enforcer
from kzgate.model import Diff, InstructionRef, State, diff_between
from kzgate.names import IPNetwork

log = logging.getLogger("kzgate.enforce.dryrun")


class DryRunEnforcer(Enforcer):
    """Applies nothing anywhere; remembers the prefixes it would have set, and logs each diff."""

    name = "dryrun"

    def __init__(self) -> None:
        self.prefixes: dict[IPNetwork, InstructionRef] = {}

    async def apply(self, diff: Diff) -> None:
        for net in diff.prefixes_removed:
            self.prefixes.pop(net, None)
        self.prefixes.update(diff.prefixes_added)
        log.info(
            "dry run: would add %d and remove %d domains, add %d and remove %d prefixes",
            len(diff.domains_added),
            len(diff.domains_removed),
            len(diff.prefixes_added),
            len(diff.prefixes_removed),
        )

    async def reconcile(self, state: State) -> Diff:
        fix = diff_between(State({}, self.prefixes), State({}, state.prefixes))
        await self.apply(fix)
        return fix

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: it only remembers prefixes, and any prefix can be remembered."""
        return Diff()
