"""The dry-run twin of an enforcer: it logs what it would change and keeps a copy of it."""

from __future__ import annotations

import logging

from kzgate.model import Diff, InstructionRef, State, diff_between
from kzgate.names import IPNetwork

log = logging.getLogger("kzgate.enforce.dryrun")


class DryRunEnforcer:
    """Applies nothing anywhere; remembers the state it would have made, and logs each diff."""

    name = "dryrun"

    def __init__(self) -> None:
        self.domains: dict[str, InstructionRef] = {}
        self.prefixes: dict[IPNetwork, InstructionRef] = {}
        self.applied = 0

    async def apply(self, diff: Diff) -> None:
        for name in diff.domains_removed:
            self.domains.pop(name, None)
        for net in diff.prefixes_removed:
            self.prefixes.pop(net, None)
        self.domains.update(diff.domains_added)
        self.domains.update(diff.domains_relabelled)
        self.prefixes.update(diff.prefixes_added)
        self.applied += 1
        log.info(
            "dry run: would add %d and remove %d domains, add %d and remove %d prefixes",
            len(diff.domains_added),
            len(diff.domains_removed),
            len(diff.prefixes_added),
            len(diff.prefixes_removed),
        )

    async def reconcile(self, state: State) -> Diff:
        fix = diff_between(State(self.domains, self.prefixes), state)
        await self.apply(fix)
        return fix
