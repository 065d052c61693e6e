"""The enforcer set with in-process fakes: lifecycle order, diffs, repairs, what it reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from kzgate.config import load_config
from kzgate.enforce.base import StartError
from kzgate.enforce.set import EnforcerSet
from kzgate.model import Diff, InstructionRef, State
from tests.support.enforcer_fakes import Recording

REF = InstructionRef("mci", "1", "2026-11-01")


class Register:
    """The register's effective state, as the set reads it; ``promoted`` counts in_step calls."""

    def __init__(self) -> None:
        self.state = State({}, {})
        self.promoted = 0

    async def read(self) -> State:
        return self.state

    async def in_step(self) -> None:
        self.promoted += 1

    def commit(self, *domains: str) -> Diff:
        """Add ``domains`` to the state; the diff the register would hand to the enforcers."""
        added = {d: REF for d in domains}
        self.state = State({**self.state.domains, **added}, self.state.prefixes)
        return Diff(domains_added=added)


def sample(enforcers: EnforcerSet, name: str, enforcer: str) -> float | None:
    registry = CollectorRegistry()
    for collector in enforcers.collectors():
        registry.register(collector)
    return registry.get_sample_value(name, {"enforcer": enforcer})


async def started(*fakes: Recording, timeout: float = 30.0) -> tuple[EnforcerSet, Register]:
    register = Register()
    enforcers = EnforcerSet(fakes, apply_timeout=timeout)
    await enforcers.start(register.read, register.in_step)
    return enforcers, register


async def apply(enforcers: EnforcerSet, diff: Diff) -> bool:
    async with enforcers.lock:  # as the pipeline holds it, from the commit to the apply
        return await enforcers.apply(diff)


async def test_start_reconcile_serve_and_close_run_in_order() -> None:
    log: list[str] = []
    register = Register()
    register.commit("kept.kz")
    first, second = Recording("a", log), Recording("b", log)
    enforcers = EnforcerSet([first, second])
    await enforcers.start(register.read, register.in_step)
    # Both hold the register's state before anything serves (nothing serves an empty policy).
    assert first.domains() == second.domains() == {"kept.kz"}
    await enforcers.serve()
    await enforcers.close()
    assert log == [
        "start a",
        "start b",
        "reconcile a",
        "reconcile b",
        "serve a",
        "serve b",
        "close b",
        "close a",
    ]


async def test_a_start_that_fails_leaves_the_rest_unstarted_and_closes_the_started() -> None:
    log: list[str] = []
    fakes = Recording("a", log), Recording("b", log), Recording("c", log)
    fakes[1].fail_start = True
    register = Register()
    enforcers = EnforcerSet(fakes)
    with pytest.raises(StartError, match="b: cannot start"):
        await enforcers.start(register.read, register.in_step)
    await enforcers.close()
    assert log == ["start a", "start b", "close b", "close a"]


def test_two_enforcers_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="share a name"):
        EnforcerSet([Recording("a"), Recording("a")])


async def test_every_diff_reaches_every_enforcer_in_order() -> None:
    log: list[str] = []
    enforcers, register = await started(Recording("a", log), Recording("b", log))
    log.clear()
    try:
        assert await apply(enforcers, register.commit("one.kz"))
        assert await apply(enforcers, Diff())  # nothing to do: in step, nobody asked
        assert log == ["apply a", "apply b"]
        assert enforcers.health() == {"a": "ok", "b": "ok"}
    finally:
        await enforcers.close()


async def test_a_failed_apply_is_repaired_at_once_and_counted() -> None:
    flaky = Recording("flaky")
    enforcers, register = await started(flaky)
    try:
        flaky.fail_applies = 1
        assert await apply(enforcers, register.commit("one.kz"))  # the reconcile caught up
        assert flaky.domains() == {"one.kz"} and enforcers.in_step
        assert sample(enforcers, "kzgate_enforcer_errors_total", "flaky") == 1
        assert sample(enforcers, "kzgate_enforcer_drift_repairs_total", "flaky") == 1
    finally:
        await enforcers.close()


async def test_a_broken_enforcer_is_skipped_until_a_repair_then_tasks_are_promoted() -> None:
    log: list[str] = []
    broken, fine = Recording("broken", log), Recording("fine", log)
    enforcers, register = await started(broken, fine)
    try:
        broken.fail_applies, broken.fail_reconciles = 1, 2
        assert not await apply(enforcers, register.commit("one.kz"))
        assert enforcers.health() == {"broken": "repairing", "fine": "ok"}
        log.clear()
        assert not await apply(enforcers, register.commit("two.kz"))
        # The dirty one is not asked to apply: its next reconcile includes the diff.
        assert log == ["apply fine", "reconcile broken"]
        assert register.promoted == 0
        await enforcers.repair()
        assert enforcers.in_step and broken.domains() == {"one.kz", "two.kz"}
        assert register.promoted == 1  # the pipeline re-signs what was answered `accepted`
        assert sample(enforcers, "kzgate_enforcer_errors_total", "broken") == 3
        assert sample(enforcers, "kzgate_enforcer_errors_total", "fine") == 0
    finally:
        await enforcers.close()


