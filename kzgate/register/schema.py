"""The register file: its schema, its migrations, and the checks before it is used.

A file that exists but is not an intact kzgate register is refused with
RegisterError, never replaced: it may be the only record of what was ordered.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

APPLICATION_ID = 0x6B7A6774  # "kzgt": tells our files from other SQLite files

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
    # 2: the last accepted signed head of each issuer's feed (task-protocol.md §6),
    # kept as received (jws) as proof of what the issuer said its log was.
    """
    CREATE TABLE feed_heads (
        iss TEXT PRIMARY KEY,
        session TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq >= 0),
        chain TEXT NOT NULL CHECK (length(chain) = 64),
        issued_at TEXT NOT NULL,
        expires TEXT NOT NULL,
        jws TEXT NOT NULL,
        accepted_at TEXT NOT NULL
    );
    """,
    # 3: when a resume was verified lifted at every probed place (issue 14); set
    # once by the prober, after the receipt (which is signed at apply time).
    """
    ALTER TABLE instructions ADD COLUMN verified_at TEXT;
    """,
]


class RegisterError(Exception):
    """The register file cannot be used (unreadable, corrupt, foreign, newer schema)."""


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to the file at ``path``; with ``create``, its directory is made."""
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
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise RegisterError(f"{path}: cannot open: {exc}") from exc


def check_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not an intact kzgate register; set the durability
    pragmas; bring the schema up to date, one transaction per migration."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    check = [r[0] for r in conn.execute("PRAGMA quick_check")]
    if check != ["ok"]:
        raise RegisterError(f"{path}: corrupt register: {'; '.join(check[:5])}")
    if version > len(MIGRATIONS):
        raise RegisterError(
            f"{path}: schema version {version} is newer than this kzgate ({len(MIGRATIONS)})"
        )
    if version == 0:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise RegisterError(f"{path}: an SQLite file, but not a kzgate register")
    elif app_id != APPLICATION_ID:
        raise RegisterError(f"{path}: an SQLite file, but not a kzgate register")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RegisterError(f"{path}: cannot use WAL journal (got {mode})")
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
