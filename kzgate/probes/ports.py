"""The prober's ports onto the daemon: the register (on its thread) and the sweep.

The selection (plan.py) runs on the register's thread in one call: the
candidates are read and each target's expectation looked up in the effective
state there, so a round never sees a state half-way through a diff. The sweep
is passed in, bound to the configured places by the wiring.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

from kzgate.config import ProbesConfig
from kzgate.model import InstructionRef
from kzgate.pipeline import Pipeline
from kzgate.probes.model import Check, ProbeTarget
from kzgate.probes.plan import lift_plan, round_plan, window_start

# sweep.sweep with the places, kernel probe, block answers and rate bound by the wiring
Sweep = Callable[[Sequence[ProbeTarget]], Awaitable[list[Check]]]


class PipelinePorts:
    """``ProberPorts`` over the daemon's pipeline (its register and thread)."""

    def __init__(self, pipeline: Pipeline, cfg: ProbesConfig, *, sweep: Sweep) -> None:
        self.pipeline = pipeline
        self.cfg = cfg
        self._sweep = sweep

    async def round_targets(self, round_no: int) -> list[ProbeTarget]:
        since, n = window_start(self.pipeline.clock()), self.cfg.sample
        return await self.pipeline.in_register(
            round_plan, self.pipeline.register, n, round_no, since
        )

    async def lift_targets(self, ref: InstructionRef) -> list[ProbeTarget]:
        return await self.pipeline.in_register(lift_plan, self.pipeline.register, ref)

    async def sweep(self, targets: Sequence[ProbeTarget]) -> list[Check]:
        return await self._sweep(targets)

    async def mark_verified(self, ref: InstructionRef, at: dt.datetime) -> bool:
        return await self.pipeline.in_register(self.pipeline.register.mark_verified, ref, at)
