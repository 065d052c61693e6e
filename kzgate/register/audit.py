"""The audit chain: each row carries the SHA-256 of the previous one.

Pure functions over rows; the register writes the rows (in the same SQLite
transaction as the task they describe) and reads them back for ``verify_chain``.

    hash = sha256(prev + "\\n" + seq + "\\n" + at + "\\n" + event + "\\n" + data)

with ``data`` canonical JSON and the first row's ``prev`` 64 zeros. Changing,
dropping or reordering any row breaks the chain at that row.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

GENESIS = "0" * 64
AuditEvent = Literal[
    "task_received",
    "instruction_activated",
    "instruction_resumed",
    "resume_pending",
    "instruction_cancelled",
    "receipt_issued",
    # the prober's (kzgate/probes/prober.py): a resume checked lifted everywhere
    "lift_verified",
    # the feed's (kzgate.feed.ports.FeedEvent)
    "feed_conflict",
    "feed_rollback",
    "feed_new_session",
    "feed_diverged",
]
COLUMNS = ("seq", "at", "event", "data", "prev", "hash")


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    at: str
    event: str
    data: str  # canonical JSON text, exactly as hashed
    prev: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    rows: int
    first_bad: int | None
    reason: str


def canonical_json(data: Mapping[str, Any]) -> str:
    """The one serialization that is hashed: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev: str, seq: int, at: str, event: str, data: str) -> str:
    text = f"{prev}\n{seq}\n{at}\n{event}\n{data}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_row(prev: str, seq: int, at: str, event: AuditEvent, data: Mapping[str, Any]) -> AuditRow:
    """The next row of a chain whose last hash is ``prev``."""
    text = canonical_json(data)
    return AuditRow(seq, at, event, text, prev, row_hash(prev, seq, at, event, text))


def verify_chain(rows: Iterable[AuditRow]) -> VerifyResult:
    """Check links, hashes and gapless seq numbers; report the first bad row."""
    prev, expected_seq, n = GENESIS, None, 0
    for row in rows:
        n += 1
        if expected_seq is not None and row.seq != expected_seq:
            return VerifyResult(False, n, row.seq, f"seq {row.seq} follows {expected_seq - 1}")
        if row.prev != prev:
            return VerifyResult(False, n, row.seq, f"row {row.seq}: prev does not match")
        if row_hash(row.prev, row.seq, row.at, row.event, row.data) != row.hash:
            return VerifyResult(False, n, row.seq, f"row {row.seq}: hash does not match")
        prev, expected_seq = row.hash, row.seq + 1
    return VerifyResult(True, n, None, f"{n} rows, chain intact")


def export_json(rows: Iterable[AuditRow], out: TextIO) -> int:
    """A JSON array, streamed; ``data`` as an object (re-serializing it canonically
    gives back the hashed text). Returns the number of rows."""
    n = 0
    out.write("[")
    for row in rows:
        item = {c: getattr(row, c) for c in COLUMNS}
        item["data"] = json.loads(row.data)
        out.write(("\n" if n == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
        n += 1
    out.write("\n]\n")
    return n


def export_csv(rows: Iterable[AuditRow], out: TextIO) -> int:
    """CSV with a header; ``data`` is the exact hashed JSON text. Returns the row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([getattr(row, c) for c in COLUMNS])
        n += 1
    return n
