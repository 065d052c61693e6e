"""Pulling one issuer's signed log (task-protocol.md §6): the loop and its rounds.

One asyncio task per issuer. It pulls at start, every ``interval`` (± 10 %), at
once when ``wake()`` is called (a pushed task revealed a seq gap), and, when
``wait`` > 0, spends the time between rounds in long polls. A failure to read
the feed or verify its head backs off exponentially (capped at ``interval``);
nothing raised inside a round leaves the loop: it is logged and shown in the
status.

A round: the head (verified, then judged: feed/judge.py) → the tasks after what
is held, in pages, each page checked to be exactly the next seqs before it is
handed to the sink (which verifies every task again, as a pushed one) → the
stored head → consistency (our chain over our stored payloads against the head's
chain; on a difference the feed's log is read again to name the first seq that
differs). The puller talks only to a FeedSource and a FeedSink (feed/ports.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from kzgate.errors import TaskError
from kzgate.feed.consistency import OurChain
from kzgate.feed.head import Head, verify_head
from kzgate.feed.judge import (
    Decision,
    FeedStatus,
    backoff_delay,
    consistency,
    interval_delay,
    judge,
)
from kzgate.feed.order import check_page
from kzgate.feed.ports import FeedError, FeedEvent, FeedSink, FeedSource, Taken
from kzgate.metrics import FEED_PULLS, Counts
from kzgate.protocol.trust import TrustStore

log = logging.getLogger("kzgate.feed")

T = TypeVar("T")

# A source call that has not answered after its long-poll wait plus this is
# given up on (the HTTP client has its own, shorter timeouts; this is the floor
# under any FeedSource, so a hung one cannot stall the loop for good).
CALL_MARGIN = 60.0
# Pages (or hash chunks) bigger than these are worked on off the event loop, so
# that DNS and intake keep being served while a large page is checked.
INLINE_PEEK_BYTES = 64 * 1024
# close() lets a page being taken finish (its tasks are recorded, applied and
# receipted as one group) for at most this long before it cancels the loop.
TAKE_DRAIN = 10.0
# Refused tasks logged one by one per page; the rest as one line: a hostile feed's
# page of forged tasks (as many as the body cap holds) must not flood the log.
LOGGED_REFUSALS = 5
ALARMED_CAP = 10_000  # remembered alarms (each is raised once); past this, forgotten


class FeedPuller:
    """The pulling of one issuer's feed; ``status`` is what it found last."""

    def __init__(
        self,
        iss: str,
        source: FeedSource,
        sink: FeedSink,
        trust: Callable[[], TrustStore],
        *,
        interval: float,
        wait: float,
        limit: int = 500,
        clock: Callable[[], dt.datetime],
        rand: Callable[[], float],
        pulls: Counts | None = None,
    ) -> None:
        self.iss = iss
        self.source = source
        self.sink = sink
        self.trust = trust
        self.interval = interval
        self.wait = wait
        self.limit = limit
        self.clock = clock
        self.rand = rand
        self.pulls = pulls if pulls is not None else Counts(FEED_PULLS)
        self.status = FeedStatus()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held = 0  # the sink's held_through, as last read (or extended by pushes)
        self._after = 0  # the last seq the feed served us in order: long polls go on from it
        self._ours = OurChain(iss, sink)  # our chain, and where the feed's log differs
        self._alarmed: set[tuple[object, ...]] = set()
        self._failures = 0
        self._taking = asyncio.Lock()  # held while the sink takes a page
        self._idle_answer = False  # the last long poll came back empty (or with nothing stored)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.iss}")

    async def close(self) -> None:
        if self._task is not None:
            drained = False
            try:
                async with asyncio.timeout(TAKE_DRAIN):
                    drained = await self._taking.acquire()
            except TimeoutError:
                log.warning("feed %s: a page still being taken after %g s", self.iss, TAKE_DRAIN)
            self._task.cancel()  # a round waiting to take its next page stops there
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if drained:
                self._taking.release()
        await self.source.close()

    def wake(self) -> None:
        """Pull now (or, while backing off from a failure, as soon as the backoff ends)."""
        self._wake.set()

    def pushed(self, seq: int) -> None:
        """A task of this issuer with ``seq`` was pushed and stored: pull at once when it
        reveals a gap (it is not the next seq after what is held)."""
        if seq == self._held + 1:
            self._held = seq
        elif seq > self._held + 1:
            self.wake()

    # -- the loop -----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if await self.pull():
                self._failures = 0
            else:
                self._failures += 1
                await asyncio.sleep(backoff_delay(self._failures, self.interval, self.rand()))
                continue
            deadline = loop.time() + interval_delay(self.interval, self.rand())
            if self.wait > 0:
                await self._long_poll_until(deadline)
            await self._pause_until(deadline)

    async def pull(self) -> bool:
        """One round now, as the loop runs it; False when it failed (the loop backs off)."""
        return await self._guarded(self._round())

    async def _pause_until(self, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def _guarded(self, work: Awaitable[str | None]) -> bool:
        """Run a round or a long poll; count its outcome; False when it failed (back off).
        Nothing but cancellation leaves here."""
        try:
            outcome = await work
        except FeedError as exc:
            self._set(state="unreachable", error=f"{exc.kind}: {exc.detail}")
            log.warning("feed %s: %s: %s", self.iss, exc.kind, exc.detail)
            self.pulls.inc(self.iss, exc.kind)
            return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # our side (the sink, a bug): logged, never fatal to the loop
            log.exception("feed %s: round failed", self.iss)
            self._set(error=f"internal: {type(exc).__name__}: {exc}"[:500])
            self.pulls.inc(self.iss, "fault")
            return False
        if outcome is None:  # a long poll that was cut short: nothing to count
            return True
        self.pulls.inc(self.iss, outcome)
        return outcome != "bad_head"

    async def _call(self, call: Awaitable[T], wait: float = 0.0) -> T:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
        # arrives as the call completes, and close() would then wait out a backoff.
        try:
            async with asyncio.timeout(wait + CALL_MARGIN):
                return await call
        except TimeoutError:
            raise FeedError("unreachable", f"no answer in {wait + CALL_MARGIN:g} s") from None

    # -- a round ------------------------------------------------------------------

    async def _round(self) -> str:
        now = self.clock()
        body = await self._call(self.source.get_head())
        try:
            head = verify_head(body, self.iss, self.trust(), now)
        except TaskError as exc:
            self._set(state="unreachable", error=f"head refused: {exc.code}: {exc.detail}")
            log.warning("feed %s: head refused: %s: %s", self.iss, exc.code, exc.detail)
            return "bad_head"
        decision = judge(await self.sink.stored_head(self.iss), head, now)
        if decision.kind == "rollback":
            return await self._rollback(decision)
        if decision.kind == "new_session":
            await self._new_session(decision)
        if decision.accepted:
            self._set(head_seq=head.seq)
        held = await self._read_held()
        start = decision.after if decision.after is not None else held
        fault = await self._catch_up(start, head if decision.accepted else None, decision)
        held = await self._read_held()
        self._set(last_pull=self.clock())
        if decision.kind == "stale":
            self._set(state="stale", error=f"head expired at {head.expires.isoformat()}")
            log.warning("feed %s: stale head (expired %s)", self.iss, head.expires.isoformat())
            return "stale"
        await self._check(head, held)
        if fault is not None:
            self._set(error=fault)
            return "fault"
        return "ok"

    async def _rollback(self, decision: Decision) -> str:
        head, stored = decision.head, decision.previous
        assert stored is not None
        text = f"head seq {head.seq} below the accepted {stored.seq} in session {head.session}"
        self._set(state="rollback", error=text)
        log.warning("feed %s: rollback refused: %s", self.iss, text)
        data = {"session": head.session, "stored_seq": stored.seq, "head_seq": head.seq}
        await self._alarm("feed_rollback", (head.session, stored.seq, head.seq), data)
        return "rollback"

    async def _new_session(self, decision: Decision) -> None:
        head, stored = decision.head, decision.previous
        assert stored is not None
        log.warning(
            "feed %s: new session %s (was %s): reading the log again from seq 1",
            self.iss,
            head.session,
            stored.session,
        )
        data = {"old_session": stored.session, "new_session": head.session, "head_seq": head.seq}
        await self._alarm("feed_new_session", (stored.session, head.session), data)
        self._ours.forget_divergence()

    async def _catch_up(self, after: int, head: Head | None, decision: Decision) -> str | None:
        """Take every task the feed serves after ``after``, page by page; the first fault
        found (the feed's order, or a task refused), or None. ``head`` (accepted) goes
        with the page that completes its seq, or is stored alone."""
        fault: str | None = None
        given = False
        while True:
            bodies = await self._call(self.source.get_tasks(after, self.limit, 0))
            if not bodies:
                break
            page, order_fault = await self._ordered(bodies, after + 1)
            if page:
                last = after + len(page)
                give = head if head is not None and not given and last >= head.seq else None
                taken = await self._take(page, give)
                given = given or give is not None
                fault = fault or await self._review(page, taken)
                if not any(t.stored for t in taken):
                    # Nothing of it could be stored (e.g. forged tasks claiming the next
                    # seqs): the round ends as at an empty page, or a hostile feed could
                    # keep it going through the whole seq space.
                    break
                after = self._after = last
            if order_fault is not None:
                log.warning("feed %s: fault: %s", self.iss, order_fault)
                fault = order_fault
                break
        stored = decision.previous
        if head is not None and not given and (stored is None or stored.jws != head.jws):
            await self.sink.store_head(head)
        return fault

    async def _take(self, page: Sequence[bytes], head: Head | None) -> list[Taken]:
        async with self._taking:
            return await self.sink.take(self.iss, page, head)

    async def _ordered(self, bodies: Sequence[bytes], first: int) -> tuple[list[bytes], str | None]:
        if sum(map(len, bodies)) > INLINE_PEEK_BYTES:
            count, fault = await asyncio.to_thread(check_page, bodies, first)
        else:
            count, fault = check_page(bodies, first)
        return list(bodies[:count]), fault

    async def _review(self, page: Sequence[bytes], taken: Sequence[Taken]) -> str | None:
        """Alarm each conflict once; say what the first refused task was, if any."""
        if len(taken) != len(page):
            log.error("feed %s: sink answered %d of %d tasks", self.iss, len(taken), len(page))
        first: str | None = None
        refused = 0
        for body, result in zip(page, taken, strict=False):
            if result.stored:
                continue
            if first is None:
                first = f"seq {result.seq} refused: {result.outcome}: {result.detail}"[:500]
            refused += 1
            if refused <= LOGGED_REFUSALS:
                log.warning(
                    "feed %s: task seq %s id %s refused: %s: %s",
                    self.iss,
                    result.seq,
                    result.id,
                    result.outcome,
                    result.detail,
                )
            if result.outcome == "conflict":
                sha = hashlib.sha256(body).hexdigest()
                data = {"seq": result.seq, "id": result.id, "sha256": sha, "detail": result.detail}
                await self._alarm("feed_conflict", (result.seq, sha), data)
        if refused > LOGGED_REFUSALS:
            log.warning(
                "feed %s: %d more tasks of this page refused (not logged one by one)",
                self.iss,
                refused - LOGGED_REFUSALS,
            )
        return first

    async def _read_held(self) -> int:
        held = await self.sink.held_through(self.iss)
        self._held = held
        self._after = max(self._after, held)
        self._set(held_seq=held)
        return held

    # -- consistency --------------------------------------------------------------

    async def _check(self, head: Head, held: int) -> None:
        ours = await self._ours.chain_at(head.seq) if held >= head.seq else None
        verdict = consistency(held, head.seq, ours, head.chain)
        if verdict != "diverged":
            if verdict == "in_sync":
                self._ours.forget_divergence()
            self._set(state=verdict, diverged_at=None, error="")
            return
        at, detail = await self._ours.first_difference(head, self._feed_page)
        self._set(state="diverged", diverged_at=at, error=detail)
        log.error("feed %s: diverged: %s", self.iss, detail)
        key = (head.session, at if at is not None else f"head {head.seq}")
        data = {"session": head.session, "head_seq": head.seq, "diverged_at": at, "detail": detail}
        await self._alarm("feed_diverged", key, data)

    async def _feed_page(self, after: int, upto: int) -> tuple[list[bytes], str | None]:
        """The feed's tasks after ``after`` (at most through ``upto``), checked to be in order."""
        bodies = await self._call(self.source.get_tasks(after, self.limit, 0))
        return await self._ordered(bodies[: upto - after], after + 1)

    # -- long polls between rounds ------------------------------------------------

    async def _long_poll_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not self._wake.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wait = min(self.wait, remaining)
            started = loop.time()
            if not await self._guarded(self._long_poll(wait)):
                return  # the next round backs off, or says what is wrong
            if self._idle_answer:
                # An empty answer before the wait was up: a server may ignore the hint
                # (§6), and must then be polled no faster than it was asked to wait.
                await self._pause_until(min(deadline, started + wait))

    async def _long_poll(self, wait: float) -> str | None:
        """One long poll after what the feed served last; the tasks it brings are taken
        (with no head: the next round brings that). None when a wake cut it short."""
        self._idle_answer = False
        fetch = asyncio.ensure_future(
            self._call(self.source.get_tasks(self._after, self.limit, wait), wait)
        )
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fetch, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not fetch.done():
                fetch.cancel()
        if fetch.cancelled():  # a wake came first: the round it asks for goes next
            await asyncio.wait({fetch})
            return None
        bodies = fetch.result()
        self._set(last_pull=self.clock())
        self._idle_answer = not bodies
        if not bodies:
            return "ok"
        page, fault = await self._ordered(bodies, self._after + 1)
        if page:
            taken = await self._take(page, None)
            fault = await self._review(page, taken) if fault is None else fault
            if any(t.stored for t in taken):
                self._after += len(page)
            else:
                # Nothing storable came: polled again no sooner than an empty answer
                # would be, from the same place (as in a round, a forged page is no progress).
                self._idle_answer = True
            await self._read_held()
        if fault is not None:
            self._set(error=fault)
            log.warning("feed %s: fault: %s", self.iss, fault)
            return "fault"
        return "ok"

    # -- status and alarms --------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        self.status = dataclasses.replace(self.status, **changes)

    async def _alarm(self, event: FeedEvent, key: tuple[object, ...], data: dict[str, Any]) -> None:
        """Record ``event`` durably, once per ``key``."""
        if (event, *key) in self._alarmed:
            return
        if len(self._alarmed) >= ALARMED_CAP:
            self._alarmed.clear()
        self._alarmed.add((event, *key))
        await self.sink.feed_event(self.iss, event, {"iss": self.iss, **data})
