"""The pipeline, verify → record → apply → receipt, with fake enforcers (in process, no sockets).

The register is the real one on a temporary file: the pipeline's promises are
about what is stored before an answer is given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

import pytest

from kzgate.config import load_config
from kzgate.daemon import build_trust
from kzgate.enforce.base import Enforcer
from kzgate.enforce.set import EnforcerSet
from kzgate.errors import BadSignature, Conflict, NotFound
from kzgate.keys import load_private_key
from kzgate.metrics import Metrics
from kzgate.pipeline import Pipeline
from kzgate.protocol.intake import verify_task
from kzgate.protocol.receipts import verify_receipt
from kzgate.register.store import Register
from tests.support.enforcer_fakes import Recording
from tests.support.kzfixtures import Regulator, write_config


class Setup:
    def __init__(self, tmp_path: Path, pki: Path) -> None:
        self.tmp_path, self.pki = tmp_path, pki
        self.cfg = load_config(write_config(tmp_path, pki))
        self.public = load_private_key(pki / "keys/operator.key").public_key()
        self.mci = Regulator(pki)

    def pipeline(self, *fakes: Enforcer) -> Pipeline:
        return Pipeline(
            register=Register.open(self.tmp_path / "kzgate.db"),
            enforcers=EnforcerSet(fakes),
            trust=build_trust(self.cfg),
            operator_id="op-test",
            receipt_key=load_private_key(self.pki / "keys/operator.key"),
            metrics=Metrics(),
            clock=lambda: dt.datetime.now(dt.UTC),
        )


def count(pipeline: Pipeline, name: str, **labels: str) -> float:
    return pipeline.metrics.registry.get_sample_value(name, labels) or 0.0


def tampered(body: bytes) -> bytes:
    head, payload, sig = body.split(b".")
    return b".".join([head, payload, sig[:-2] + (b"AA" if sig[-2:] != b"AA" else b"BA")])


async def test_a_restrict_is_recorded_applied_everywhere_and_answered_with_a_signed_receipt(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    log: list[str] = []
    dns, nft = Recording("dns", log), Recording("nft", log)
    pipeline = setup.pipeline(dns, nft)
    await pipeline.start()
    try:
        log.clear()
        task = setup.mci.restrict("1", "domain:one.kz", "cidr:10.1.0.0/16")
        answer = await pipeline.submit(setup.mci.sign(task))
        assert (answer.status, answer.body["status"]) == (200, "applied")
        assert answer.body["applied_at"] and "not_enforced" not in answer.body
        verify_receipt(answer.body, setup.public)
        assert log == ["apply dns", "apply nft"]  # the enforcers' order
        assert dns.domains() == nft.domains() == {"one.kz"}
        assert [str(p) for p in nft.held.prefixes] == ["10.1.0.0/16"]
        # Stored before the answer: the same receipt for a GET.
        assert (await pipeline.receipt("mci", task["id"])).body == answer.body
        assert count(pipeline, "kzgate_tasks_total", type="restrict", outcome="applied") == 1
        assert count(pipeline, "kzgate_task_apply_seconds_count") == 1
        # A resume lifts it everywhere.
        lifted = await pipeline.submit(setup.mci.sign(setup.mci.resume("1")))
        assert lifted.body["status"] == "applied"
        assert dns.domains() == nft.domains() == set() and not nft.held.prefixes
    finally:
        await pipeline.close()


async def test_a_refused_task_is_counted_and_changes_nothing(tmp_path: Path, pki: Path) -> None:
    setup = Setup(tmp_path, pki)
    dns = Recording("dns")
    pipeline = setup.pipeline(dns)
    await pipeline.start()
    try:
        task = setup.mci.restrict("1", "domain:one.kz")
        with pytest.raises(BadSignature):
            await pipeline.submit(tampered(setup.mci.sign(task)))
        assert dns.applied == [] and dns.domains() == set()
        with pytest.raises(NotFound):
            await pipeline.receipt("mci", task["id"])
        assert count(pipeline, "kzgate_tasks_total", type="unknown", outcome="bad_signature") == 1
    finally:
        await pipeline.close()


async def test_a_duplicate_gets_the_stored_receipt_and_a_conflict_is_refused(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    dns = Recording("dns")
    pipeline = setup.pipeline(dns)
    await pipeline.start()
    try:
        body = setup.mci.sign(setup.mci.restrict("1", "domain:one.kz"))
        first = await pipeline.submit(body)
        again = await pipeline.submit(body)
        assert (again.status, again.body) == (first.status, first.body)
        assert len(dns.applied) == 1
        assert count(pipeline, "kzgate_tasks_total", type="restrict", outcome="duplicate") == 1
        with pytest.raises(Conflict):  # the same instruction again, as another task
            await pipeline.submit(setup.mci.sign(setup.mci.restrict("1", "domain:other.kz")))
        assert count(pipeline, "kzgate_tasks_total", type="restrict", outcome="conflict") == 1
        assert dns.domains() == {"one.kz"}
    finally:
        await pipeline.close()


async def test_diffs_reach_the_enforcers_in_the_order_the_register_committed_them(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    slow = Recording("slow")
    pipeline = setup.pipeline(slow)
    await pipeline.start()
    try:
        bodies = [setup.mci.sign(setup.mci.restrict(str(n), f"domain:n{n}.kz")) for n in range(12)]
        random.Random(7).shuffle(bodies)
        jitter = random.Random(11)

        async def push(body: bytes) -> None:
            await asyncio.sleep(jitter.random() / 100)
            await pipeline.submit(body)

        # Each apply yields for a while of its own: without the lock, a later diff
        # would overtake an earlier one.
        slow.delay = lambda: jitter.random() / 50
        await asyncio.gather(*(push(body) for body in bodies))
        applied = [next(iter(diff.domains_added)) for diff in slow.applied]
        rows = await pipeline.reader.instructions(
            status="active", limit=100, offset=0, targets_limit=1
        )
        committed = [row["targets"][0]["value"] for row in rows]  # oldest first
        assert len(applied) == 12 and applied == committed
    finally:
        await pipeline.close()


async def test_a_task_an_enforcer_missed_is_accepted_then_re_signed_once_it_is_repaired(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    broken = Recording("nft")
    pipeline = setup.pipeline(Recording("dns"), broken)
    await pipeline.start()
    try:
        broken.fail_applies, broken.fail_reconciles = 1, 1
        task = setup.mci.restrict("1", "domain:one.kz")
        answer = await pipeline.submit(setup.mci.sign(task))
        assert (answer.status, answer.body["status"]) == (202, "accepted")
        assert answer.body["applied_at"] is None
        assert count(pipeline, "kzgate_tasks_total", type="restrict", outcome="accepted") == 1
        await pipeline.enforcers.repair()
        # Re-signed by the repair itself, not on the next GET.
        assert await pipeline.in_register(pipeline.register.unapplied_tasks) == []
        later = await pipeline.receipt("mci", task["id"])
        assert (later.status, later.body["status"]) == (200, "applied")
        assert later.body["applied_at"]
        verify_receipt(later.body, setup.public)
    finally:
        await pipeline.close()


async def test_what_an_enforcer_cannot_carry_makes_the_receipt_partial(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    pipeline = setup.pipeline(Recording("dns"), Recording("rpz", uncarry={"long.kz"}))
    await pipeline.start()
    try:
        task = setup.mci.restrict("1", "domain:short.kz", "domain:long.kz")
        answer = await pipeline.submit(setup.mci.sign(task))
        assert (answer.status, answer.body["status"]) == (200, "partial")
        assert answer.body["not_enforced"] == {"rpz": ["long.kz"]}
        verify_receipt(answer.body, setup.public)
        resumed = await pipeline.submit(setup.mci.sign(setup.mci.resume("1")))
        assert resumed.body["status"] == "applied"
    finally:
        await pipeline.close()


async def test_a_task_stored_but_never_answered_is_in_force_and_signed_at_start(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    task = setup.mci.restrict("1", "domain:one.kz")
    register = Register.open(tmp_path / "kzgate.db")
    now = dt.datetime.now(dt.UTC)
    register.record(verify_task(setup.mci.sign(task), build_trust(setup.cfg), "op-test", now), now)
    register.close()  # the daemon died between the commit and the answer

    dns = Recording("dns")
    pipeline = setup.pipeline(dns)
    await pipeline.start()
    try:
        assert dns.domains() == {"one.kz"}
        stored = await pipeline.in_register(pipeline.register.get_receipt, "mci", task["id"])
        assert stored is not None and stored["status"] == "applied"
        verify_receipt(stored, setup.public)
    finally:
        await pipeline.close()


async def test_the_resumed_hook_hears_each_applied_resume_pushed_or_taken(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    pipeline = setup.pipeline(Recording("dns", []))
    heard: list[tuple[str, dt.datetime]] = []
    pipeline.on_resumed(lambda ref, at: heard.append((ref.number, at)))
    pipeline.on_resumed(lambda ref, at: 1 / 0)  # a faulty listener changes nothing
    await pipeline.start()
    try:
        await pipeline.submit(setup.mci.sign(setup.mci.restrict("1", "domain:one.kz")))
        await pipeline.submit(setup.mci.sign(setup.mci.restrict("2", "domain:two.kz")))
        assert heard == []  # restricts are not lifts
        answer = await pipeline.submit(setup.mci.sign(setup.mci.resume("1")))
        assert answer.body["status"] == "applied"
        assert heard == [("1", dt.datetime.fromisoformat(answer.body["applied_at"]))]
        pending = await pipeline.submit(setup.mci.sign(setup.mci.resume("9")))
        assert pending.body["status"] == "pending" and len(heard) == 1  # nothing was lifted
        await pipeline.take("mci", [setup.mci.sign(setup.mci.resume("2"))], None)
        assert [number for number, _ in heard] == ["1", "2"]
    finally:
        await pipeline.close()
