"""The daemon's prober (kzgate/probes/prober.py) with fake ports: no sockets, no sweep."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import pytest

from kzgate.config import ProbesConfig
from kzgate.metrics import Metrics
from kzgate.model import InstructionRef
from kzgate.probes.model import Check, Outcome, Place, ProbeTarget
from kzgate.probes.prober import Prober

T0 = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5)))
REF = InstructionRef("mci", "77-1", "2026-11-01")
UNBOUND = Place("resolver", "10.0.0.53:53")
BIND = Place("resolver", "10.0.0.54:53")
OWN = Place("kzgate", "127.0.0.1:5353")
NFT = Place("nft", "nft")


def name(value: str, expect: str = "blocked") -> ProbeTarget:
    return ProbeTarget("name", value, f"domain:{value}", REF, expect)  # type: ignore[arg-type]


class FakePorts:
    """A sweep scripted per place: ``outcome[place]`` (default pass)."""

    def __init__(self, places: Sequence[Place] = (OWN, UNBOUND, BIND)) -> None:
        self.places = list(places)
        self.outcome: dict[Place, Outcome] = {}
        self.targets = [name("a.kz"), name("b.kz")]
        self.lift = [name("c.kz", "open")]
        self.verified: list[tuple[InstructionRef, dt.datetime]] = []
        self.sweeps = 0
        self.raise_in_sweep = False
        self.rounds_asked: list[int] = []

    async def round_targets(self, round_no: int) -> list[ProbeTarget]:
        self.rounds_asked.append(round_no)
        return self.targets

    async def lift_targets(self, ref: InstructionRef) -> list[ProbeTarget]:
        return self.lift

    async def sweep(self, targets: Sequence[ProbeTarget]) -> list[Check]:
        self.sweeps += 1
        if self.raise_in_sweep:
            raise OSError("a probe edge broke")
        return [
            Check(t, p, "scripted", self.outcome.get(p, "pass"), T0)
            for t in targets
            for p in self.places
        ]

    async def mark_verified(self, ref: InstructionRef, at: dt.datetime) -> bool:
        self.verified.append((ref, at))
        return True


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def prober(ports: FakePorts, clock: Clock, **kw: float) -> Prober:
    return Prober(ProbesConfig(enabled=True, interval=60), ports, clock=clock, **kw)


def scrape(p: Prober) -> str:
    metrics = Metrics()
    metrics.register(*p.collectors())
    return metrics.exposition()[0].decode()


async def test_a_round_counts_checks_and_failures_per_place() -> None:
    ports, clock = FakePorts(), Clock()
    p = prober(ports, clock)
    ports.outcome = {UNBOUND: "fail", BIND: "unreachable"}
    result = await p.round()
    assert result is not None
    assert result.checks == 6
    assert result.failures == {"10.0.0.53:53": 2, "10.0.0.54:53": 0, "127.0.0.1:5353": 0}
    assert result.unreachable["10.0.0.54:53"] == 2
    assert {c.place for c in result.failed} == {UNBOUND}
    text = scrape(p)
    assert 'kzgate_probe_checks_total{kind="resolver",outcome="fail"} 2.0' in text
    assert 'kzgate_probe_checks_total{kind="resolver",outcome="unreachable"} 2.0' in text
    assert 'kzgate_probe_checks_total{kind="kzgate",outcome="pass"} 2.0' in text
    assert 'kzgate_probe_round_failures{place="10.0.0.53:53"} 2.0' in text
    assert 'kzgate_probe_round_failures{place="10.0.0.54:53"} 0.0' in text
    assert 'kzgate_probe_block_failures_total{kind="resolver"} 2.0' in text
    status = p.status()
    assert status["last_round"]["failures"]["10.0.0.53:53"] == 2
    assert status["last_round"]["failed"][0]["expect"] == "blocked"


async def test_the_next_round_replaces_the_failures_and_rotates() -> None:
    ports, clock = FakePorts(), Clock()
    p = prober(ports, clock)
    ports.outcome = {UNBOUND: "fail"}
    await p.round()
    ports.outcome = {}
    await p.round()
    assert 'kzgate_probe_round_failures{place="10.0.0.53:53"} 0.0' in scrape(p)
    assert ports.rounds_asked == [0, 1]


async def test_an_open_target_that_fails_is_not_a_block_failure() -> None:
    ports, clock = FakePorts(), Clock()
    ports.targets = [name("resumed.kz", "open")]
    ports.outcome = {UNBOUND: "fail"}
    p = prober(ports, clock)
    await p.round()
    assert 'kzgate_probe_block_failures_total{kind="resolver"} 0.0' in scrape(p)


async def test_a_fault_in_a_round_is_caught_counted_and_the_next_round_runs() -> None:
    ports, clock = FakePorts(), Clock()
    p = prober(ports, clock)
    ports.raise_in_sweep = True
    assert await p.round() is None
    ports.raise_in_sweep = False
    assert await p.round() is not None
    assert "kzgate_probe_faults_total 1.0" in scrape(p)


async def test_a_lift_is_verified_when_every_place_passes() -> None:
    ports, clock = FakePorts(), Clock()
    p = prober(ports, clock, retry_every=0.001)
    clock.now = T0 + dt.timedelta(seconds=2)
    assert await p.verify_lift(REF, T0) is True
    assert ports.verified == [(REF, clock.now)]
    text = scrape(p)
    assert "kzgate_probe_lift_verify_seconds_count 1.0" in text
    assert "kzgate_probe_lift_verify_seconds_sum 2.0" in text
    assert p.pending == {}


@pytest.mark.parametrize("outcome", ["fail", "unreachable"])
async def test_a_lift_is_not_verified_while_one_place_does_not_pass(outcome: Outcome) -> None:
    ports, clock = FakePorts(), Clock()
    ports.outcome = {BIND: outcome}
    ticks = iter(range(10_000))
    p = prober(ports, clock, retry_every=0.001, give_up_after=0.005)
    p.monotonic = lambda: next(ticks) / 1000  # each look at the clock: one retry on
    assert await p.verify_lift(REF, T0) is False
    assert ports.verified == []
    assert ports.sweeps >= 2  # retried
    text = scrape(p)
    assert "kzgate_probe_lifts_unverified_total 1.0" in text
    assert "kzgate_probe_lift_verify_seconds_count 0.0" in text


async def test_a_lift_verified_on_a_retry_once_the_place_catches_up() -> None:
    ports, clock = FakePorts(), Clock()
    ports.outcome = {BIND: "fail"}
    p = prober(ports, clock, retry_every=0.001)
    p.lift_applied(REF, T0)
    assert REF in p.pending
    clock.now = T0 + dt.timedelta(seconds=30)
    assert "kzgate_probe_lift_pending_seconds 30.0" in scrape(p)
    await asyncio.sleep(0.01)
    assert ports.verified == []
    ports.outcome = {}
    for _ in range(100):
        if ports.verified:
            break
        await asyncio.sleep(0.005)
    assert [ref for ref, _ in ports.verified] == [REF]
    assert p.pending == {}
    assert "kzgate_probe_lift_pending_seconds 0.0" in scrape(p)
    await p.close()


async def test_a_lift_with_nothing_to_probe_is_never_verified() -> None:
    ports, clock = FakePorts(), Clock()
    ports.lift = []
    ticks = iter(range(10_000))
    p = prober(ports, clock, retry_every=0.001, give_up_after=0.003)
    p.monotonic = lambda: next(ticks) / 1000
    assert await p.verify_lift(REF, T0) is False
    assert ports.verified == []


async def test_rounds_run_on_start_and_stop_on_close() -> None:
    ports, clock = FakePorts(), Clock()
    p = prober(ports, clock)
    await p.start()
    for _ in range(100):
        if p.last is not None:
            break
        await asyncio.sleep(0.005)
    await p.close()
    assert p.rounds == 1 and p.last is not None
