"""The register's side of the feed: a page in one transaction, the stored head, feed reads,
receipts in one go, feed audit events, and migration 2 of a schema-1 file."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

import pytest

from kzgate.errors import Conflict
from kzgate.feed.chain import chain_of, payload_hash
from kzgate.feed.head import Head
from kzgate.model import Task
from kzgate.register import schema
from kzgate.register.store import Recorded, Register, RegisterError
from tests.support.register_fixtures import T0, dump, restrict, resume

SESSION = "6f1c1c2e-8f0e-4a55-9a53-3f5d2f1d9a10"


def head(seq: int, chain: bytes = b"\x11" * 32, iss: str = "mci") -> Head:
    return Head(iss, SESSION, seq, chain, T0, T0 + dt.timedelta(hours=1), f"h.{seq}.sig")


def page() -> list[Task]:
    """Five tasks; the third is another task with seq 2, the fourth other bytes for id t1."""
    return [
        restrict("t1", 1, "100", [("domain", "a.kz"), ("cidr", "10.0.0.0/24")]),
        restrict("t2", 2, "101", [("domain", "b.kz"), ("ip", "10.0.0.7")]),
        restrict("t3", 2, "102", [("domain", "c.kz")]),  # seq 2 is t2's
        restrict("t1", 4, "103", [("domain", "d.kz")], payload=b'{"id":"t1","n":4}'),
        resume("t5", 3, "100"),
    ]


# -- record_many ---------------------------------------------------------------


def test_a_refused_task_in_the_middle_is_refused_alone(db: Path, tmp_path: Path) -> None:
    reg = Register.open(db)
    results = reg.record_many(page(), T0)
    assert [type(r).__name__ for r in results] == [
        "Recorded",
        "Recorded",
        "Conflict",
        "Conflict",
        "Recorded",
    ]
    assert [r.status for r in results if isinstance(r, Recorded)] == ["applied"] * 3
    # The same register, file and state as recording the accepted ones one by one.
    alone = Register.open(tmp_path / "alone.db")
    diffs = []
    for task in page():
        with contextlib.suppress(Conflict):
            diffs.append(alone.record(task, T0).diff)
    assert [r.diff for r in results if isinstance(r, Recorded)] == diffs
    assert reg.state.snapshot() == alone.state.snapshot()
    assert reg.state.counts() == alone.state.counts()
    assert dump(db) == dump(tmp_path / "alone.db")
    assert reg.audit_verify().ok
    reg.close()
    alone.close()
    reopened = Register.open(db)  # what is on disk builds the same state
    assert reopened.state.snapshot() == Register.open(tmp_path / "alone.db").state.snapshot()
    reopened.close()


def test_a_task_refused_after_it_wrote_is_rolled_back_alone(
    reg: Register, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules refuse before writing today; the savepoint holds if one ever refuses later."""
    real = reg._write

    def refuse_t2_after_writing(task: Task, *args: object) -> object:
        change = real(task, *args)  # type: ignore[arg-type]
        if task.id == "t2":
            raise Conflict("refused after its rows were written")
        return change

    monkeypatch.setattr(reg, "_write", refuse_t2_after_writing)
    results = reg.record_many(page(), T0)
    assert isinstance(results[1], Conflict)
    alone = Register.open(tmp_path / "alone.db")
    for task in page():
        if task.id != "t2":
            with contextlib.suppress(Conflict):
                alone.record(task, T0)
    assert dump(db) == dump(tmp_path / "alone.db")
    assert reg.state.snapshot() == alone.state.snapshot()
    alone.close()


def test_duplicates_in_a_page_and_of_stored_tasks(reg: Register) -> None:
    first = restrict("t1", 1, "100", [("domain", "a.kz")])
    reg.record(first, T0)
    reg.set_receipt("mci", "t1", {"status": "applied"}, T0)
    second = restrict("t2", 2, "101", [("domain", "b.kz")])
    results = reg.record_many([first, second, second], T0 + dt.timedelta(minutes=1))
    assert [r.status for r in results if isinstance(r, Recorded)] == [
        "duplicate",
        "applied",
        "duplicate",
    ]
    assert isinstance(results[0], Recorded) and results[0].stored_receipt == {"status": "applied"}
    assert results[0].received_at == T0  # when it was first received
    assert isinstance(results[2], Recorded) and results[2].diff.is_empty()


def test_record_keeps_raising_what_it_refuses(reg: Register, db: Path) -> None:
    reg.record(restrict("t1", 1, "100", [("domain", "a.kz")]), T0)
    before = dump(db)
    with pytest.raises(Conflict, match="seq"):
        reg.record(restrict("t2", 1, "101", [("domain", "b.kz")]), T0)
    assert dump(db) == before


def test_the_head_is_stored_with_the_tasks_and_read_back(reg: Register) -> None:
    assert reg.stored_head("mci") is None
    given = head(5, bytes(range(32)))
    reg.record_many(page(), T0, head=given)
    assert reg.stored_head("mci") == given
    assert reg.stored_head("sts") is None
    later = dataclasses.replace(given, seq=6, jws="h.6.sig")
    reg.store_head(later, T0)  # replaces it
    assert reg.stored_head("mci") == later
    reg.record_many([], T0, head=head(7))  # a head that brought nothing, in record_many
    assert reg.stored_head("mci") == head(7)


