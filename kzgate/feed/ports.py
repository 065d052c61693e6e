"""What the feed puller talks to, as interfaces: where tasks come from, where they go.

The puller (feed/puller.py) is written against these two ports and nothing
else, so its decisions are tested with fakes: a ``FeedSource`` is the issuer's
feed (feed/client.py speaks HTTPS; tests script one), a ``FeedSink`` is the
daemon's pipeline and register (pipeline.py implements it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kzgate.feed.head import Head

# Why a pull failed at the transport: the source raises FeedError with one of these.
FeedErrorKind = Literal["unreachable", "garbage", "oversize"]

# What a task taken from the feed came to: a task status (applied, partial,
# accepted, pending, cancelled), "duplicate", or the error code of its refusal
# (task-protocol.md §5: invalid_task, bad_signature, unknown_key, conflict, ...),
# or "wrong_issuer" for a task of another issuer served on this issuer's feed.
Outcome = str

STORED_OUTCOMES = frozenset({"applied", "partial", "accepted", "pending", "cancelled", "duplicate"})

# Events the puller records durably (the audit log) and alarms on.
FeedEvent = Literal["feed_conflict", "feed_rollback", "feed_new_session", "feed_diverged"]


class FeedError(Exception):
    """The feed could not be read: unreachable (connect, TLS, timeout), garbage
    (wrong status, content type or shape), or a body over the size cap."""

    def __init__(self, kind: FeedErrorKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: FeedErrorKind = kind
        self.detail = detail


class FeedSource(Protocol):
    """One issuer's feed (task-protocol.md §6)."""

    async def get_head(self) -> bytes:
        """The body of ``GET {base}/head``: a compact JWS, unverified."""
        ...

    async def get_tasks(self, after: int, limit: int, wait: float) -> list[bytes]:
        """The tasks of ``GET {base}/tasks?after=&limit=&wait=``: compact JWS, unverified,
        in the order served (the puller checks it is seq order)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Taken:
    """What one task from the feed came to, in the order given to ``FeedSink.take``."""

    seq: int | None  # None when the bytes did not verify as a task
    id: str | None
    outcome: Outcome
    detail: str = ""

    @property
    def stored(self) -> bool:
        """The register holds this seq with these bytes (now or before)."""
        return self.outcome in STORED_OUTCOMES


class FeedSink(Protocol):
    """The daemon side: the same pipeline and register pushed tasks go through."""

    async def take(self, iss: str, bodies: Sequence[bytes], head: Head | None) -> list[Taken]:
        """Verify, record, apply and sign receipts for ``bodies`` (already in seq order),
        exactly as pushed tasks are (§2-§4), as one group: one register transaction,
        one combined diff to the enforcers. A task that is refused is refused alone.
        ``head``, when given, is stored in that same transaction (it is the head whose
        log these tasks complete). Tasks not of issuer ``iss`` are not stored."""
        ...

    async def stored_head(self, iss: str) -> Head | None:
        """The last accepted head of ``iss``, as stored durably."""
        ...

    async def store_head(self, head: Head) -> None:
        """Store an accepted head that brought no task."""
        ...

    async def held_through(self, iss: str) -> int:
        """The highest seq n such that the register holds every task 1..n of ``iss``."""
        ...

    async def payload_hashes(self, iss: str, first: int, last: int) -> list[bytes]:
        """SHA-256 of the stored payloads of seq first..last (all held), in seq order."""
        ...

    async def feed_event(self, iss: str, event: FeedEvent, data: dict[str, Any]) -> None:
        """Record a feed event durably (an audit row)."""
        ...

    def on_pushed(self, callback: Callable[[str, int], None]) -> None:
        """Call ``callback(iss, seq)`` after each pushed task is stored (not a duplicate):
        the puller pulls at once when that seq reveals a gap."""
        ...
