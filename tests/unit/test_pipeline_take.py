"""The pipeline as a feed's sink (feed/ports.py FeedSink): a page of tasks taken as one group
ends exactly where pushing them one by one does; refusals stay alone; pushes are announced.

Real register on a temporary file, fake enforcers (tests/support/enforcer_fakes.py) and
the dry-run one.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from kzgate.enforce.dryrun import DryRunEnforcer
from kzgate.errors import NotFound
from kzgate.feed.chain import chain_of, payload_hash
from kzgate.feed.head import Head
from kzgate.feed.ports import FeedSink, Taken
from kzgate.protocol.jws import parse_compact
from kzgate.protocol.receipts import verify_receipt
from tests.support.enforcer_fakes import Recording
from tests.support.kzfixtures import Regulator
from tests.unit.test_pipeline import Setup, count, tampered

SESSION = "6f1c1c2e-8f0e-4a55-9a53-3f5d2f1d9a10"


def head(seq: int) -> Head:
    now = dt.datetime(2026, 11, 22, 5, 15, tzinfo=dt.UTC)
    return Head("mci", SESSION, seq, b"\x22" * 32, now, now + dt.timedelta(hours=1), f"h.{seq}")


def history(mci: Regulator, n: int, seed: int) -> list[bytes]:
    """``n`` signed tasks of 10 targets each: overlapping domains and prefixes (so names
    are relabelled and maximal prefixes change), resumes of active instructions,
    resumes of unknown ones (pending) and restricts of those (cancelled)."""
    rnd = random.Random(seed)
    active: list[str] = []
    pending: list[str] = []
    bodies = []
    for i in range(n):
        roll = rnd.random()
        if roll < 0.15 and active:
            task = mci.resume(active.pop(rnd.randrange(len(active))))
        elif roll < 0.18:
            pending.append(f"p{i}")
            task = mci.resume(f"p{i}")
        elif roll < 0.21 and pending:
            task = mci.restrict(pending.pop(), "domain:cancelled.kz")
        else:
            targets = []
            for _ in range(10):
                pick = rnd.random()
                a, b = rnd.randrange(4), rnd.randrange(8)
                if pick < 0.6:
                    targets.append(f"domain:d{rnd.randrange(400)}.kz")
                elif pick < 0.75:
                    targets.append(f"ip:10.{a}.{b}.{rnd.randrange(4)}")
                elif pick < 0.9:
                    targets.append(f"cidr:10.{a}.{b}.0/24")
                else:
                    targets.append(f"cidr:10.{a}.0.0/16")
            targets = list(dict.fromkeys(targets))
            active.append(str(i))
            task = mci.restrict(str(i), *targets)
        bodies.append(mci.sign(task))
    return bodies


def tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What must be equal however the tasks came: everything but times and signatures."""
    conn = sqlite3.connect(db)
    try:
        return {
            "tasks": conn.execute(
                "SELECT iss, id, seq, type, payload, sha256, status FROM tasks ORDER BY rowid"
            ).fetchall(),
            "instructions": conn.execute(
                "SELECT iss, number, date, status, restrict_task, resume_task FROM instructions"
                " ORDER BY rowid"
            ).fetchall(),
            "targets": conn.execute("SELECT * FROM targets ORDER BY rowid").fetchall(),
            # a page's receipts are issued after its tasks, a push's after each one
            "audit": sorted(
                conn.execute(
                    "SELECT event, CASE WHEN event = 'receipt_issued' THEN"
                    " json_extract(data, '$.id') || ' ' || json_extract(data, '$.status')"
                    " ELSE data END FROM audit"
                ).fetchall()
            ),
        }
    finally:
        conn.close()