async def test_a_hanging_apply_is_cut_off_and_reconciled() -> None:
    hanging = Recording("hanging")
    enforcers, register = await started(hanging, timeout=0.05)
    try:
        hanging.hang = True
        # Cut off after apply_timeout; the reconcile that follows (which does not hang) fixes it.
        assert await asyncio.wait_for(apply(enforcers, register.commit("one.kz")), 5)
        assert hanging.domains() == {"one.kz"} and enforcers.in_step
        assert sample(enforcers, "kzgate_enforcer_errors_total", "hanging") == 1
    finally:
        await enforcers.close()


async def test_drift_reported_by_an_enforcer_is_repaired_by_the_loop() -> None:
    drifting = Recording("nft")
    enforcers, register = await started(drifting)
    try:
        await apply(enforcers, register.commit("one.kz"))
        drifting.held = State({}, {})  # someone emptied it behind our back
        assert drifting.on_drift is not None
        drifting.on_drift()  # as the nft monitor does
        assert not enforcers.in_step
        for _ in range(100):
            await asyncio.sleep(0.01)
            if drifting.domains():
                break
        assert drifting.domains() == {"one.kz"} and enforcers.in_step
        assert sample(enforcers, "kzgate_enforcer_drift_repairs_total", "nft") == 1
    finally:
        await enforcers.close()


class SabotagedDuringReconcile(Recording):
    """Its state is undone while its reconcile runs, and it says so (like the nft monitor)."""

    sabotage = 0

    async def reconcile(self, state: State) -> Diff:
        fixed = await super().reconcile(state)
        if self.sabotage and self.on_drift is not None:
            self.sabotage -= 1
            self.held = State({}, {})
            self.on_drift()
        return fixed


async def test_drift_reported_during_a_reconcile_goes_round_again() -> None:
    sabotaged = SabotagedDuringReconcile("nft")
    enforcers, register = await started(sabotaged)
    try:
        await apply(enforcers, register.commit("one.kz"))
        sabotaged.sabotage = 1
        enforcers.request_repair("nft")
        await enforcers.repair()  # its reconcile was undone under it: still dirty
        assert not enforcers.in_step and sabotaged.domains() == set()
        await enforcers.repair()
        assert enforcers.in_step and sabotaged.domains() == {"one.kz"}
    finally:
        await enforcers.close()


async def test_what_an_enforcer_cannot_carry_follows_diffs_and_reconciles() -> None:
    register = Register()
    register.commit("held.kz", "too-long.kz")
    narrow, wide = Recording("rpz", uncarry={"too-long.kz", "later.kz"}), Recording("dns")
    enforcers = EnforcerSet([wide, narrow])
    await enforcers.start(register.read, register.in_step)  # reconcile resets the count
    try:
        assert sample(enforcers, "kzgate_not_enforced_targets", "rpz") == 1
        assert sample(enforcers, "kzgate_not_enforced_targets", "dns") == 0
        await apply(enforcers, register.commit("later.kz"))
        summary = enforcers.not_enforced_summary()
        assert summary == {"rpz": {"count": 2, "targets": ["later.kz", "too-long.kz"]}}
        assert enforcers.uncarried(REF, ()) == {}
    finally:
        await enforcers.close()


async def test_status_listeners_and_reload_gather_every_enforcer(tmp_path: Path, pki: Path) -> None:
    from tests.support.kzfixtures import write_config

    first, second = Recording("a"), Recording("b")
    enforcers, register = await started(first, second)
    try:
        await apply(enforcers, register.commit("one.kz"))
        assert enforcers.status() == {"a": {"held": 1}, "b": {"held": 1}}
        listeners = enforcers.listeners()
        assert sorted(listeners) == ["a", "b"] and listeners["a"].refusals() == {"acl": 2}
        cfg = load_config(write_config(tmp_path, pki))
        await enforcers.reload(cfg, ("dns.upstreams",))
        assert first.reloaded == second.reloaded == [(cfg, ("dns.upstreams",))]
    finally:
        await enforcers.close()


async def test_close_returns_while_a_drift_report_is_pending() -> None:
    """A drift report just before a stop must not keep the repair loop alive.

    (Python 3.11's wait_for returns the result when the awaited future is done
    at the moment it is cancelled: the cancellation is lost and close() waits
    for ever.)
    """
    enforcers, _ = await started(Recording("nft"))
    for _ in range(3):
        await asyncio.sleep(0)  # the repair loop is waiting for a report
    enforcers.request_repair("nft")
    await asyncio.wait_for(enforcers.close(), 5)
