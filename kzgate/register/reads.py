"""What the register is asked, never changing it: task lookups, listings, statistics, audit.

For the pipeline (receipts and task status), the API and CLI (instructions,
seq gaps, statistics) and the metrics; each read holds the register's lock.
``Register`` (store.py) inherits these; only it writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from kzgate.feed.head import Head
from kzgate.model import Candidate, InstructionRef, Target
from kzgate.register import heads
from kzgate.register.audit import AuditRow, VerifyResult
from kzgate.register.audit import verify_chain as _verify_chain

GAP_LIST_CAP = 1000
# Target kinds a probe can check (url and app targets are not probed).
PROBED_KINDS = ("domain", "ip", "cidr")
_PROBED = "(" + ", ".join(f"'{kind}'" for kind in PROBED_KINDS) + ")"
ALL_CANDIDATES_CHUNK = 10_000  # rows read per lock hold by all_candidates


class RegisterReads:
    """The read side of ``Register``: its SQLite connection and lock are the register's."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

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

    # -- the feed (task-protocol.md §6) ----------------------------------------

    def stored_head(self, iss: str) -> Head | None:
        """The last accepted head of ``iss``'s feed, or None before the first."""
        row = self._one(heads.SELECT, (iss,))
        return heads.from_row(row) if row is not None else None

    def held_through(self, iss: str) -> int:
        """The highest n such that every task 1..n of ``iss`` is stored (0: not even 1)."""
        # Seqs are distinct and >= 1, so as many tasks as the highest seq means no
        # gap (the usual case: one count over the (iss, seq) index). Otherwise walk
        # that index in order and stop at the first seq whose successor is missing.
        row = self._one(
            "SELECT CASE WHEN n = top THEN top"
            " WHEN NOT EXISTS (SELECT 1 FROM tasks WHERE iss = ?1 AND seq = 1) THEN 0"
            " ELSE (SELECT t.seq FROM tasks t WHERE t.iss = ?1 AND NOT EXISTS"
            " (SELECT 1 FROM tasks u WHERE u.iss = ?1 AND u.seq = t.seq + 1)"
            " ORDER BY t.seq LIMIT 1) END"
            " FROM (SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS top FROM tasks WHERE iss = ?1)",
            (iss,),
        )
        return int(row[0])

    def payload_hashes(self, iss: str, first: int, last: int) -> list[bytes]:
        """SHA-256 of the stored payloads of ``iss``'s seq first..last, in seq order
        (the §6 chain's inputs); LookupError when one of them is not stored."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, sha256 FROM tasks WHERE iss = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                (iss, first, last),
            ).fetchall()
        if len(rows) != max(0, last - first + 1):
            held = {seq for seq, _ in rows}
            missing = next(n for n in range(first, last + 1) if n not in held)
            raise LookupError(f"task {missing} of issuer {iss!r} is not stored")
        return [bytes.fromhex(digest) for _, digest in rows]

    # -- probes (issue 14) ------------------------------------------------------

    def probe_candidates(
        self, *, resumed_since: datetime, restricted: int, offset: int
    ) -> list[Candidate]:
        """Up to ``restricted`` active domain/ip/cidr targets, taken in rowid order from
        the rowid ``offset`` (modulo the highest target rowid, wrapping round), plus every
        such target of the instructions whose resume was applied at or after
        ``resumed_since``. Cheap at 1,000,000 targets: a rowid range read, never a sort
        of the table (a caller rotates by passing a growing ``offset``)."""
        with self._lock:
            top = int(
                self._conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM targets").fetchone()[0]
            )
            start = offset % (top + 1) if top else 0
            out = self._active_from(start, None, restricted)
            if len(out) < restricted and start > 0:  # wrap round to the first rows
                out += self._active_from(0, start, restricted - len(out))
            out += self._resumed_since(resumed_since)
        return out

    def _active_from(self, first: int, before: int | None, limit: int) -> list[Candidate]:
        bound = "" if before is None else f" AND t.rowid < {int(before)}"
        rows = self._conn.execute(
            "SELECT t.kind, t.value, i.iss, i.number, i.date FROM targets t"
            " JOIN instructions i ON i.rowid = t.instruction"
            f" WHERE t.rowid >= ?{bound} AND i.status = 'active' AND t.kind IN {_PROBED}"
            " ORDER BY t.rowid LIMIT ?",
            (first, limit),
        )
        return [Candidate(Target(k, v), InstructionRef(iss, n, d)) for k, v, iss, n, d in rows]

    def _resumed_since(self, since: datetime) -> list[Candidate]:
        # applied_at is ISO text in the daemon's local offset; the text filter
        # (a day early, wider than any UTC offset) keeps the read to recent
        # rows, the exact comparison is on parsed times.
        floor = (since - timedelta(days=1)).date().isoformat()
        out: list[Candidate] = []
        rows = self._conn.execute(
            "SELECT i.rowid, i.iss, i.number, i.date, rt.applied_at FROM instructions i"
            " JOIN tasks rt ON rt.rowid = i.resume_task"
            " WHERE i.status = 'resumed' AND rt.applied_at >= ? ORDER BY i.rowid",
            (floor,),
        ).fetchall()
        for row_id, iss, number, date, applied_at in rows:
            resumed_at = datetime.fromisoformat(applied_at)
            if resumed_at >= since:
                out += self._targets_of(row_id, InstructionRef(iss, number, date), resumed_at)
        return out

    def _targets_of(
        self, row_id: int, ref: InstructionRef, resumed_at: datetime | None
    ) -> list[Candidate]:
        return [
            Candidate(Target(k, v), ref, resumed_at)
            for k, v in self._conn.execute(
                f"SELECT kind, value FROM targets WHERE instruction = ? AND kind IN {_PROBED}"
                " ORDER BY rowid",
                (row_id,),
            )
        ]

    def instruction_candidates(self, ref: InstructionRef) -> list[Candidate]:
        """Every probed target of one instruction (none for an unknown one), with when its
        resume was applied (None while active)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT i.rowid, rt.applied_at FROM instructions i"
                " LEFT JOIN tasks rt ON rt.rowid = i.resume_task AND i.status = 'resumed'"
                " WHERE i.iss = ? AND i.number = ? AND i.date = ?",
                (ref.iss, ref.number, ref.date),
            ).fetchone()
            if row is None:
                return []
            resumed_at = datetime.fromisoformat(row[1]) if row[1] else None
            return self._targets_of(row[0], ref, resumed_at)

    def all_candidates(self) -> Iterator[Candidate]:
        """Every probed target of every active or resumed instruction, streamed in
        target rowid order, ``ALL_CANDIDATES_CHUNK`` rows per hold of the lock."""
        after = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT t.rowid, t.kind, t.value, i.iss, i.number, i.date,"
                    " CASE WHEN i.status = 'resumed' THEN rt.applied_at END FROM targets t"
                    " JOIN instructions i ON i.rowid = t.instruction"
                    " LEFT JOIN tasks rt ON rt.rowid = i.resume_task"
                    f" WHERE t.rowid > ? AND i.status IN ('active', 'resumed')"
                    f" AND t.kind IN {_PROBED} ORDER BY t.rowid LIMIT ?",
                    (after, ALL_CANDIDATES_CHUNK),
                ).fetchall()
            if not rows:
                return
            for _, kind, value, iss, number, date, applied_at in rows:
                resumed_at = datetime.fromisoformat(applied_at) if applied_at else None
                yield Candidate(Target(kind, value), InstructionRef(iss, number, date), resumed_at)
            after = rows[-1][0]

    def resume_of(self, iss: str, id: str) -> tuple[InstructionRef, str | None] | None:
        """The instruction a stored resume task lifts and its ``verified_at`` (ISO text,
        None until verified lifted); None when the task is not such a resume."""
        row = self._one(
            "SELECT i.iss, i.number, i.date, i.verified_at FROM instructions i"
            " JOIN tasks t ON t.rowid = i.resume_task WHERE t.iss = ? AND t.id = ?",
            (iss, id),
        )
        return (InstructionRef(row[0], row[1], row[2]), row[3]) if row else None

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
