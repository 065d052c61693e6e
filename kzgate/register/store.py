"""The register: tasks, instructions, targets and the audit chain in one SQLite file.

Every task is one transaction (WAL, ``synchronous=FULL``: durable at COMMIT),
or one savepoint of a page's transaction (``record_many``: a feed's catch-up);
every check of task-protocol.md §4 runs inside it, so a refused task changes
nothing. The in-memory ``EffectiveState`` is changed only after COMMIT, so it
never shows what the disk does not hold.

What a task may do is decided by the rules of rules.py, on the facts read
here; the schema and the checks on open are schema.py's, the read-only
queries reads.py's. Not thread-safe by itself beyond one internal lock: the
daemon calls it from one worker thread (or the loop) at a time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kzgate.errors import TaskError
from kzgate.feed.head import Head
from kzgate.feed.ports import FeedEvent
from kzgate.model import Diff, InstructionRef, Target, Task
from kzgate.register import heads
from kzgate.register.audit import GENESIS, AuditEvent, make_row
from kzgate.register.reads import RegisterReads
from kzgate.register.rules import (
    ACTIVATE,
    CANCEL,
    RESUME,
    RecordStatus,
    StoredInstruction,
    Verdict,
    check_duplicate,
    check_seq,
    judge,
    needs_owner,
)
from kzgate.register.schema import MIGRATIONS, RegisterError, check_and_migrate, connect
from kzgate.register.state import EffectiveState

__all__ = ["MIGRATIONS", "TASK_STATUSES", "RecordStatus", "Recorded", "Register", "RegisterError"]

# "partial": in force everywhere but where an enforcer cannot represent a target
TASK_STATUSES = frozenset({"applied", "partial", "accepted", "pending", "cancelled"})


@dataclass(frozen=True)
class Recorded:
    status: RecordStatus
    diff: Diff
    stored_receipt: dict[str, Any] | None
    received_at: datetime


# What recording one task did inside the transaction: its status, the receipt
# stored before (a duplicate), when it was received, and the change to the
# effective state to make after COMMIT (verb, instruction, targets).
_Change = tuple[str, InstructionRef, tuple[Target, ...]]
_Outcome = tuple[RecordStatus, dict[str, Any] | None, datetime, _Change | None]

# A receipt to store: (iss, task id, receipt, applied_at).
ReceiptItem = tuple[str, str, dict[str, Any], datetime | None]


def _ts(when: datetime) -> str:
    return when.isoformat()


class Register(RegisterReads):
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
        conn = connect(path, create=create)
        try:
            reg = cls(path, conn)
            check_and_migrate(conn, path)
            reg.state = reg._load_state()
        except sqlite3.Error as exc:
            conn.close()
            raise RegisterError(f"{path}: not a readable kzgate register: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return reg

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
        (result,) = self.record_many((task,), received_at)
        if isinstance(result, TaskError):
            raise result
        return result

    def record_many(
        self, tasks: Sequence[Task], received_at: datetime, *, head: Head | None = None
    ) -> list[Recorded | TaskError]:
        """Store ``tasks`` in order in ONE transaction (one fsync for all), each as
        ``record`` would; and ``head``, when given, in that same transaction.

        Each task has its own savepoint: one refused (Conflict/Forbidden) is rolled
        back alone and comes back as its TaskError, the others stay. A storage error
        rolls back everything (tasks and head) and raises RegisterError. The
        effective state changes only after COMMIT, task by task in order; each
        Recorded carries its own task's diff.
        """
        with self._lock:
            conn = self._conn
            outcomes: list[_Outcome | TaskError] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for task in tasks:
                    conn.execute("SAVEPOINT task")
                    try:
                        outcomes.append(self._record_in_tx(task, received_at))
                    except TaskError as exc:
                        conn.execute("ROLLBACK TO task")
                        outcomes.append(exc)
                    conn.execute("RELEASE task")
                if head is not None:
                    self._upsert_head(head, received_at)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise RegisterError(f"{self.path}: cannot store task: {exc}") from exc
                raise
            return [self._after_commit(o) for o in outcomes]  # only now that it is on disk

    def _after_commit(self, outcome: _Outcome | TaskError) -> Recorded | TaskError:
        if isinstance(outcome, TaskError):
            return outcome
        status, stored_receipt, stored_at, change = outcome
        diff = Diff()
        if change is not None:
            verb, ref, targets = change
            change_state = self.state.add if verb == "add" else self.state.remove
            diff = change_state(ref, targets)
        return Recorded(status, diff, stored_receipt, stored_at)

    def _record_in_tx(self, task: Task, received_at: datetime) -> _Outcome:
        row = self._conn.execute(
            "SELECT sha256, receipt, received_at FROM tasks WHERE iss = ? AND id = ?",
            (task.iss, task.id),
        ).fetchone()
        if row is not None:  # the same (iss, id) again: a duplicate, or a conflict
            check_duplicate(task, row[0])
            receipt = json.loads(row[1]) if row[1] is not None else None
            return "duplicate", receipt, datetime.fromisoformat(row[2]), None
        verdict, inst_row = self._judge(task)
        change = self._write(task, verdict, inst_row, _ts(received_at))
        return verdict.status, None, received_at, change

    def _judge(self, task: Task) -> tuple[Verdict, int | None]:
        """The rules' verdict on a new task (rules.py), asked one stored fact at a
        time; and the rowid of its instruction when one is stored."""
        conn = self._conn
        holder = conn.execute(
            "SELECT id FROM tasks WHERE iss = ? AND seq = ?", (task.iss, task.seq)
        ).fetchone()
        check_seq(task, holder[0] if holder is not None else None)
        row = conn.execute(
            "SELECT rowid, status, restrict_task IS NOT NULL FROM instructions"
            " WHERE iss = ? AND number = ? AND date = ?",
            (task.iss, task.instruction.number, task.instruction.date),
        ).fetchone()
        inst = StoredInstruction(row[1], bool(row[2])) if row is not None else None
        owner = None
        if needs_owner(task, inst):
            other = conn.execute(
                "SELECT iss FROM instructions WHERE number = ? AND date = ? AND iss != ?"
                " AND restrict_task IS NOT NULL ORDER BY iss LIMIT 1",
                (task.instruction.number, task.instruction.date, task.iss),
            ).fetchone()
            owner = other[0] if other is not None else None
        return judge(task, inst, owner), row[0] if row is not None else None

    def _write(self, task: Task, verdict: Verdict, inst_row: int | None, at: str) -> _Change | None:
        """Store the task and what the verdict does to its instruction, with their
        audit rows; return the change to the effective state, made after COMMIT."""
        conn = self._conn
        ref = InstructionRef(task.iss, task.instruction.number, task.instruction.date)
        task_row = self._insert_task(task, at, verdict.status)
        self._append_audit(
            at,
            "task_received",
            {
                "iss": task.iss,
                "id": task.id,
                "seq": task.seq,
                "type": task.type,
                "sha256": task.sha256,
                "instruction": {"number": ref.number, "date": ref.date},
            },
        )
        audit_inst: dict[str, Any] = {
            "iss": ref.iss,
            "number": ref.number,
            "date": ref.date,
            "task": task.id,
        }
        targets = task.targets
        meta = (task.authority, task.ground, task.reason)
        if verdict is ACTIVATE:
            inst_row = conn.execute(
                "INSERT INTO instructions (iss, number, date, status, restrict_task,"
                " authority, ground, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ref.iss, ref.number, ref.date, verdict.instruction, task_row, *meta),
            ).lastrowid
            assert inst_row is not None
            self._keep_targets(inst_row, task, audit_inst)
        elif verdict is CANCEL:
            assert inst_row is not None
            conn.execute(
                "UPDATE instructions SET status = ?, restrict_task = ?,"
                " authority = ?, ground = ?, reason = ? WHERE rowid = ?",
                (verdict.instruction, task_row, *meta, inst_row),
            )
            self._keep_targets(inst_row, task, audit_inst)
        elif verdict is RESUME:
            conn.execute(
                "UPDATE instructions SET status = ?, resume_task = ? WHERE rowid = ?",
                (verdict.instruction, task_row, inst_row),
            )
            targets = tuple(
                Target(kind, value)
                for kind, value in conn.execute(
                    "SELECT kind, value FROM targets WHERE instruction = ?", (inst_row,)
                )
            )
        else:  # PEND: the instruction is known only by this resume
            conn.execute(
                "INSERT INTO instructions (iss, number, date, status, resume_task)"
                " VALUES (?, ?, ?, ?, ?)",
                (ref.iss, ref.number, ref.date, verdict.instruction, task_row),
            )
        self._append_audit(at, verdict.event, audit_inst)
        return (verdict.enforce, ref, targets) if verdict.enforce is not None else None

    def _keep_targets(self, inst_row: int, task: Task, audit: dict[str, Any]) -> None:
        """A restrict's targets are kept on record, whether they are enforced or not."""
        self._conn.executemany(
            "INSERT INTO targets (instruction, kind, value) VALUES (?, ?, ?)",
            ((inst_row, t.kind, t.value) for t in task.targets),
        )
        audit["targets"] = len(task.targets)

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
        self.set_receipts(((iss, id, receipt, applied_at),))

    def set_receipts(self, items: Sequence[ReceiptItem]) -> None:
        """``set_receipt`` for each item, all in one transaction (one fsync)."""
        with self._lock, self._tx():
            for iss, id, receipt, applied_at in items:
                self._set_receipt_in_tx(iss, id, receipt, applied_at)

    def _set_receipt_in_tx(
        self, iss: str, id: str, receipt: dict[str, Any], applied_at: datetime | None
    ) -> None:
        status = receipt.get("status")
        at = _ts(applied_at or datetime.now(UTC))
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

    # -- probes (issue 14) ------------------------------------------------------

    def mark_verified(self, ref: InstructionRef, at: datetime) -> bool:
        """Record that the resumed instruction ``ref`` was verified lifted everywhere at
        ``at``: once (a later call changes nothing and answers False), with an audit row."""
        with self._lock, self._tx():
            cur = self._conn.execute(
                "UPDATE instructions SET verified_at = ? WHERE iss = ? AND number = ?"
                " AND date = ? AND status = 'resumed' AND verified_at IS NULL",
                (_ts(at), ref.iss, ref.number, ref.date),
            )
            if cur.rowcount != 1:
                return False
            self._append_audit(
                _ts(at),
                "lift_verified",
                {"iss": ref.iss, "number": ref.number, "date": ref.date, "verified_at": _ts(at)},
            )
            return True

    # -- the feed (task-protocol.md §6) ----------------------------------------

    def store_head(self, head: Head, accepted_at: datetime) -> None:
        """Keep ``head`` as the last accepted head of its issuer (replacing the one before)."""
        with self._lock, self._tx():
            self._upsert_head(head, accepted_at)

    def _upsert_head(self, head: Head, accepted_at: datetime) -> None:
        self._conn.execute(heads.UPSERT, heads.to_row(head, accepted_at))

    def feed_event(self, iss: str, event: FeedEvent, data: dict[str, Any], at: datetime) -> None:
        """Append an audit row for a feed event of issuer ``iss``."""
        with self._lock, self._tx():
            self._append_audit(_ts(at), event, {**data, "iss": iss})

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)


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
