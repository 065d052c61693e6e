"""The prober's ports onto the daemon: the register (on its thread) and the sweep.

The selection runs on the register's thread in one call: the candidates are
read and each target's expectation looked up in the effective state there, so
a round never sees a state half-way through a diff. The pure selection
(``sample.choose``, ``sample.targets_of``, ``sample.monitoring_start``) and the
sweep are passed in, so tests and the wiring choose them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from kzgate.config import ProbesConfig
from kzgate.model import Candidate, InstructionRef
from kzgate.pipeline import Pipeline
from kzgate.probes.model import Check, ProbeTarget

Blocked = Callable[[str], bool]
Choose = Callable[[Sequence[Candidate], int, int, Blocked, Blocked, dt.datetime], list[ProbeTarget]]
TargetsOf = Callable[[Iterable[Candidate], Blocked, Blocked], Iterator[ProbeTarget]]
MonitoringStart = Callable[[dt.date], dt.date]
# sweep.sweep with the places, kernel probe, block answers and rate bound by the wiring
Sweep = Callable[[Sequence[ProbeTarget]], Awaitable[list[Check]]]


class PipelinePorts:
    """``ProberPorts`` over the daemon's pipeline (its register and thread)."""

    def __init__(
        self,
        pipeline: Pipeline,
        cfg: ProbesConfig,
        *,
        choose: Choose,
        targets_of: TargetsOf,
        monitoring_start: MonitoringStart,
        sweep: Sweep,
    ) -> None:
        self.pipeline = pipeline
        self.cfg = cfg
        self._choose = choose
        self._targets_of = targets_of
        self._monitoring_start = monitoring_start
        self._sweep = sweep

    def _since(self) -> dt.datetime:
        """The start of the monitoring window (Order 366: 15 working days), local midnight."""
        now = self.pipeline.clock()
        first = self._monitoring_start(now.date())
        return dt.datetime.combine(first, dt.time(), tzinfo=now.tzinfo)

    def _blocked_name(self, name: str) -> bool:
        return bool(self.pipeline.register.state.covering_domain(name))

    def _blocked_address(self, address: str) -> bool:
        return bool(self.pipeline.register.state.covering_ip(address))

    async def round_targets(self, round_no: int) -> list[ProbeTarget]:
        since, n = self._since(), self.cfg.sample

        def plan() -> list[ProbeTarget]:
            candidates = self.pipeline.register.probe_candidates(
                resumed_since=since, restricted=n, offset=round_no * n
            )
            return self._choose(
                candidates, n, round_no, self._blocked_name, self._blocked_address, since
            )

        return await self.pipeline.in_register(plan)

    async def lift_targets(self, ref: InstructionRef) -> list[ProbeTarget]:
        def plan() -> list[ProbeTarget]:
            candidates = self.pipeline.register.instruction_candidates(ref)
            return list(self._targets_of(candidates, self._blocked_name, self._blocked_address))

        return await self.pipeline.in_register(plan)

    async def sweep(self, targets: Sequence[ProbeTarget]) -> list[Check]:
        return await self._sweep(targets)

    async def mark_verified(self, ref: InstructionRef, at: dt.datetime) -> bool:
        return await self.pipeline.in_register(self.pipeline.register.mark_verified, ref, at)