async def test_a_page_taken_ends_where_pushing_the_tasks_one_by_one_does(
    tmp_path: Path, pki: Path
) -> None:
    bodies = history(Regulator(pki), 1000, seed=12)
    (tmp_path / "pushed").mkdir()
    (tmp_path / "taken").mkdir()
    pushed_setup, taken_setup = Setup(tmp_path / "pushed", pki), Setup(tmp_path / "taken", pki)
    pushed_dns, pushed_dry = Recording("dns"), DryRunEnforcer()
    taken_dns, taken_dry = Recording("dns"), DryRunEnforcer()
    pushed = pushed_setup.pipeline(pushed_dns, pushed_dry)
    taken = taken_setup.pipeline(taken_dns, taken_dry)
    await pushed.start()
    await taken.start()
    try:
        statuses = [(await pushed.submit(body)).body["status"] for body in bodies]
        outcomes: list[Taken] = []
        for first in range(0, len(bodies), 250):
            outcomes += await taken.take("mci", bodies[first : first + 250], None)
        assert [t.outcome for t in outcomes] == statuses
        assert {"applied", "pending", "cancelled"} <= set(statuses)
        assert [t.seq for t in outcomes] == list(range(1, 1001))
        assert len(taken_dns.applied) == 4  # one combined diff per page

        assert tables(tmp_path / "taken/kzgate.db") == tables(tmp_path / "pushed/kzgate.db")
        assert taken.register.state.snapshot() == pushed.register.state.snapshot()
        snap = taken.register.state.snapshot()
        assert taken_dns.held.domains == pushed_dns.held.domains == snap.domains
        assert set(taken_dns.held.prefixes) == set(pushed_dns.held.prefixes) == set(snap.prefixes)
        assert set(taken_dry.prefixes) == set(pushed_dry.prefixes) == set(snap.prefixes)
        for outcome, status in zip(outcomes, statuses, strict=True):
            assert outcome.id is not None
            receipt = (await taken.receipt("mci", outcome.id)).body
            assert receipt["status"] == status
            verify_receipt(receipt, taken_setup.public)
        for status in set(statuses):
            assert count(taken, "kzgate_tasks_total", type="restrict", outcome=status) == count(
                pushed, "kzgate_tasks_total", type="restrict", outcome=status
            )
    finally:
        await pushed.close()
        await taken.close()


async def test_duplicates_and_conflicts_inside_a_page(tmp_path: Path, pki: Path) -> None:
    setup = Setup(tmp_path, pki)
    dns = Recording("dns")
    pipeline = setup.pipeline(dns)
    await pipeline.start()
    mci = setup.mci
    try:
        one = mci.sign(mci.restrict("1", "domain:one.kz"))
        pushed = await pipeline.submit(one)
        two = mci.sign(mci.restrict("2", "domain:two.kz"))
        other_two = mci.sign(mci.restrict("9", "domain:nine.kz", seq=2))  # seq 2 is two's
        three = mci.sign(mci.restrict("3", "domain:three.kz"))
        outcomes = await pipeline.take("mci", [one, two, two, other_two, three], None)
        assert [(t.seq, t.outcome) for t in outcomes] == [
            (1, "duplicate"),
            (2, "applied"),
            (2, "duplicate"),
            (2, "conflict"),
            (3, "applied"),
        ]
        assert "seq 2" in outcomes[3].detail
        assert [t.stored for t in outcomes] == [True, True, True, False, True]
        assert dns.domains() == {"one.kz", "two.kz", "three.kz"}
        assert (await pipeline.receipt("mci", "restrict-1-1")).body == pushed.body
        with pytest.raises(NotFound):
            await pipeline.receipt("mci", "restrict-9-2")
        assert count(pipeline, "kzgate_tasks_total", type="restrict", outcome="duplicate") == 2
        assert count(pipeline, "kzgate_tasks_total", type="restrict", outcome="conflict") == 1
        assert count(pipeline, "kzgate_task_apply_seconds_count") == 3
    finally:
        await pipeline.close()


