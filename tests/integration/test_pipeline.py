"""The pipeline with a real register and a backend that fails: 202 accepted, then repaired."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

import pytest

from kzgate.daemon import build_trust
from kzgate.enforce.base import Enforcer
from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.enforce.dryrun import DryRunEnforcer
from kzgate.enforce.set import EnforcerSet
from kzgate.errors import Conflict
from kzgate.keys import load_private_key
from kzgate.metrics import Metrics
from kzgate.model import Diff, State
from kzgate.pipeline import Pipeline
from kzgate.policy import PolicyIndex
from kzgate.protocol.receipts import verify_receipt
from kzgate.register.store import Register
from tests.support.kzfixtures import Regulator


class FlakyEnforcer(Enforcer):
    """Fails while ``broken`` is set; otherwise delegates to a real index."""

    name = "flaky"

    def __init__(self) -> None:
        self.inner = DnsIndexEnforcer(PolicyIndex())
        self.broken = False

    async def apply(self, diff: Diff) -> None:
        if self.broken:
            raise OSError("backend down")
        await self.inner.apply(diff)

    async def reconcile(self, state: State) -> Diff:
        if self.broken:
            raise OSError("backend down")
        return await self.inner.reconcile(state)

    def uncarried(self, diff: Diff) -> Diff:
        return self.inner.uncarried(diff)


def make_pipeline(
    tmp_path: Path, pki: Path, *enforcers: Enforcer, apply_timeout: float = 30.0
) -> Pipeline:
    from kzgate.config import load_config
    from tests.support.kzfixtures import write_config

    cfg = load_config(write_config(tmp_path, pki))
    return Pipeline(
        register=Register.open(tmp_path / "kzgate.db"),
        enforcers=EnforcerSet(enforcers, apply_timeout=apply_timeout),
        trust=build_trust(cfg),
        operator_id="op-test",
        receipt_key=load_private_key(pki / "keys/operator.key"),
        metrics=Metrics(),
        clock=lambda: dt.datetime.now(dt.UTC),
    )


async def test_failing_backend_gives_accepted_then_applied_after_repair(
    tmp_path: Path, pki: Path
) -> None:
    flaky = FlakyEnforcer()
    pipeline = make_pipeline(tmp_path, pki, flaky)
    await pipeline.start()
    mci = Regulator(pki)
    try:
        flaky.broken = True
        task = mci.restrict("1", "domain:down.kz")
        answer = await pipeline.submit(mci.sign(task))
        assert (answer.status, answer.body["status"]) == (202, "accepted")
        assert answer.body["applied_at"] is None
        assert not pipeline.enforcers.in_step
        flaky.broken = False
        await pipeline.enforcers.repair()
        assert pipeline.enforcers.in_step
        assert flaky.inner.index.lookup_name("down.kz") is not None
        later = await pipeline.receipt("mci", task["id"])
        assert later.body["status"] == "applied" and later.body["applied_at"]
        verify_receipt(later.body, load_private_key(pki / "keys/operator.key").public_key())
    finally:
        await pipeline.close()


async def test_restart_rebuilds_enforcers_from_the_register(tmp_path: Path, pki: Path) -> None:
    mci = Regulator(pki)
    first = make_pipeline(tmp_path, pki, FlakyEnforcer())
    await first.start()
    await first.submit(mci.sign(mci.restrict("1", "domain:kept.kz", "cidr:10.9.0.0/16")))
    await first.submit(mci.sign(mci.restrict("2", "domain:gone.kz")))
    await first.submit(mci.sign(mci.resume("2")))
    with pytest.raises(Conflict):
        await first.submit(mci.sign(mci.restrict("1", "domain:other.kz")))
    await first.close()

    fresh, prefixes = FlakyEnforcer(), DryRunEnforcer()
    second = make_pipeline(tmp_path, pki, fresh, prefixes)
    await second.start()
    try:
        index = fresh.inner.index
        assert index.lookup_name("a.kept.kz") is not None
        assert set(prefixes.prefixes) == {ipaddress.ip_network("10.9.0.0/16")}
        assert index.lookup_name("gone.kz") is None
        assert index.lookup_name("other.kz") is None
    finally:
        await second.close()


class HangingEnforcer(FlakyEnforcer):
    """Applies fail and reconciles never return: a backend that hangs."""

    async def apply(self, diff: Diff) -> None:
        raise OSError("backend down")

    async def reconcile(self, state: State) -> Diff:
        if self.broken:
            await asyncio.Event().wait()
        return await self.inner.reconcile(state)


async def test_a_hanging_backend_does_not_block_intake(tmp_path: Path, pki: Path) -> None:
    hanging = HangingEnforcer()
    pipeline = make_pipeline(tmp_path, pki, hanging, apply_timeout=0.2)
    await pipeline.start()
    mci = Regulator(pki)
    try:
        hanging.broken = True
        first = await pipeline.submit(mci.sign(mci.restrict("1", "domain:a.kz")))
        assert first.status == 202
        repair = asyncio.create_task(pipeline.enforcers.repair())
        second = await asyncio.wait_for(
            pipeline.submit(mci.sign(mci.restrict("2", "domain:b.kz"))), timeout=5
        )
        assert second.status == 202
        await repair
    finally:
        await pipeline.close()


async def test_receipt_write_failure_still_answers_and_is_re_signed(
    tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = make_pipeline(tmp_path, pki, FlakyEnforcer())
    await pipeline.start()
    mci = Regulator(pki)
    real = pipeline.register.set_receipt
    calls = []

    def failing_once(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise OSError("disk full")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.register, "set_receipt", failing_once)
    try:
        task = mci.restrict("1", "domain:a.kz")
        answer = await pipeline.submit(mci.sign(task))
        assert (answer.status, answer.body["status"]) == (200, "applied")
        later = await pipeline.receipt("mci", task["id"])
        assert later.body["status"] == "applied"
        verify_receipt(later.body, load_private_key(pki / "keys/operator.key").public_key())
        assert len(calls) == 2  # the GET re-signed and stored it
    finally:
        await pipeline.close()


class DriftOnceEnforcer(FlakyEnforcer):
    """Its next apply finds the backend changed under it; a reconcile fixes that."""

    def __init__(self) -> None:
        super().__init__()
        self.drift = False

    async def apply(self, diff: Diff) -> None:
        if self.drift:
            self.drift = False
            raise OSError("element not present")
        await self.inner.apply(diff)


async def test_drift_found_by_an_apply_is_reconciled_before_the_answer(
    tmp_path: Path, pki: Path
) -> None:
    enforcer = DriftOnceEnforcer()
    pipeline = make_pipeline(tmp_path, pki, enforcer)
    await pipeline.start()
    mci = Regulator(pki)
    try:
        await pipeline.submit(mci.sign(mci.restrict("1", "domain:one.kz")))
        enforcer.inner.index.remove_domain("one.kz")  # someone removed it behind our back
        enforcer.drift = True
        answer = await pipeline.submit(mci.sign(mci.restrict("2", "domain:two.kz")))
        assert (answer.status, answer.body["status"]) == (200, "applied")
        assert enforcer.inner.index.lookup_name("one.kz") is not None  # repaired too
        assert enforcer.inner.index.lookup_name("two.kz") is not None
        repairs = pipeline.metrics.registry.get_sample_value(
            "kzgate_enforcer_drift_repairs_total", {"enforcer": "flaky"}
        )
        assert repairs == 1
    finally:
        await pipeline.close()


async def test_request_repair_reconciles_within_a_second(tmp_path: Path, pki: Path) -> None:
    enforcer = FlakyEnforcer()
    pipeline = make_pipeline(tmp_path, pki, enforcer)
    await pipeline.start()
    mci = Regulator(pki)
    try:
        await pipeline.submit(mci.sign(mci.restrict("1", "domain:one.kz")))
        enforcer.inner.index.remove_domain("one.kz")
        pipeline.enforcers.request_repair("flaky")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if enforcer.inner.index.lookup_name("one.kz") is not None:
                break
        assert enforcer.inner.index.lookup_name("one.kz") is not None
        assert pipeline.enforcers.in_step
    finally:
        await pipeline.close()


class DriftDuringReconcileEnforcer(FlakyEnforcer):
    """Someone undoes our work while the reconcile runs, and says so (like the nft monitor)."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: Pipeline | None = None
        self.sabotage = 0

    async def reconcile(self, state: State) -> Diff:
        fixed = await self.inner.reconcile(state)
        if self.sabotage and self.pipeline is not None:
            self.sabotage -= 1
            self.inner.index.remove_domain("one.kz")
            self.pipeline.enforcers.request_repair(self.name)
        return fixed


async def test_drift_reported_during_a_reconcile_is_not_lost(tmp_path: Path, pki: Path) -> None:
    enforcer = DriftDuringReconcileEnforcer()
    pipeline = make_pipeline(tmp_path, pki, enforcer)
    enforcer.pipeline = pipeline
    await pipeline.start()
    mci = Regulator(pki)
    try:
        await pipeline.submit(mci.sign(mci.restrict("1", "domain:one.kz")))
        enforcer.sabotage = 1
        pipeline.enforcers.request_repair("flaky")
        for _ in range(300):
            await asyncio.sleep(0.01)
            if enforcer.sabotage == 0 and enforcer.inner.index.lookup_name("one.kz"):
                break
        assert enforcer.inner.index.lookup_name("one.kz") is not None
        assert pipeline.enforcers.in_step
    finally:
        await pipeline.close()
