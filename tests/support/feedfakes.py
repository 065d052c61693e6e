"""A scripted FeedSource and an in-memory FeedSink (kzgate/feed/ports.py), no sockets.

The sink verifies every task for real (protocol.intake.verify_task) and keeps the
register's rules that matter to the puller: a seq or an id held with other bytes
is a conflict, the same bytes a duplicate, a task of another issuer is refused.
The source serves a list of signed tasks and a head; tests replace ``serve`` or
queue errors to make it lie, fail or hang.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.errors import TaskError
from kzgate.feed.chain import chain_of, payload_hash
from kzgate.feed.head import Head, build_head, sign_head
from kzgate.feed.ports import FeedError, FeedEvent, Taken
from kzgate.protocol.build import sign_task
from kzgate.protocol.intake import verify_task
from kzgate.protocol.jws import parse_compact
from tests.support.protocol_fixtures import MCI_KEY, NOW, OPERATOR, TRUST, restrict

SESSION = "3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10"
OTHER_SESSION = "9a1d7c52-2f1e-4b0e-8a55-6b1f3c2d4e5f"


def signed_task(
    seq: int,
    *,
    iss: str = "mci",
    key: Ed25519PrivateKey = MCI_KEY,
    kid: str = "mci-1",
    variant: str = "",
) -> bytes:
    """A valid restrict task of ``iss`` with ``seq``; ``variant`` makes other bytes."""
    task = restrict(
        iss=iss,
        seq=seq,
        id=f"{iss}-{seq:05d}{variant}",
        instruction={"number": f"04-1/{seq}{variant}", "date": "2026-11-20"},
        aud=[OPERATOR],
        targets=[{"type": "domain", "value": f"site{seq}.example.kz"}],
    )
    return sign_task(task, key, kid).encode()


def payload_of(body: bytes) -> bytes:
    return parse_compact(body).payload


def signed_head(
    log: Sequence[bytes],
    *,
    seq: int | None = None,
    session: str = SESSION,
    iss: str = "mci",
    key: Ed25519PrivateKey = MCI_KEY,
    kid: str = "mci-1",
    issued_at: dt.datetime = NOW,
    ttl: dt.timedelta = dt.timedelta(minutes=10),
    chain: bytes | None = None,
) -> bytes:
    """The head over the first ``seq`` (default: all) tasks of ``log``."""
    n = len(log) if seq is None else seq
    value = chain if chain is not None else chain_of(payload_hash(payload_of(b)) for b in log[:n])
    payload = build_head(
        iss=iss,
        session=session,
        seq=n,
        chain=value,
        issued_at=issued_at,
        expires=issued_at + ttl,
    )
    return sign_head(payload, key, kid).encode()


class ScriptedSource:
    """An issuer's feed: ``log`` (tasks in seq order) and ``head``; ``errors`` are raised
    first, one per call; ``serve(after, limit)`` may be replaced to misbehave."""

    def __init__(self, log: Sequence[bytes] = (), head: bytes | None = None) -> None:
        self.log = list(log)
        self.head = head if head is not None else signed_head(self.log)
        self.errors: list[Exception] = []
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False
        self.hang = False  # every call waits forever (until cancelled)
        self._published = asyncio.Condition()

    def serve(self, after: int, limit: int) -> list[bytes]:
        return self.log[after : after + limit]

    async def publish(self, body: bytes, *, head: bool = True) -> None:
        """Append a task (and, by default, sign a head that includes it); wake long polls."""
        self.log.append(body)
        if head:
            self.head = signed_head(self.log)
        async with self._published:
            self._published.notify_all()

    async def _misbehave(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.errors:
            raise self.errors.pop(0)

    async def get_head(self) -> bytes:
        self.calls.append(("head",))
        await self._misbehave()
        return self.head

    async def get_tasks(self, after: int, limit: int, wait: float) -> list[bytes]:
        self.calls.append(("tasks", after, limit, wait))
        await self._misbehave()
        if wait > 0 and not self.serve(after, limit):
            async with self._published:
                try:
                    async with asyncio.timeout(wait):
                        await self._published.wait_for(lambda: bool(self.serve(after, limit)))
                except TimeoutError:
                    return []
        return self.serve(after, limit)

    async def close(self) -> None:
        self.closed = True


def unreachable(detail: str = "connection refused") -> FeedError:
    return FeedError("unreachable", detail)


class FakeSink:
    """The daemon side, in memory, verifying tasks as the pipeline does."""

    def __init__(self, now: Callable[[], dt.datetime] = lambda: NOW) -> None:
        self.now = now
        self.payloads: dict[str, dict[int, bytes]] = {}
        self.ids: dict[tuple[str, str], bytes] = {}
        self.heads: dict[str, Head] = {}
        self.events: list[tuple[str, FeedEvent, dict[str, Any]]] = []
        self.takes: list[tuple[str, list[int | None], Head | None]] = []
        self.stored_alone: list[Head] = []
        self.callbacks: list[Callable[[str, int], None]] = []

    async def take(self, iss: str, bodies: Sequence[bytes], head: Head | None) -> list[Taken]:
        out = [self._take_one(iss, body) for body in bodies]
        self.takes.append((iss, [t.seq for t in out], head))
        if head is not None:
            self.heads[iss] = head
        return out

    def _take_one(self, iss: str, body: bytes) -> Taken:
        try:
            task = verify_task(body, TRUST, OPERATOR, self.now())
        except TaskError as exc:
            return Taken(None, None, exc.code, exc.detail)
        if task.iss != iss:
            return Taken(task.seq, task.id, "wrong_issuer", f"a task of {task.iss}")
        held = self.payloads.setdefault(iss, {})
        same_seq = held.get(task.seq)
        same_id = self.ids.get((iss, task.id))
        if same_seq is not None or same_id is not None:
            if same_seq == task.payload and same_id == task.payload:
                return Taken(task.seq, task.id, "duplicate")
            return Taken(task.seq, task.id, "conflict", "held with other bytes")
        held[task.seq] = task.payload
        self.ids[(iss, task.id)] = task.payload
        return Taken(task.seq, task.id, "applied")

    def push(self, iss: str, body: bytes) -> Taken:
        """A pushed task: stored as take would, then the on_pushed callbacks."""
        taken = self._take_one(iss, body)
        if taken.outcome == "applied" and taken.seq is not None:
            for callback in self.callbacks:
                callback(iss, taken.seq)
        return taken

    async def stored_head(self, iss: str) -> Head | None:
        return self.heads.get(iss)

    async def store_head(self, head: Head) -> None:
        self.heads[head.iss] = head
        self.stored_alone.append(head)

    async def held_through(self, iss: str) -> int:
        held = self.payloads.get(iss, {})
        n = 0
        while n + 1 in held:
            n += 1
        return n

    async def payload_hashes(self, iss: str, first: int, last: int) -> list[bytes]:
        held = self.payloads.get(iss, {})
        return [payload_hash(held[seq]) for seq in range(first, last + 1)]

    async def feed_event(self, iss: str, event: FeedEvent, data: dict[str, Any]) -> None:
        self.events.append((iss, event, data))

    def on_pushed(self, callback: Callable[[str, int], None]) -> None:
        self.callbacks.append(callback)

    def event_kinds(self) -> list[str]:
        return [event for _, event, _ in self.events]
