"""What a sweep checks, read from the register: one round's sample, one lift, everything.

Shared by the daemon's rounds (ports.py, on the register's thread) and
``kzgate verify``. Each target's expectation is looked up in the register's
effective state (``sample`` says why it is not the instruction's status).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Protocol

from kzgate.model import Candidate, InstructionRef
from kzgate.probes.model import ProbeTarget
from kzgate.probes.sample import choose, monitoring_start, targets_of
from kzgate.register.state import EffectiveState

Blocked = Callable[[str], bool]


class PlanReads(Protocol):
    """The register reads a plan needs (kzgate/register/reads.py) and its state."""

    state: EffectiveState

    def probe_candidates(
        self, *, resumed_since: dt.datetime, restricted: int, offset: int
    ) -> list[Candidate]: ...
    def instruction_candidates(self, ref: InstructionRef) -> list[Candidate]: ...
    def all_candidates(self) -> Iterator[Candidate]: ...


def window_start(now: dt.datetime) -> dt.datetime:
    """The start of the monitoring window (Order 366: 15 working days up to ``now``),
    midnight in ``now``'s zone."""
    return dt.datetime.combine(monitoring_start(now.date()), dt.time(), tzinfo=now.tzinfo)


def _expectations(state: EffectiveState) -> tuple[Blocked, Blocked]:
    def blocked_name(name: str) -> bool:
        return bool(state.covering_domain(name))

    def blocked_address(address: str) -> bool:
        return bool(state.covering_ip(address))

    return blocked_name, blocked_address


def round_plan(reads: PlanReads, n: int, round_no: int, since: dt.datetime) -> list[ProbeTarget]:
    """Round ``round_no``'s targets: ``n`` restricted ones (the register rotates them by
    the offset, wrapping round) and every target resumed since ``since``."""
    candidates = reads.probe_candidates(resumed_since=since, restricted=n, offset=round_no * n)
    return choose(candidates, n, round_no, *_expectations(reads.state), since)


def lift_plan(reads: PlanReads, ref: InstructionRef) -> list[ProbeTarget]:
    """Every target of one instruction (none for an unknown one)."""
    return list(targets_of(reads.instruction_candidates(ref), *_expectations(reads.state)))


def everything(reads: PlanReads) -> Iterator[ProbeTarget]:
    """Every target in the register, streamed."""
    return targets_of(reads.all_candidates(), *_expectations(reads.state))