async def test_tasks_of_another_issuer_or_unverified_are_not_stored(
    tmp_path: Path, pki: Path
) -> None:
    setup = Setup(tmp_path, pki)
    dns = Recording("dns")
    pipeline = setup.pipeline(dns)
    await pipeline.start()
    sts = Regulator(pki, iss="sts", kid="sts-dev")
    try:
        foreign = sts.sign(sts.restrict("1", "domain:sts.kz"))
        forged = tampered(setup.mci.sign(setup.mci.restrict("2", "domain:forged.kz")))
        good = setup.mci.sign(setup.mci.restrict("3", "domain:good.kz"))
        outcomes = await pipeline.take("mci", [foreign, forged, good], None)
        assert [t.outcome for t in outcomes] == ["wrong_issuer", "bad_signature", "applied"]
        assert (outcomes[0].seq, outcomes[0].id) == (1, "restrict-1-1")
        assert "'sts'" in outcomes[0].detail
        assert (outcomes[1].seq, outcomes[1].id) == (None, None)
        assert dns.domains() == {"good.kz"}
        with pytest.raises(NotFound):
            await pipeline.receipt("sts", "restrict-1-1")
        assert count(pipeline, "kzgate_tasks_total", type="unknown", outcome="bad_signature") == 1
    finally:
        await pipeline.close()


async def test_an_apply_that_fails_answers_the_page_accepted(tmp_path: Path, pki: Path) -> None:
    setup = Setup(tmp_path, pki)
    broken = Recording("nft")
    pipeline = setup.pipeline(Recording("dns"), broken)
    await pipeline.start()
    try:
        broken.fail_applies, broken.fail_reconciles = 1, 1
        mci = setup.mci
        bodies = [mci.sign(mci.restrict(str(n), f"domain:n{n}.kz")) for n in range(3)]
        bodies.append(mci.sign(mci.resume("x")))  # pending: nothing to enforce
        outcomes = await pipeline.take("mci", bodies, None)
        assert [t.outcome for t in outcomes] == ["accepted"] * 3 + ["pending"]
        await pipeline.enforcers.repair()
        assert await pipeline.in_register(pipeline.register.unapplied_tasks) == []
        assert (await pipeline.receipt("mci", "restrict-0-1")).body["status"] == "applied"
    finally:
        await pipeline.close()


async def test_the_head_goes_with_its_page_and_the_feed_reads(tmp_path: Path, pki: Path) -> None:
    setup = Setup(tmp_path, pki)
    pipeline = setup.pipeline(Recording("dns"))
    sink: FeedSink = pipeline  # the protocol, checked by mypy
    await pipeline.start()
    mci = setup.mci
    try:
        bodies = [mci.sign(mci.restrict(str(n), f"domain:n{n}.kz")) for n in range(3)]
        assert await sink.stored_head("mci") is None
        await sink.take("mci", bodies, head(3))
        assert await sink.stored_head("mci") == head(3)
        await sink.store_head(head(4))
        assert await sink.stored_head("mci") == head(4)
        assert await sink.held_through("mci") == 3
        payloads = [parse_compact(b).payload for b in bodies]
        hashes = await sink.payload_hashes("mci", 1, 3)
        assert chain_of(hashes) == chain_of(payload_hash(p) for p in payloads)
        await sink.feed_event("mci", "feed_new_session", {"session": SESSION})
        rows = list(await pipeline.in_register(pipeline.register.audit_rows))
        assert rows[-1].event == "feed_new_session" and SESSION in rows[-1].data
    finally:
        await pipeline.close()


async def test_on_pushed_tells_of_stored_pushes_only(tmp_path: Path, pki: Path) -> None:
    setup = Setup(tmp_path, pki)
    pipeline = setup.pipeline(Recording("dns"))
    await pipeline.start()
    heard: list[tuple[str, int]] = []

    def broken(iss: str, seq: int) -> None:
        raise RuntimeError("a listener that fails")

    pipeline.on_pushed(broken)
    pipeline.on_pushed(lambda iss, seq: heard.append((iss, seq)))
    mci = setup.mci
    try:
        first = mci.sign(mci.restrict("1", "domain:one.kz"))
        answer = await pipeline.submit(first)  # the failing listener does not fail it
        assert answer.body["status"] == "applied"
        await pipeline.submit(first)  # a duplicate: nothing new stored
        await pipeline.take("mci", [mci.sign(mci.restrict("2", "domain:two.kz"))], None)
        await pipeline.submit(mci.sign(mci.resume("9", seq=7)))  # pending, stored
        assert heard == [("mci", 1), ("mci", 7)]
    finally:
        await pipeline.close()
