"""The register: tasks, instructions, targets and the audit chain in one SQLite file.

Every task is one transaction (WAL, ``synchronous=FULL``: durable at COMMIT);
every check of task-protocol.md §4 runs inside it, so a refused task changes
nothing. The in-memory ``EffectiveState`` is changed only after COMMIT, so it
never shows what the disk does not hold.

Not thread-safe by itself beyond one internal lock: the daemon calls it from
one worker thread (or the loop) at a time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kzgate.errors import Conflict, Forbidden
from kzgate.model import Diff, InstructionRef, Target, Task
from kzgate.register.audit import GENESIS, AuditEvent, AuditRow, VerifyResult, make_row
from kzgate.register.audit import verify_chain as _verify_chain
from kzgate.register.state import EffectiveState

APPLICATION_ID = 0x6B7A6774  # "kzgt": tells our files from other SQLite files
GAP_LIST_CAP = 1000

# Append only: migration i (0-based) takes user_version i to i + 1.
MIGRATIONS: list[str] = [
    """
    PRAGMA application_id = 1803183988;
    CREATE TABLE tasks (
        rowid INTEGER PRIMARY KEY,
        iss TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('restrict', 'resume')),
        kid TEXT NOT NULL,
        payload BLOB NOT NULL,
        sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL,
        status TEXT NOT NULL,
        receipt TEXT,
        applied_at TEXT,
        UNIQUE (iss, id),
        UNIQUE (iss, seq)
    );
    CREATE TABLE instructions (
        rowid INTEGER PRIMARY KEY,
        iss TEXT NOT NULL,
        number TEXT NOT NULL,
        date TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'resumed', 'pending', 'cancelled')),
        restrict_task INTEGER REFERENCES tasks (rowid),
        resume_task INTEGER REFERENCES tasks (rowid),
        authority TEXT,
        ground TEXT,
        reason TEXT,
        UNIQUE (iss, number, date)
    );
    CREATE INDEX instructions_status ON instructions (status);
    CREATE INDEX instructions_number_date ON instructions (number, date);
    CREATE TABLE targets (
        instruction INTEGER NOT NULL REFERENCES instructions (rowid),
        kind TEXT NOT NULL,
        value TEXT NOT NULL
    );
    CREATE INDEX targets_instruction ON targets (instruction);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    """,
]

RecordStatus = Literal["applied", "pending", "cancelled", "duplicate"]
# "partial": in force everywhere but where an enforcer cannot represent a target
TASK_STATUSES = frozenset({"applied", "partial", "accepted", "pending", "cancelled"})


class RegisterError(Exception):
    """The register file cannot be used (unreadable, corrupt, foreign, newer schema)."""


@dataclass(frozen=True)
class Recorded:
    status: RecordStatus
    diff: Diff
    stored_receipt: dict[str, Any] | None
    received_at: datetime


def _ts(when: datetime) -> str:
    return when.isoformat()


class Register:
    """The durable store of tasks and instructions, and the effective state they imply."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self.state = EffectiveState()

    # -- opening ------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Register:
        """Open (and migrate) the register at ``path`` and load the effective state.

        A file that exists but is not an intact kzgate register is refused with
        RegisterError, never replaced: it may be the only record of what was ordered.
        """
        path = Path(path)
        if not path.exists():
            if not create:
                raise RegisterError(f"{path}: register not found")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegisterError(
                    f"{path}: cannot create the state directory {path.parent}: {exc.strerror}"
                ) from None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise RegisterError(f"{path}: cannot open: {exc}") from exc
        try:
            reg = cls(path, conn)
            reg._check_and_migrate()
            reg.state = reg._load_state()
        except sqlite3.Error as exc:
            conn.close()
            raise RegisterError(f"{path}: not a readable kzgate register: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return reg

    def _check_and_migrate(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        check = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise RegisterError(f"{self.path}: corrupt register: {'; '.join(check[:5])}")
        if version > len(MIGRATIONS):
            raise RegisterError(
                f"{self.path}: schema version {version} is newer than this kzgate "
                f"({len(MIGRATIONS)})"
            )
        if version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise RegisterError(f"{self.path}: an SQLite file, but not a kzgate register")
        elif app_id != APPLICATION_ID:
            raise RegisterError(f"{self.path}: an SQLite file, but not a kzgate register")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RegisterError(f"{self.path}: cannot use WAL journal (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        for number in range(version, len(MIGRATIONS)):
            # executescript commits any open transaction itself, so the
            # transaction is written into the script; a failure leaves it open.
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{MIGRATIONS[number]}\n"
                    f"PRAGMA user_version = {number + 1};\nCOMMIT;"
                )
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _load_state(self) -> EffectiveState:
        # Refs first (few rows), then targets alone: reading iss/number/date on
        # every target row costs more than the whole state build.
        with _Transaction(self._conn, "BEGIN"):  # one snapshot for both reads
            return self._read_state()

    def _read_state(self) -> EffectiveState:
        refs = {
            row_id: InstructionRef(iss, number, date)
            for row_id, iss, number, date in self._conn.execute(
                "SELECT rowid, iss, number, date FROM instructions WHERE status = 'active'"
            )
        }
        cur = self._conn.execute(
            "SELECT instruction, kind, value FROM targets WHERE instruction IN"
            " (SELECT rowid FROM instructions WHERE status = 'active')"
        )
        return EffectiveState.from_rows((refs[i], kind, value) for i, kind, value in cur)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- recording a task ---------------------------------------------------

    def record(self, task: Task, received_at: datetime) -> Recorded:
        """Store ``task`` durably per task-protocol.md §4 and return what it changes.

        Conflict/Forbidden (and any storage error) roll back: nothing is changed.
        """
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcome = self._record_in_tx(task, received_at)
                if outcome[0] == "duplicate":
                    conn.execute("ROLLBACK")
                else:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise RegisterError(f"{self.path}: cannot store task: {exc}") from exc
                raise
            status, stored_receipt, stored_at, change = outcome
            diff = Diff()
            if change is not None:  # only now that it is on disk
                verb, ref, targets = change
                diff = (
                    self.state.add(ref, targets)
                    if verb == "add"
                    else self.state.remove(ref, targets)
                )
            return Recorded(status, diff, stored_receipt, stored_at)

    def _record_in_tx(
        self, task: Task, received_at: datetime
    ) -> tuple[
        RecordStatus,
        dict[str, Any] | None,
        datetime,
        tuple[str, InstructionRef, tuple[Target, ...]] | None,
    ]:
        conn = self._conn
        name = f"task {task.iss}/{task.id}"
        row = conn.execute(
            "SELECT sha256, receipt, received_at FROM tasks WHERE iss = ? AND id = ?",
            (task.iss, task.id),
        ).fetchone()
        if row is not None:
            if row[0] != task.sha256:
                raise Conflict(f"{name} is already stored with other payload bytes")
            receipt = json.loads(row[1]) if row[1] is not None else None
            return "duplicate", receipt, datetime.fromisoformat(row[2]), None
        other = conn.execute(
            "SELECT id FROM tasks WHERE iss = ? AND seq = ?", (task.iss, task.seq)
        ).fetchone()
        if other is not None:
            raise Conflict(
                f"seq {task.seq} of issuer '{task.iss}' is already used by task {other[0]}"
            )
        ref = InstructionRef(task.iss, task.instruction.number, task.instruction.date)
        inst = conn.execute(
            "SELECT rowid, status, restrict_task, resume_task FROM instructions"
            " WHERE iss = ? AND number = ? AND date = ?",
            (ref.iss, ref.number, ref.date),
        ).fetchone()
        at = _ts(received_at)
        audit_task = {
            "iss": task.iss,
            "id": task.id,
            "seq": task.seq,
            "type": task.type,
            "sha256": task.sha256,
            "instruction": {"number": ref.number, "date": ref.date},
        }
        audit_inst: dict[str, Any] = {
            "iss": ref.iss,
            "number": ref.number,
            "date": ref.date,
            "task": task.id,
        }
        if task.type == "restrict":
            if inst is not None and inst[2] is not None:
                raise Conflict(f"instruction {ref.label()} is already stored ({name} repeats it)")
            status: RecordStatus = "applied" if inst is None else "cancelled"
            task_row = self._insert_task(task, at, status)
            self._append_audit(at, "task_received", audit_task)
            meta = (task.authority, task.ground, task.reason)
            if inst is None:
                inst_row = conn.execute(
                    "INSERT INTO instructions (iss, number, date, status, restrict_task,"
                    " authority, ground, reason) VALUES (?, ?, ?, 'active', ?, ?, ?, ?)",
                    (ref.iss, ref.number, ref.date, task_row, *meta),
                ).lastrowid
            else:  # a resume came first: keep the targets on record, never enforce them
                inst_row = inst[0]
                conn.execute(
                    "UPDATE instructions SET status = 'cancelled', restrict_task = ?,"
                    " authority = ?, ground = ?, reason = ? WHERE rowid = ?",
                    (task_row, *meta, inst_row),
                )
            conn.executemany(
                "INSERT INTO targets (instruction, kind, value) VALUES (?, ?, ?)",
                ((inst_row, t.kind, t.value) for t in task.targets),
            )
            audit_inst["targets"] = len(task.targets)
            if inst is None:
                self._append_audit(at, "instruction_activated", audit_inst)
                return status, None, received_at, ("add", ref, task.targets)
            self._append_audit(at, "instruction_cancelled", audit_inst)
            return status, None, received_at, None
        # resume
        if inst is not None:
            if inst[1] != "active":
                raise Conflict(f"instruction {ref.label()} is already {inst[1]} ({name})")
            task_row = self._insert_task(task, at, "applied")
            self._append_audit(at, "task_received", audit_task)
            conn.execute(
                "UPDATE instructions SET status = 'resumed', resume_task = ? WHERE rowid = ?",
                (task_row, inst[0]),
            )
            targets = tuple(
                Target(kind, value)
                for kind, value in conn.execute(
                    "SELECT kind, value FROM targets WHERE instruction = ?", (inst[0],)
                )
            )
            self._append_audit(at, "instruction_resumed", audit_inst)
            return "applied", None, received_at, ("remove", ref, targets)
        owner = conn.execute(
            "SELECT iss FROM instructions WHERE number = ? AND date = ? AND iss != ?"
            " AND restrict_task IS NOT NULL ORDER BY iss LIMIT 1",
            (ref.number, ref.date, ref.iss),
        ).fetchone()
        if owner is not None:
            raise Forbidden(
                f"instruction No. {ref.number} of {ref.date} belongs to issuer '{owner[0]}'"
            )
        task_row = self._insert_task(task, at, "pending")
        self._append_audit(at, "task_received", audit_task)
        conn.execute(
            "INSERT INTO instructions (iss, number, date, status, resume_task)"
            " VALUES (?, ?, ?, 'pending', ?)",
            (ref.iss, ref.number, ref.date, task_row),
        )
        self._append_audit(at, "resume_pending", audit_inst)
        return "pending", None, received_at, None

    def _insert_task(self, task: Task, at: str, status: str) -> int:
        cur = self._conn.execute(
            "INSERT INTO tasks (iss, id, seq, type, kid, payload, sha256, received_at, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.iss,
                task.id,
                task.seq,
                task.type,
                task.kid,
                task.payload,
                task.sha256,
                at,
                status,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _append_audit(self, at: str, event: AuditEvent, data: dict[str, Any]) -> None:
        """Chain one row onto the audit log, inside the caller's transaction."""
        last = self._conn.execute(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        row = make_row(prev, seq, at, event, data)
        self._conn.execute(
            "INSERT INTO audit (seq, at, event, data, prev, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (row.seq, row.at, row.event, row.data, row.prev, row.hash),
        )

    # -- receipts and task status ---------------------------------------------

    def set_receipt(
        self, iss: str, id: str, receipt: dict[str, Any], applied_at: datetime | None
    ) -> None:
        """Store the receipt durably; the task's status becomes the receipt's ``status``
        when that is a task status (applied, accepted, pending, cancelled)."""
        status = receipt.get("status")
        at = _ts(applied_at or datetime.now(UTC))
        with self._lock, self._tx():
            cur = self._conn.execute(
                "UPDATE tasks SET receipt = ?, applied_at = ?,"
                " status = CASE WHEN ? THEN ? ELSE status END WHERE iss = ? AND id = ?",
                (
                    json.dumps(receipt, sort_keys=True),
                    _ts(applied_at) if applied_at else None,
                    status in TASK_STATUSES,
                    status,
                    iss,
                    id,
                ),
            )
            if cur.rowcount != 1:
                raise KeyError(f"task {iss}/{id} is not stored")
            self._append_audit(
                at,
                "receipt_issued",
                {"iss": iss, "id": id, "status": status, "applied_at": receipt.get("applied_at")},
            )

    def set_status(self, iss: str, id: str, status: str) -> None:
        if status not in TASK_STATUSES:
            raise ValueError(f"unknown task status {status!r}")
        with self._lock, self._tx():
            cur = self._conn.execute(
                "UPDATE tasks SET status = ? WHERE iss = ? AND id = ?", (status, iss, id)
            )
            if cur.rowcount != 1:
                raise KeyError(f"task {iss}/{id} is not stored")

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    def get_receipt(self, iss: str, id: str) -> dict[str, Any] | None:
        row = self._one("SELECT receipt FROM tasks WHERE iss = ? AND id = ?", (iss, id))
        return json.loads(row[0]) if row and row[0] is not None else None

    def get_task_status(self, iss: str, id: str) -> tuple[str, datetime] | None:
        row = self._one("SELECT status, received_at FROM tasks WHERE iss = ? AND id = ?", (iss, id))
        return (row[0], datetime.fromisoformat(row[1])) if row else None

    def unapplied_tasks(self) -> list[tuple[str, str]]:
        """Tasks stored but not known to be enforced everywhere (retry these on start)."""
        with self._lock:
            return [
                (r[0], r[1])
                for r in self._conn.execute(
                    "SELECT iss, id FROM tasks WHERE status = 'accepted' OR receipt IS NULL"
                    " ORDER BY rowid"
                )
            ]

    def task_identity(self, iss: str, id: str) -> tuple[int, str] | None:
        """A stored task's (seq, sha256), for signing a receipt it never got."""
        row = self._one("SELECT seq, sha256 FROM tasks WHERE iss = ? AND id = ?", (iss, id))
        return (int(row[0]), str(row[1])) if row else None

    def restrict_targets(
        self, iss: str, id: str
    ) -> tuple[InstructionRef, tuple[Target, ...]] | None:
        """The instruction a stored restrict task made, and its targets; None for a resume."""
        with self._lock:
            row = self._conn.execute(
                "SELECT i.rowid, i.iss, i.number, i.date FROM instructions i"
                " JOIN tasks t ON t.rowid = i.restrict_task WHERE t.iss = ? AND t.id = ?",
                (iss, id),
            ).fetchone()
            if row is None:
                return None
            targets = tuple(
                Target(kind, value)
                for kind, value in self._conn.execute(
                    "SELECT kind, value FROM targets WHERE instruction = ? ORDER BY rowid",
                    (row[0],),
                )
            )
        return InstructionRef(row[1], row[2], row[3]), targets

    def active_instruction_count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM instructions WHERE status = 'active'", ())[0])

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    # -- listings and statistics ----------------------------------------------

    def instructions(
        self,
        *,
        status: str | None = "active",
        limit: int = 1000,
        offset: int = 0,
        targets_limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Instructions (oldest first) with their tasks' ids, their first ``targets_limit``
        targets and the count of all of them (an instruction may hold 100,000)."""
        where, args = ("WHERE i.status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = self._conn.execute(
                "SELECT i.rowid, i.iss, i.number, i.date, i.status, i.authority, i.ground,"
                " i.reason, rt.id, st.id FROM instructions i"
                " LEFT JOIN tasks rt ON rt.rowid = i.restrict_task"
                " LEFT JOIN tasks st ON st.rowid = i.resume_task"
                f" {where} ORDER BY i.rowid LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            out: list[dict[str, Any]] = []
            for r in rows:
                targets = [
                    {"type": k, "value": v}
                    for k, v in self._conn.execute(
                        "SELECT kind, value FROM targets WHERE instruction = ?"
                        " ORDER BY rowid LIMIT ?",
                        (r[0], targets_limit),
                    )
                ]
                total = self._conn.execute(
                    "SELECT COUNT(*) FROM targets WHERE instruction = ?", (r[0],)
                ).fetchone()[0]
                keys = ("iss", "number", "date", "status", "authority", "ground", "reason")
                item: dict[str, Any] = dict(zip(keys, r[1:8], strict=True))
                item.update(
                    restrict_task=r[8], resume_task=r[9], targets=targets, targets_total=total
                )
                out.append(item)
            return out

    def seq_gaps(self) -> dict[str, list[int]]:
        """Per issuer, the seq numbers missing between 1 and the highest seen (first 1000)."""
        gaps: dict[str, list[int]] = {}
        with self._lock:
            cur = self._conn.execute(
                "SELECT iss, seq, LAG(seq, 1, 0) OVER (PARTITION BY iss ORDER BY seq)"
                " FROM tasks ORDER BY iss, seq"
            )
            for iss, seq, prev in cur:
                missing = gaps.setdefault(iss, [])
                room = GAP_LIST_CAP - len(missing)
                if seq > prev + 1 and room > 0:
                    missing.extend(range(prev + 1, min(seq, prev + 1 + room)))
        return gaps

    def seq_gap_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(
                self._conn.execute("SELECT iss, MAX(seq) - COUNT(*) FROM tasks GROUP BY iss")
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            conn = self._conn
            instructions = dict(
                conn.execute("SELECT status, COUNT(*) FROM instructions GROUP BY status")
            )
            targets = dict(
                conn.execute(
                    "SELECT t.kind, COUNT(*) FROM targets t JOIN instructions i"
                    " ON i.rowid = t.instruction WHERE i.status = 'active' GROUP BY t.kind"
                )
            )
            tasks = {
                f"{typ}/{st}": n
                for typ, st, n in conn.execute(
                    "SELECT type, status, COUNT(*) FROM tasks GROUP BY type, status"
                )
            }
            last = conn.execute(
                "SELECT iss, id, type, received_at, applied_at FROM tasks"
                " ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
        keys = ("iss", "id", "type", "received_at", "applied_at")
        return {
            "instructions": instructions,
            "targets": targets,
            "tasks": tasks,
            "last_task": dict(zip(keys, last, strict=True)) if last else None,
        }

    # -- audit ----------------------------------------------------------------

    def audit_rows(self) -> Iterator[AuditRow]:
        """Every audit row in order (a snapshot read: fetched up front)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, at, event, data, prev, hash FROM audit ORDER BY seq"
            ).fetchall()
        return (AuditRow(*r) for r in rows)

    def audit_verify(self) -> VerifyResult:
        return _verify_chain(self.audit_rows())


class _Transaction:
    """BEGIN (IMMEDIATE: take the write lock up front) … COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
