"""The feed_heads table: the last accepted head of each issuer's feed, as a row and back.

One place for the mapping, so what store.py writes is what reads.py rebuilds:
the chain as lower-case hex, times as ISO 8601 text with their offset, the
JWS exactly as received (the issuer's signed word on its log).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kzgate.feed.head import Head

UPSERT = (
    "INSERT INTO feed_heads (iss, session, seq, chain, issued_at, expires, jws, accepted_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (iss) DO UPDATE SET"
    " session = excluded.session, seq = excluded.seq, chain = excluded.chain,"
    " issued_at = excluded.issued_at, expires = excluded.expires, jws = excluded.jws,"
    " accepted_at = excluded.accepted_at"
)
SELECT = "SELECT iss, session, seq, chain, issued_at, expires, jws FROM feed_heads WHERE iss = ?"


def to_row(head: Head, accepted_at: datetime) -> tuple[Any, ...]:
    """The values of ``UPSERT``."""
    return (
        head.iss,
        head.session,
        head.seq,
        head.chain.hex(),
        head.issued_at.isoformat(),
        head.expires.isoformat(),
        head.jws,
        accepted_at.isoformat(),
    )


def from_row(row: tuple[Any, ...]) -> Head:
    """The Head of a row of ``SELECT``."""
    iss, session, seq, chain, issued_at, expires, jws = row
    return Head(
        iss,
        session,
        int(seq),
        bytes.fromhex(chain),
        datetime.fromisoformat(issued_at),
        datetime.fromisoformat(expires),
        jws,
    )
