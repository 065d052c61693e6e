"""The audit chain: pure hashing and verification, and the rows the register writes."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from kzgate.register.audit import (
    GENESIS,
    AuditRow,
    canonical_json,
    export_csv,
    export_json,
    make_row,
    row_hash,
    verify_chain,
)
from kzgate.register.store import Register
from tests.support.register_fixtures import T0, restrict, resume


def chain(n: int) -> list[AuditRow]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        row = make_row(prev, seq, f"2026-11-22T10:00:0{seq}+05:00", "task_received", {"n": seq})
        rows.append(row)
        prev = row.hash
    return rows


def test_row_hash_is_the_documented_formula() -> None:
    import hashlib

    expected = hashlib.sha256(b"00\n1\nat\nevent\n{}").hexdigest()
    assert row_hash("00", 1, "at", "event", "{}") == expected
    assert canonical_json({"b": 1, "a": "Қ"}) == '{"a":"Қ","b":1}'


def test_intact_chain_verifies() -> None:
    result = verify_chain(chain(5))
    assert (result.ok, result.rows, result.first_bad) == (True, 5, None)
    assert verify_chain([]).ok


@pytest.mark.parametrize(
    ("mutate", "bad"),
    [
        (lambda rows: rows.__setitem__(2, replace(rows[2], data='{"n":99}')), 3),
        (lambda rows: rows.__setitem__(0, replace(rows[0], at="2027-01-01")), 1),
        (lambda rows: rows.pop(2), 4),
        (lambda rows: rows.pop(0), 2),
        (lambda rows: rows.__setitem__(4, replace(rows[4], prev=GENESIS)), 5),
    ],
)
def test_tampering_is_found_at_the_right_row(mutate: object, bad: int) -> None:
    rows = chain(5)
    mutate(rows)  # type: ignore[operator]
    result = verify_chain(rows)
    assert not result.ok
    assert result.first_bad == bad


def populated(db: Path) -> Register:
    reg = Register.open(db)
    reg.record(restrict("t1", 1, "100", [("domain", "example.kz")]), T0)
    reg.record(resume("t2", 2, "100"), T0)
    reg.record(resume("t3", 3, "200"), T0)
    reg.record(restrict("t4", 4, "200", [("domain", "b.kz")]), T0)
    reg.set_receipt("mci", "t1", {"status": "applied"}, T0)
    return reg


def test_register_writes_one_chain_in_task_transactions(tmp_path: Path) -> None:
    reg = populated(tmp_path / "r.db")
    try:
        rows = list(reg.audit_rows())
        assert [r.event for r in rows] == [
            "task_received",
            "instruction_activated",
            "task_received",
            "instruction_resumed",
            "task_received",
            "resume_pending",
            "task_received",
            "instruction_cancelled",
            "receipt_issued",
        ]
        first = json.loads(rows[0].data)
        assert first["iss"] == "mci" and first["id"] == "t1" and first["seq"] == 1
        assert first["instruction"] == {"number": "100", "date": "2026-11-01"}
        assert len(first["sha256"]) == 64
        assert reg.audit_verify().ok
    finally:
        reg.close()


def test_refused_task_writes_no_audit_row(tmp_path: Path) -> None:
    reg = populated(tmp_path / "r.db")
    try:
        n = len(list(reg.audit_rows()))
        with pytest.raises(Exception, match="seq"):
            reg.record(restrict("t9", 1, "300", [("domain", "c.kz")]), T0)
        assert len(list(reg.audit_rows())) == n
    finally:
        reg.close()


def test_triggers_forbid_update_and_delete(tmp_path: Path) -> None:
    populated(tmp_path / "r.db").close()
    conn = sqlite3.connect(tmp_path / "r.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET data = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 2")
    conn.close()


def test_tampered_row_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    populated(db).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("""UPDATE audit SET data = '{"id":"forged"}' WHERE seq = 3""")
    conn.commit()
    conn.close()
    reg = Register.open(db)
    try:
        result = reg.audit_verify()
        assert (result.ok, result.first_bad) == (False, 3)
        assert "3" in result.reason
    finally:
        reg.close()


def test_exports(tmp_path: Path) -> None:
    reg = populated(tmp_path / "r.db")
    try:
        rows = list(reg.audit_rows())
    finally:
        reg.close()
    out = io.StringIO()
    assert export_json(rows, out) == len(rows)
    parsed = json.loads(out.getvalue())
    back = [AuditRow(**(p | {"data": canonical_json(p["data"])})) for p in parsed]
    assert back == rows  # the JSON export can be verified again
    out = io.StringIO()
    assert export_csv(rows, out) == len(rows)
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0] == ["seq", "at", "event", "data", "prev", "hash"]
    assert verify_chain(AuditRow(int(r[0]), *r[1:]) for r in table[1:]).ok
