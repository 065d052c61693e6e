"""The daemon's probes: a round every ``probes.interval``, and the check of each lift.

A *round* asks the ports for one sample of targets and sweeps them at every
place; its checks are counted and its failures per place kept for the gauge
and ``kzgate status``. After every applied resume (the pipeline's hook,
``lift_applied``) the instruction's targets are swept at every place again
every ``retry_every`` seconds until every check passes, then the register
records ``verified_at`` and the time from the receipt is observed; after
``give_up_after`` seconds the lift is counted unverified and left (the alert
fires on the pending age long before that).

A place that is *unreachable* (timeout, SERVFAIL, a malformed reply) does not
verify a lift: "lifted everywhere" is shown only by every place answering as
it should. So a resolver that is down holds every lift unverified: the alert
says so, which is what an operator must hear.

Nothing here may take intake or an enforcer down: every fault is caught,
logged and counted (``kzgate_probe_faults_total``), and the next round or
retry runs as usual. The I/O is behind ``ProberPorts`` (ports.py), so the
logic is tested with fakes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kzgate.config import ProbesConfig
from kzgate.metrics import (
    PROBE_BLOCK_FAILURES,
    PROBE_CHECKS,
    PROBE_FAULTS,
    PROBE_LIFT_PENDING_SECONDS,
    PROBE_LIFT_VERIFY_SECONDS,
    PROBE_LIFTS_UNVERIFIED,
    PROBE_ROUND_FAILURES,
    Collector,
    Counts,
    Metric,
    Timings,
)
from kzgate.model import InstructionRef
from kzgate.probes.model import OUTCOMES, PLACE_KINDS, Check, ProbeTarget

log = logging.getLogger("kzgate.probes")

RETRY_EVERY = 1.0  # seconds between the checks of a lift not yet seen everywhere
GIVE_UP_AFTER = 300.0  # seconds from the receipt after which a lift is counted unverified
STATUS_FAILURES = 20  # failed checks of the last round listed by GET /status


class ProberPorts(Protocol):
    """What the prober needs from the daemon (ports.py wires the real ones)."""

    async def round_targets(self, round_no: int) -> list[ProbeTarget]: ...
    async def lift_targets(self, ref: InstructionRef) -> list[ProbeTarget]: ...
    async def sweep(self, targets: Sequence[ProbeTarget]) -> list[Check]: ...
    async def mark_verified(self, ref: InstructionRef, at: dt.datetime) -> bool: ...


@dataclass
class RoundResult:
    at: dt.datetime
    checks: int
    outcomes: dict[str, int]
    failures: dict[str, int]  # per Place.name: checks that failed (unreachable not counted)
    unreachable: dict[str, int]
    failed: list[Check]


def local_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).astimezone()


class Prober:
    """Probe rounds and lift checks; lifecycle like an enforcer's: start, close,
    collectors, status."""

    name = "probes"

    def __init__(
        self,
        cfg: ProbesConfig,
        ports: ProberPorts,
        *,
        clock: Callable[[], dt.datetime] = local_now,
        monotonic: Callable[[], float] = time.monotonic,
        retry_every: float = RETRY_EVERY,
        give_up_after: float = GIVE_UP_AFTER,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_close = on_close
        self.ports = ports
        self.clock = clock
        self.monotonic = monotonic
        self.retry_every = retry_every
        self.give_up_after = give_up_after
        self.checks = Counts(PROBE_CHECKS, [(k, o) for k in PLACE_KINDS for o in OUTCOMES])
        self.block_failures = Counts(PROBE_BLOCK_FAILURES, [(k,) for k in PLACE_KINDS])
        self.faults = Counts(PROBE_FAULTS, [()])
        self.unverified = Counts(PROBE_LIFTS_UNVERIFIED, [()])
        self.verify_seconds = Timings(PROBE_LIFT_VERIFY_SECONDS)
        self.last: RoundResult | None = None
        self.rounds = 0
        self.pending: dict[InstructionRef, dt.datetime] = {}  # lift -> its receipt time
        self.verified: list[tuple[InstructionRef, float]] = []  # the last few, for status
        self._rounds: asyncio.Task[None] | None = None
        self._lifts: set[asyncio.Task[bool]] = set()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._rounds = asyncio.create_task(self._run_rounds(), name="probe-rounds")

    async def close(self) -> None:
        tasks = [t for t in (self._rounds, *self._lifts) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._rounds = None
        self._lifts.clear()
        if self._on_close is not None:
            self._on_close()  # the kernel probe's sockets

    # -- rounds --------------------------------------------------------------------

    async def _run_rounds(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.cfg.interval)

    async def round(self) -> RoundResult | None:
        """One round: sample, sweep, count. None when it could not run (a fault)."""
        round_no, self.rounds = self.rounds, self.rounds + 1
        try:
            targets = await self.ports.round_targets(round_no)
            checks = await self.ports.sweep(targets)
        except Exception:
            self._fault("probe round %d failed", round_no)
            return None
        self._count(checks)
        failures: Counter[str] = Counter()
        unreachable: Counter[str] = Counter()
        for check in checks:
            failures[check.place.name] += check.outcome == "fail"
            unreachable[check.place.name] += check.outcome == "unreachable"
        failed = [c for c in checks if c.outcome == "fail"]
        self.last = RoundResult(
            at=self.clock(),
            checks=len(checks),
            outcomes=dict(Counter(c.outcome for c in checks)),
            failures=dict(sorted(failures.items())),
            unreachable=dict(sorted(unreachable.items())),
            failed=failed,
        )
        for check in failed:
            log.warning(
                "probe failed: %s at %s expected %s, observed %s (%s)",
                check.target.value,
                check.place.name,
                check.target.expect,
                check.observed,
                check.target.instruction.label(),
            )
        return self.last

    def _count(self, checks: Sequence[Check]) -> None:
        for check in checks:
            self.checks.inc(check.place.kind, check.outcome)
            if check.outcome == "fail" and check.target.expect == "blocked":
                self.block_failures.inc(check.place.kind)

    def _fault(self, message: str, *args: object) -> None:
        self.faults.inc()
        log.exception(message, *args)

    # -- lifts ---------------------------------------------------------------------

    def lift_applied(self, ref: InstructionRef, applied_at: dt.datetime) -> None:
        """The pipeline's hook: a resume of ``ref`` was applied at ``applied_at`` (its
        receipt's time). Starts checking it lifted; returns at once."""
        if ref in self.pending:
            return
        self.pending[ref] = applied_at
        task = asyncio.create_task(self.verify_lift(ref, applied_at), name="probe-lift")
        self._lifts.add(task)
        task.add_done_callback(self._lifts.discard)

    async def verify_lift(self, ref: InstructionRef, applied_at: dt.datetime) -> bool:
        """Check ``ref``'s targets at every place until all pass (then record it) or
        ``give_up_after`` seconds from ``applied_at`` have passed."""
        self.pending[ref] = applied_at
        waited = (self.clock() - applied_at).total_seconds()
        deadline = self.monotonic() + max(0.0, self.give_up_after - waited)
        try:
            while True:
                verified, checks = await self._lift_checked(ref)
                last = self.monotonic() + self.retry_every > deadline
                if verified or last:
                    # Counted once: the checks that verified the lift, or the last ones
                    # before giving up. The retries in between are a resolver catching
                    # up with the zone, not failures to report.
                    self._count(checks)
                if verified:
                    return True
                if last:
                    self.unverified.inc()
                    log.warning(
                        "lift not verified within %.0f s: %s", self.give_up_after, ref.label()
                    )
                    return False
                await asyncio.sleep(self.retry_every)
        finally:
            self.pending.pop(ref, None)

    async def _lift_checked(self, ref: InstructionRef) -> tuple[bool, Sequence[Check]]:
        """One pass over the lift's targets: (recorded verified, the checks made)."""
        checks: Sequence[Check] = ()
        try:
            targets = await self.ports.lift_targets(ref)
            if not targets:
                return False, ()  # nothing it names can be probed (url, app): never "verified"
            checks = await self.ports.sweep(targets)
            if not checks or any(c.outcome != "pass" for c in checks):
                return False, checks
            at = self.clock()
            await self.ports.mark_verified(ref, at)
        except Exception:
            self._fault("checking the lift of %s failed", ref.label())
            return False, checks
        seconds = (at - self.pending.get(ref, at)).total_seconds()
        self.verify_seconds.observe(max(0.0, seconds))
        self.verified = [*self.verified[-9:], (ref, seconds)]
        log.info("lift verified at every place: %s after %.2f s", ref.label(), seconds)
        return True, checks

    # -- what it shows ----------------------------------------------------------------

    def pending_age(self) -> float:
        if not self.pending:
            return 0.0
        return max(0.0, (self.clock() - min(self.pending.values())).total_seconds())

    def collectors(self) -> list[Collector]:
        return [
            self.checks,
            self.block_failures,
            self.faults,
            self.unverified,
            self.verify_seconds,
            _Gauges(self),
        ]

    def status(self) -> dict[str, Any]:
        """For GET /status ("probes") and `kzgate status`."""
        last = self.last
        return {
            "enabled": True,
            "interval": self.cfg.interval,
            "rounds": self.rounds,
            "last_round": None
            if last is None
            else {
                "at": last.at.isoformat(),
                "checks": last.checks,
                "outcomes": last.outcomes,
                "failures": last.failures,
                "unreachable": last.unreachable,
                "failed": [_check_text(c) for c in last.failed[:STATUS_FAILURES]],
            },
            "pending_lifts": [
                {"instruction": ref.label(), "applied_at": at.isoformat()}
                for ref, at in sorted(self.pending.items(), key=lambda item: item[1])
            ],
            "recent_verified": [
                {"instruction": ref.label(), "seconds": round(s, 3)} for ref, s in self.verified
            ],
            "faults": self.faults.value(),
        }


def _check_text(check: Check) -> dict[str, str]:
    return {
        "target": check.target.value,
        "source": check.target.source,
        "place": check.place.name,
        "expect": check.target.expect,
        "observed": check.observed,
        "instruction": check.target.instruction.label(),
    }


class _Gauges(Collector):
    """The last round's failures per place, and the pending lifts' age, at scrape time."""

    def __init__(self, prober: Prober) -> None:
        self._prober = prober

    def collect(self) -> Iterator[Metric]:
        last = self._prober.last
        failures = {} if last is None else last.failures
        yield PROBE_ROUND_FAILURES.metric({(place,): n for place, n in failures.items()})
        yield PROBE_LIFT_PENDING_SECONDS.metric({(): self._prober.pending_age()})