def test_a_failure_in_the_transaction_stores_neither_tasks_nor_head(
    reg: Register, db: Path
) -> None:
    reg.record(restrict("t0", 10, "99", [("domain", "z.kz")]), T0)
    reg.store_head(head(3), T0)
    before, state = dump(db), reg.state.snapshot()
    broken = head(5, chain=b"\x01" * 31)  # the CHECK on the chain's length fails at the end
    with pytest.raises(RegisterError, match="cannot store"):
        reg.record_many(page(), T0, head=broken)
    assert dump(db) == before
    assert reg.state.snapshot() == state
    assert reg.stored_head("mci") == head(3)
    # and the register still works
    assert [type(r).__name__ for r in reg.record_many(page()[:2], T0)] == ["Recorded"] * 2


def test_an_error_mid_page_rolls_back_the_tasks_before_it(
    reg: Register, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, state = dump(db), reg.state.snapshot()
    real = reg._record_in_tx
    calls = []

    def failing_third(task: Task, received_at: dt.datetime) -> object:
        calls.append(task.id)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return real(task, received_at)

    monkeypatch.setattr(reg, "_record_in_tx", failing_third)
    with pytest.raises(RegisterError, match="disk I/O error"):
        reg.record_many(page(), T0, head=head(5))
    assert dump(db) == before and reg.state.snapshot() == state


# -- feed reads ----------------------------------------------------------------


def held(reg: Register, seqs: list[int], iss: str = "mci") -> None:
    for seq in seqs:
        reg.record(restrict(f"{iss}-{seq}", seq, f"n{seq}", [("domain", "a.kz")], iss=iss), T0)


@pytest.mark.parametrize(
    ("seqs", "through"),
    [
        ([], 0),
        ([2, 3], 0),
        ([1], 1),
        ([1, 2, 4], 2),
        ([1, 2, 3, 4, 5], 5),
        ([1, 3, 4, 5, 6], 1),
        ([5, 1, 2, 3], 3),
        ([1, 2, 3, 10**6], 3),
    ],
)
def test_held_through_is_the_highest_seq_without_a_gap(
    reg: Register, seqs: list[int], through: int
) -> None:
    held(reg, seqs)
    held(reg, [1, 2, 3, 4, 5, 6, 7, 8], iss="sts")  # another issuer's log is not this one's
    assert reg.held_through("mci") == through
    assert reg.held_through("sts") == 8


def test_payload_hashes_feed_the_chain_of_task_protocol_6(reg: Register) -> None:
    tasks = [
        restrict(f"t{n}", n, f"{n}", [("domain", f"d{n}.kz")], payload=f'{{"n":{n}}}'.encode())
        for n in range(1, 6)
    ]
    reg.record_many(tasks, T0)
    hashes = reg.payload_hashes("mci", 1, 5)
    assert hashes == [hashlib.sha256(t.payload).digest() for t in tasks]
    assert chain_of(hashes) == chain_of(payload_hash(t.payload) for t in tasks)
    assert reg.payload_hashes("mci", 2, 3) == hashes[1:3]
    assert reg.payload_hashes("mci", 3, 2) == []
    with pytest.raises(LookupError, match="task 6"):
        reg.payload_hashes("mci", 4, 7)


# -- receipts and audit --------------------------------------------------------


def test_set_receipts_stores_all_in_one_transaction_or_none(reg: Register, db: Path) -> None:
    reg.record_many(page(), T0)
    reg.set_receipts(
        [
            ("mci", "t1", {"status": "applied", "applied_at": "x"}, T0),
            ("mci", "t2", {"status": "accepted"}, None),
        ]
    )
    assert reg.get_receipt("mci", "t1") == {"status": "applied", "applied_at": "x"}
    status = reg.get_task_status("mci", "t2")
    assert status is not None and status[0] == "accepted"
    events = [row.event for row in reg.audit_rows()]
    assert events[-2:] == ["receipt_issued", "receipt_issued"]
    before = dump(db)
    with pytest.raises(KeyError, match="mci/nope"):
        reg.set_receipts([("mci", "t5", {"status": "applied"}, T0), ("mci", "nope", {}, None)])
    assert dump(db) == before


def test_feed_events_are_chained_audit_rows(reg: Register) -> None:
    reg.feed_event("mci", "feed_conflict", {"seq": 4, "ours": "ab", "theirs": "cd"}, T0)
    reg.feed_event("mci", "feed_rollback", {"seq": 2, "held": 7}, T0)
    rows = list(reg.audit_rows())
    assert [r.event for r in rows] == ["feed_conflict", "feed_rollback"]
    assert rows[0].data == '{"iss":"mci","ours":"ab","seq":4,"theirs":"cd"}'
    assert reg.audit_verify().ok


# -- migration -----------------------------------------------------------------


def test_a_schema_1_register_opens_and_migrates(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as old_kzgate:
        old_kzgate.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        old = Register.open(db)
        old.record(restrict("t1", 1, "100", [("domain", "a.kz")]), T0)
        old.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "feed_heads" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    before = dump(db)
    reg = Register.open(db)
    try:
        after = dump(db)
        assert after.pop("feed_heads") == []
        # migration 3 adds instructions.verified_at (NULL): every row kept as it was
        after["instructions"] = [r[:-1] for r in after["instructions"]]
        assert after == before  # every row kept
        assert set(reg.state.snapshot().domains) == {"a.kz"}
        assert reg.held_through("mci") == 1
        reg.store_head(head(1), T0)
        assert reg.stored_head("mci") == head(1)
    finally:
        reg.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    conn.close()
