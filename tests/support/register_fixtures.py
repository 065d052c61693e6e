"""Builders for Task values and a raw dump of a register file, shared by register tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from kzgate.model import InstructionRef, Target, Task

T0 = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5)))


def _task(**fields: Any) -> Task:
    payload = json.dumps(fields.pop("extra", {}) | {"id": fields["id"]}, sort_keys=True).encode()
    payload = fields.pop("payload", payload)
    return Task(
        v=1,
        aud=("op-example",),
        issued_at=T0,
        authority="Ministry of Culture and Information",
        payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        kid="mci-2026",
        **fields,
    )


def restrict(
    id: str,
    seq: int,
    number: str,
    targets: list[tuple[str, str]] | tuple[Target, ...],
    *,
    iss: str = "mci",
    date: str = "2026-11-01",
    payload: bytes | None = None,
) -> Task:
    tgs = tuple(t if isinstance(t, Target) else Target(t[0], t[1]) for t in targets)  # type: ignore[arg-type]
    extra: dict[str, Any] = {}
    if payload is not None:
        extra["payload"] = payload
    return _task(
        id=id,
        iss=iss,
        seq=seq,
        type="restrict",
        instruction=InstructionRef(iss, number, date),
        ground="Law On Communications, art. 41-1",
        reason="illegal_content",
        targets=tgs,
        **extra,
    )


def resume(id: str, seq: int, number: str, *, iss: str = "mci", date: str = "2026-11-01") -> Task:
    return _task(
        id=id,
        iss=iss,
        seq=seq,
        type="resume",
        instruction=InstructionRef(iss, number, date),
        applicant="owner",
        removed_links=("https://example.kz/a",),
        removed_as_of=dt.date(2026, 11, 20),
    )


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through a separate connection."""
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            n: conn.execute(f"SELECT rowid, * FROM {n} ORDER BY rowid").fetchall() for n in names
        }
    finally:
        conn.close()
