"""The SQLite register: task-protocol.md §4 rules, atomicity, reopen, corruption, migration."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from kzgate.errors import Conflict, Forbidden
from kzgate.model import InstructionRef, Task
from kzgate.register.store import MIGRATIONS, Register, RegisterError
from tests.support.register_fixtures import T0, dump, restrict, resume

DOM = [("domain", "example.kz")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "kzgate.db"


def assert_refused(reg: Register, db: Path, task: Task, error: type[Exception], text: str) -> None:
    """The task is refused with ``error`` and NOTHING changes, on disk or in memory."""
    before, state_before = dump(db), reg.state.snapshot()
    counts_before = reg.state.counts()
    with pytest.raises(error, match=text):
        reg.record(task, T0)
    assert dump(db) == before
    assert reg.state.snapshot() == state_before
    assert reg.state.counts() == counts_before


def test_open_creates_parent_and_schema(db: Path) -> None:
    reg = Register.open(db)
    reg.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_open_without_create_refuses_missing_file(db: Path) -> None:
    with pytest.raises(RegisterError, match=str(db)):
        Register.open(db, create=False)
    assert not db.exists()


def test_restrict_applies_and_duplicate_returns_stored_receipt(reg: Register) -> None:
    task = restrict("t1", 1, "100", [*DOM, ("cidr", "10.0.0.0/24"), ("url", "https://x.kz/")])
    rec = reg.record(task, T0)
    assert rec.status == "applied"
    assert rec.diff.domains_added == {"example.kz": task.instruction}
    assert len(rec.diff.prefixes_added) == 1
    assert reg.get_task_status("mci", "t1") == ("applied", T0)
    assert reg.unapplied_tasks() == [("mci", "t1")]
    receipt = {"status": "applied", "task": {"iss": "mci", "id": "t1", "seq": 1}}
    reg.set_receipt("mci", "t1", receipt, T0 + dt.timedelta(milliseconds=4))
    assert reg.unapplied_tasks() == []
    dup = reg.record(task, T0 + dt.timedelta(seconds=9))
    assert dup.status == "duplicate"
    assert dup.stored_receipt == receipt
    assert dup.received_at == T0
    assert dup.diff.is_empty()


def test_accepted_is_unapplied_until_an_applied_receipt(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", DOM), T0)
    reg.set_receipt("mci", "t1", {"status": "accepted"}, None)
    assert reg.get_task_status("mci", "t1") == ("accepted", T0)
    assert reg.unapplied_tasks() == [("mci", "t1")]
    reg.set_receipt("mci", "t1", {"status": "applied"}, T0)
    assert reg.unapplied_tasks() == []


def test_same_id_other_bytes_is_conflict(reg: Register, db: Path) -> None:
    reg.record(restrict("t1", 1, "100", DOM), T0)
    other = restrict("t1", 2, "101", DOM, payload=b'{"other": true}')
    assert_refused(reg, db, other, Conflict, "mci/t1")


def test_seq_reused_is_conflict(reg: Register, db: Path) -> None:
    reg.record(restrict("t1", 1, "100", DOM), T0)
    assert_refused(reg, db, restrict("t2", 1, "101", DOM), Conflict, "seq 1")
    # another issuer may use the same seq
    assert reg.record(restrict("s1", 1, "100", DOM, iss="sts"), T0).status == "applied"


def test_second_restrict_for_instruction_is_conflict(reg: Register, db: Path) -> None:
    reg.record(restrict("t1", 1, "100", DOM), T0)
    assert_refused(reg, db, restrict("t2", 2, "100", [("domain", "b.kz")]), Conflict, "No. 100")


def test_resume_removes_and_second_resume_conflicts(reg: Register, db: Path) -> None:
    reg.record(restrict("t1", 1, "100", [*DOM, ("ip", "192.0.2.1")]), T0)
    rec = reg.record(resume("t2", 2, "100"), T0)
    assert rec.status == "applied"
    assert rec.diff.domains_removed == {"example.kz"}
    assert len(rec.diff.prefixes_removed) == 1
    assert reg.state.snapshot().domains == {}
    assert reg.instructions(status="resumed")[0]["resume_task"] == "t2"
    assert_refused(reg, db, resume("t3", 3, "100"), Conflict, "already resumed")


def test_resume_first_then_restrict_is_cancelled(reg: Register, db: Path) -> None:
    rec = reg.record(resume("t1", 1, "100"), T0)
    assert (rec.status, rec.diff.is_empty()) == ("pending", True)
    assert reg.get_task_status("mci", "t1") == ("pending", T0)
    assert_refused(reg, db, resume("t2", 2, "100"), Conflict, "already pending")
    rec = reg.record(restrict("t3", 3, "100", DOM), T0)
    assert (rec.status, rec.diff.is_empty()) == ("cancelled", True)
    assert reg.state.snapshot().domains == {}
    [inst] = reg.instructions(status="cancelled")
    assert (inst["restrict_task"], inst["resume_task"]) == ("t3", "t1")
    assert inst["targets"] == [{"type": "domain", "value": "example.kz"}]
    assert_refused(reg, db, restrict("t4", 4, "100", DOM), Conflict, "already stored")
    assert_refused(reg, db, resume("t5", 5, "100"), Conflict, "already cancelled")


def test_resume_of_other_issuers_instruction_is_forbidden(reg: Register, db: Path) -> None:
    reg.record(restrict("t1", 1, "100", DOM), T0)
    task = resume("s1", 1, "100", iss="sts")
    assert_refused(reg, db, task, Forbidden, "No. 100 of 2026-11-01 belongs to issuer 'mci'")


def test_pending_tombstone_of_another_issuer_does_not_forbid(reg: Register) -> None:
    reg.record(resume("s1", 1, "100", iss="sts"), T0)
    assert reg.record(resume("t1", 1, "100"), T0).status == "pending"


def test_overlapping_instructions_resume_one_keeps_other(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", [*DOM, ("cidr", "10.0.0.0/24")]), T0)
    reg.record(restrict("t2", 2, "101", [*DOM, ("ip", "10.0.0.5")]), T0)
    rec = reg.record(resume("t3", 3, "100"), T0)
    assert rec.diff.domains_removed == frozenset()
    assert set(map(str, rec.diff.prefixes_added)) == {"10.0.0.5/32"}
    snap = reg.state.snapshot()
    assert set(snap.domains) == {"example.kz"}
    assert set(map(str, snap.prefixes)) == {"10.0.0.5/32"}


def test_failed_commit_leaves_state_untouched(reg: Register, db: Path) -> None:
    """A storage error inside the transaction rolls back and never reaches the state."""
    before = dump(db)
    bad = restrict("t1", 1, "100", DOM)
    object.__setattr__(bad, "type", "bogus")  # the CHECK constraint refuses it at INSERT
    with pytest.raises(RegisterError, match=str(db)):
        reg.record(bad, T0)
    assert dump(db) == before
    assert reg.state.snapshot().domains == {}


def test_reopen_rebuilds_identical_state(db: Path) -> None:
    reg = Register.open(db)
    reg.record(restrict("t1", 1, "100", [*DOM, ("cidr", "10.0.0.0/16"), ("ip", "::1")]), T0)
    reg.record(restrict("t2", 2, "101", [("domain", "b.kz"), ("ip", "10.0.3.4")]), T0)
    reg.record(restrict("t3", 4, "102", [("domain", "c.kz"), ("app", "kz.c")]), T0)
    reg.record(resume("t4", 5, "101"), T0)
    snap, counts = reg.state.snapshot(), reg.state.counts()
    reg.close()
    again = Register.open(db, create=False)
    try:
        assert again.state.snapshot() == snap
        assert again.state.counts() == counts
        assert again.audit_verify().ok
    finally:
        again.close()


def test_listing_gaps_and_stats(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", DOM), T0)
    reg.record(restrict("t5", 5, "101", [("domain", "b.kz"), ("cidr", "10.0.0.0/8")]), T0)
    reg.record(resume("t7", 7, "100"), T0)
    reg.record(restrict("s1", 2, "1", DOM, iss="sts"), T0)
    assert reg.seq_gaps() == {"mci": [2, 3, 4, 6], "sts": [1]}
    assert reg.seq_gap_counts() == {"mci": 4, "sts": 1}
    active = reg.instructions()
    assert [(i["iss"], i["number"]) for i in active] == [("mci", "101"), ("sts", "1")]
    assert active[0]["targets"] == [
        {"type": "domain", "value": "b.kz"},
        {"type": "cidr", "value": "10.0.0.0/8"},
    ]
    assert len(reg.instructions(status=None)) == 3
    assert len(reg.instructions(status=None, limit=1, offset=2)) == 1
    stats = reg.stats()
    assert stats["instructions"] == {"active": 2, "resumed": 1}
    assert stats["targets"] == {"domain": 2, "cidr": 1}
    assert stats["tasks"] == {"restrict/applied": 3, "resume/applied": 1}
    assert stats["last_task"]["id"] == "s1"


def test_seq_gap_list_is_capped(reg: Register) -> None:
    reg.record(restrict("t1", 5000, "100", DOM), T0)
    assert len(reg.seq_gaps()["mci"]) == 1000
    assert reg.seq_gap_counts() == {"mci": 4999}


# -- refusing bad files -----------------------------------------------------------


def filled(db: Path) -> bytes:
    """A register whose middle is mostly task payloads: pages that loading the
    state never reads, so only the integrity check on open can notice damage there."""
    reg = Register.open(db)
    for n in range(30):
        targets = [("domain", f"d{n}-{i}.example.kz") for i in range(20)]
        payload = bytes([n]) * 20_000
        reg.record(restrict(f"t{n}", n + 1, str(n), targets, payload=payload), T0)
    reg.close()  # checkpoints the WAL into the file
    return db.read_bytes()


def test_garbage_file_is_refused_and_kept(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database at all\n" * 100)
    with pytest.raises(RegisterError, match=str(db)):
        Register.open(db)
    assert db.read_bytes() == b"this is not a database at all\n" * 100


@pytest.mark.parametrize("where", [1 / 3, 1 / 2, 2 / 3])
def test_garbage_pages_are_refused_and_kept(db: Path, where: float) -> None:
    data = bytearray(filled(db))
    at = int(len(data) * where)
    data[at : at + 8192] = b"\xa5" * 8192
    db.write_bytes(bytes(data))
    with pytest.raises(RegisterError, match=str(db)):
        Register.open(db)
    assert db.read_bytes() == bytes(data)


def test_truncated_file_is_refused_and_kept(db: Path) -> None:
    data = filled(db)
    db.write_bytes(data[: len(data) // 3])
    with pytest.raises(RegisterError, match=str(db)):
        Register.open(db)
    assert db.read_bytes() == data[: len(data) // 3]


def test_foreign_sqlite_file_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(RegisterError, match="not a kzgate register"):
        Register.open(db)


def test_newer_schema_is_refused(db: Path) -> None:
    Register.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RegisterError, match="newer"):
        Register.open(db)


def test_migration_from_empty_v0_file(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")  # writes a real, empty SQLite file
    conn.close()
    assert db.stat().st_size > 0
    reg = Register.open(db)
    try:
        assert reg.record(restrict("t1", 1, "100", DOM), T0).status == "applied"
        assert reg.state.snapshot().domains == {
            "example.kz": InstructionRef("mci", "100", "2026-11-01")
        }
    finally:
        reg.close()
