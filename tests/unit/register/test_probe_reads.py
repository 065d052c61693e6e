"""What the prober and `kzgate verify` read from the register (issue 14): candidates,
verified_at (migration 3) and mark_verified."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from kzgate.model import Candidate, InstructionRef, Target
from kzgate.register import schema
from kzgate.register.store import Register
from tests.support.register_fixtures import T0, dump, restrict, resume

A = InstructionRef("mci", "100", "2026-11-01")
B = InstructionRef("mci", "200", "2026-11-01")


def resumed(reg: Register, task_id: str, seq: int, number: str, at: dt.datetime) -> None:
    reg.record(resume(task_id, seq, number), at)
    reg.set_receipt("mci", task_id, {"status": "applied"}, at)


def test_candidates_are_probed_kinds_of_active_instructions_in_rowid_order(reg: Register) -> None:
    targets = [("domain", "a.kz"), ("url", "http://a.kz/x"), ("ip", "10.0.0.1")]
    reg.record(restrict("t1", 1, "100", [*targets, ("cidr", "10.1.0.0/24")]), T0)
    got = reg.probe_candidates(resumed_since=T0, restricted=10, offset=0)
    assert got == [
        Candidate(Target("domain", "a.kz"), A),
        Candidate(Target("ip", "10.0.0.1"), A),
        Candidate(Target("cidr", "10.1.0.0/24"), A),
    ]


def test_the_offset_rotates_and_wraps(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", [("domain", f"n{i}.kz") for i in range(10)]), T0)
    names = [
        [c.target.value for c in reg.probe_candidates(resumed_since=T0, restricted=4, offset=o)]
        for o in (0, 4, 8)
    ]
    assert names == [
        ["n0.kz", "n1.kz", "n2.kz", "n3.kz"],
        ["n3.kz", "n4.kz", "n5.kz", "n6.kz"],  # rowids start at 1: offset 4 is the 4th row
        ["n7.kz", "n8.kz", "n9.kz", "n0.kz"],  # wrapped round
    ]
    # an offset past the end is taken modulo the highest rowid
    assert len(reg.probe_candidates(resumed_since=T0, restricted=4, offset=10**9)) == 4


def test_recently_resumed_instructions_come_with_every_target(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", [("domain", "a.kz"), ("ip", "10.0.0.1")]), T0)
    reg.record(restrict("t2", 2, "200", [("domain", "b.kz")]), T0)
    reg.record(restrict("t3", 3, "300", [("domain", "c.kz")]), T0)
    old, new = T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=30)
    resumed(reg, "r1", 4, "100", new)
    resumed(reg, "r3", 5, "300", old)
    # in another UTC offset, one second after `new`: excluded; one second before: included
    since = (new - dt.timedelta(seconds=1)).astimezone(dt.UTC)
    got = reg.probe_candidates(resumed_since=since, restricted=10, offset=0)
    assert got == [
        Candidate(Target("domain", "b.kz"), B),
        Candidate(Target("domain", "a.kz"), A, new),
        Candidate(Target("ip", "10.0.0.1"), A, new),
    ]
    later = (new + dt.timedelta(seconds=1)).astimezone(dt.UTC)
    assert [c.resumed_at for c in reg.probe_candidates(
        resumed_since=later, restricted=10, offset=0)] == [None]  # fmt: skip


def test_instruction_and_all_candidates(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", [("domain", "a.kz"), ("app", "com.x")]), T0)
    reg.record(restrict("t2", 2, "200", [("ip", "10.0.0.2")]), T0)
    resumed(reg, "r1", 3, "100", T0)
    assert reg.instruction_candidates(A) == [Candidate(Target("domain", "a.kz"), A, T0)]
    assert reg.instruction_candidates(B) == [Candidate(Target("ip", "10.0.0.2"), B)]
    assert reg.instruction_candidates(InstructionRef("mci", "9", "2026-01-01")) == []
    assert list(reg.all_candidates()) == [
        Candidate(Target("domain", "a.kz"), A, T0),
        Candidate(Target("ip", "10.0.0.2"), B),
    ]


def test_all_candidates_streams_in_chunks(reg: Register, monkeypatch: pytest.MonkeyPatch) -> None:
    from kzgate.register import reads

    monkeypatch.setattr(reads, "ALL_CANDIDATES_CHUNK", 3)
    reg.record(restrict("t1", 1, "100", [("domain", f"n{i}.kz") for i in range(7)]), T0)
    assert [c.target.value for c in reg.all_candidates()] == [f"n{i}.kz" for i in range(7)]


def test_mark_verified_sets_once_with_an_audit_row(reg: Register) -> None:
    reg.record(restrict("t1", 1, "100", [("domain", "a.kz")]), T0)
    assert reg.mark_verified(A, T0) is False  # still active: nothing to verify lifted
    assert reg.resume_of("mci", "t1") is None  # a restrict, not a resume
    resumed(reg, "r1", 2, "100", T0)
    assert reg.resume_of("mci", "r1") == (A, None)
    at = T0 + dt.timedelta(seconds=3)
    assert reg.mark_verified(A, at) is True
    assert reg.mark_verified(A, at + dt.timedelta(seconds=9)) is False
    assert reg.resume_of("mci", "r1") == (A, at.isoformat())
    rows = [r for r in reg.audit_rows() if r.event == "lift_verified"]
    assert len(rows) == 1 and '"number":"100"' in rows[0].data
    assert reg.audit_verify().ok


def test_a_schema_2_register_migrates_keeping_every_row(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as old_kzgate:
        old_kzgate.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
        old = Register.open(db)
        old.record(restrict("t1", 1, "100", [("domain", "a.kz")]), T0)
        old.record(resume("r1", 2, "100"), T0)
        old.close()
    before = dump(db)
    reg = Register.open(db)
    try:
        after = dump(db)
        assert [r[:-1] for r in after.pop("instructions")] == before.pop("instructions")
        assert after == before
        assert reg.resume_of("mci", "r1") == (A, None)
        assert reg.mark_verified(A, T0)
    finally:
        reg.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3 == len(schema.MIGRATIONS)
    conn.close()


def _vm_steps(reg: Register, offset: int) -> int:
    """SQLite virtual-machine steps (in thousands) of one round's read: work, not time."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    reg._conn.set_progress_handler(count, 1000)
    try:
        reg.probe_candidates(resumed_since=T0, restricted=20, offset=offset)
    finally:
        reg._conn.set_progress_handler(None, 1000)
    return steps


def test_a_round_reads_a_bounded_slice_of_100k_targets(reg: Register) -> None:
    reg.record(restrict("s", 1, "1", [("domain", f"n{i}.kz") for i in range(1000)]), T0)
    small = max(_vm_steps(reg, o) for o in (0, 500, 999))
    reg.record(restrict("b", 2, "2", [("domain", f"m{i}.kz") for i in range(100_000)]), T0)
    large = max(_vm_steps(reg, o) for o in (0, 50_000, 100_990))
    # A full scan or sort of the table would cost about 100 times the small one's.
    assert large <= small + 2, (small, large)
