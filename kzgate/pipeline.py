"""The path of one task: verify, store durably, apply everywhere, sign a receipt.

Register calls block (SQLite, fsync), so they run on one dedicated thread: the
register is only ever touched from there, and the event loop keeps serving.
Record-and-apply runs under the enforcer set's lock so that diffs reach every
enforcer in the order the register committed them. An enforcer that falls out
of step is the set's to repair (enforce/set.py); tasks it missed are answered
202 `accepted` until then, and signed again here once the set is in step.

Tasks pulled from an issuer's feed (feed/puller.py) take the same path a page
at a time (``take``, the FeedSink of feed/ports.py): one register transaction
and one combined diff for the page, each task still judged, answered and
signed on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.diffs import compose
from kzgate.enforce.set import LOGGED_VALUES, EnforcerSet
from kzgate.errors import NotFound, TaskError
from kzgate.feed.head import Head
from kzgate.feed.ports import FeedEvent, Taken
from kzgate.metrics import Metrics
from kzgate.model import InstructionRef, State, Task
from kzgate.protocol.intake import verify_task
from kzgate.protocol.receipts import build_receipt, sign_receipt
from kzgate.protocol.trust import TrustStore
from kzgate.register.readmodel import RegisterReader
from kzgate.register.store import ReceiptItem, Recorded, Register
from kzgate.register.thread import RegisterThread

log = logging.getLogger("kzgate.pipeline")

P = ParamSpec("P")
R = TypeVar("R")

# Bodies larger than this are verified off the event loop: a 100k-target task
# takes long enough to normalize that DNS answers would stall behind it.
INLINE_VERIFY_BYTES = 4 * 1024
STATUS_CODE = {"applied": 200, "partial": 200, "pending": 200, "cancelled": 200, "accepted": 202}


def local_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).astimezone()


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


class Pipeline:
    """Everything between the HTTP edge and the register and enforcers."""

    def __init__(
        self,
        *,
        register: Register,
        enforcers: EnforcerSet,
        trust: TrustStore,
        operator_id: str,
        receipt_key: Ed25519PrivateKey,
        metrics: Metrics,
        clock: Callable[[], dt.datetime] = local_now,
    ) -> None:
        self.register = register
        self.enforcers = enforcers
        self.trust = trust
        self.operator_id = operator_id
        self.receipt_key = receipt_key
        self.metrics = metrics
        self.clock = clock
        self._thread = RegisterThread()
        self._pushed: list[Callable[[str, int], None]] = []
        self._resumed: list[Callable[[InstructionRef, dt.datetime], None]] = []
        # What the API, the status and the scrape read, on the same thread.
        self.reader = RegisterReader(register, self._thread)
        metrics.register(*enforcers.collectors(), *self.reader.collectors())

    async def in_register(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking register call on the register's own thread."""
        return await self._thread.run(fn, *args, **kwargs)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start and reconcile every enforcer to the register (the set then keeps them in
        step), and sign the receipts of tasks stored but never answered `applied`."""
        await self.enforcers.start(self._register_state, self._promote_unapplied)
        await self._promote_unapplied()

    async def close(self) -> None:
        """Close every enforcer, then the register (under the lock: no diff in flight)."""
        await self.enforcers.close()
        async with self.enforcers.lock:
            await self.in_register(self.register.close)
        self._thread.shutdown()

    async def _register_state(self) -> State:
        return await self.in_register(self.register.state.snapshot)

    # -- tasks ---------------------------------------------------------------

    async def submit(self, body: bytes) -> Answer:
        """Take one task's bytes; answer with a signed receipt or raise TaskError."""
        received_at = self.clock()
        started = time.monotonic()
        try:
            task = await self._verify(body, received_at)
        except TaskError as exc:
            self.metrics.tasks.inc("unknown", exc.code)
            raise
        try:
            answer = await self._record_and_apply(task, received_at, started)
        except TaskError as exc:
            self._refused(task, exc)
            raise
        return answer

    def _refused(self, task: Task, exc: TaskError) -> None:
        """Count and log a verified task the register refused (Conflict, Forbidden)."""
        self.metrics.tasks.inc(task.type, exc.code)
        log.info(
            "task refused iss=%s id=%s type=%s outcome=%s detail=%s",
            task.iss,
            task.id,
            task.type,
            exc.code,
            exc.detail,
        )

    # -- the feed: a page of one issuer's tasks (feed/ports.py FeedSink) ---------

    async def take(self, iss: str, bodies: Sequence[bytes], head: Head | None) -> list[Taken]:
        """Each task of ``bodies`` as ``submit`` would take it, as one group: one register
        transaction (with ``head``), one combined diff, receipts stored in one go."""
        received_at = self.clock()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        verified = await loop.run_in_executor(None, self._verify_page, bodies, received_at)
        taken: list[Taken | None] = [None] * len(bodies)
        page: list[tuple[int, Task]] = []
        for i, item in enumerate(verified):
            if isinstance(item, TaskError):
                self.metrics.tasks.inc("unknown", item.code)
                taken[i] = Taken(None, None, item.code, item.detail)
            elif item.iss != iss:  # never stored: a feed serves its own issuer's log only
                detail = f"a task of issuer {item.iss!r} on the feed of {iss!r}"
                taken[i] = Taken(item.seq, item.id, "wrong_issuer", detail)
            else:
                page.append((i, item))
        tasks = [task for _, task in page]
        async with self.enforcers.lock:
            results = await self.in_register(
                self.register.record_many, tasks, received_at, head=head
            )
            applied = [r.diff for r in results if isinstance(r, Recorded) and r.status == "applied"]
            in_step = not applied or await self.enforcers.apply(compose(applied))
            new = {task.id for task, r in zip(tasks, results, strict=True) if _is_new(r)}
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, Recorded) and result.status == "duplicate":
                    self.metrics.tasks.inc(task.type, "duplicate")
                    if result.stored_receipt is None and task.id not in new:
                        await self._sign_missing(task.iss, task.id)  # as a pushed duplicate's
        elapsed = time.monotonic() - started
        receipts: list[ReceiptItem] = []
        lifted: list[tuple[InstructionRef, dt.datetime | None]] = []
        for (i, task), result in zip(page, results, strict=True):
            if isinstance(result, TaskError):
                self._refused(task, result)
                taken[i] = Taken(task.seq, task.id, result.code, result.detail)
            elif result.status == "duplicate":
                taken[i] = Taken(task.seq, task.id, "duplicate")
            else:
                status, receipt, applied_at = self._settle(
                    task, result, in_step, received_at, elapsed
                )
                receipts.append((task.iss, task.id, receipt, applied_at))
                taken[i] = Taken(task.seq, task.id, status)
                if task.type == "resume" and status == "applied":
                    lifted.append((task.instruction, applied_at))
        await self._store_receipts(receipts)
        for ref, at in lifted:
            self._tell_resumed(ref, at)
        return [t for t in taken if t is not None]

    def _verify_page(self, bodies: Sequence[bytes], now: dt.datetime) -> list[Task | TaskError]:
        out: list[Task | TaskError] = []
        for body in bodies:
            try:
                out.append(verify_task(body, self.trust, self.operator_id, now))
            except TaskError as exc:
                out.append(exc)
        return out

    async def stored_head(self, iss: str) -> Head | None:
        return await self.in_register(self.register.stored_head, iss)

    async def store_head(self, head: Head) -> None:
        await self.in_register(self.register.store_head, head, self.clock())

    async def held_through(self, iss: str) -> int:
        return await self.in_register(self.register.held_through, iss)

    async def payload_hashes(self, iss: str, first: int, last: int) -> list[bytes]:
        return await self.in_register(self.register.payload_hashes, iss, first, last)

    async def feed_event(self, iss: str, event: FeedEvent, data: dict[str, Any]) -> None:
        await self.in_register(self.register.feed_event, iss, event, data, self.clock())

    def on_pushed(self, callback: Callable[[str, int], None]) -> None:
        """``callback(iss, seq)`` after each pushed task is stored (not a duplicate);
        never for tasks taken from a feed."""
        self._pushed.append(callback)

    def _tell_pushed(self, task: Task) -> None:
        for callback in self._pushed:
            try:
                callback(task.iss, task.seq)
            except Exception:  # the task is stored and answered: that must stand
                log.exception("a pushed-task callback failed for %s seq %d", task.iss, task.seq)

    def on_resumed(self, callback: Callable[[InstructionRef, dt.datetime], None]) -> None:
        """``callback(instruction, applied_at)`` after each resume is applied and its
        receipt stored (pushed, from a feed, or signed late); the prober's hook."""
        self._resumed.append(callback)

    def _tell_resumed(self, ref: InstructionRef, applied_at: dt.datetime | None) -> None:
        if applied_at is None:
            return
        for callback in self._resumed:
            try:
                callback(ref, applied_at)
            except Exception:  # the resume is in force and answered: that must stand
                log.exception("a resumed-instruction callback failed for %s", ref.label())

    async def receipt(self, iss: str, task_id: str) -> Answer:
        receipt = await self.in_register(self.register.get_receipt, iss, task_id)
        if receipt is None:
            return await self._sign_missing(iss, task_id)
        return Answer(STATUS_CODE.get(str(receipt["status"]), 200), receipt)

    async def _verify(self, body: bytes, now: dt.datetime) -> Task:
        if len(body) <= INLINE_VERIFY_BYTES:
            return verify_task(body, self.trust, self.operator_id, now)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, verify_task, body, self.trust, self.operator_id, now
        )

    async def _record_and_apply(
        self, task: Task, received_at: dt.datetime, started: float
    ) -> Answer:
        async with self.enforcers.lock:
            recorded = await self.in_register(self.register.record, task, received_at)
            if recorded.status == "duplicate":
                self.metrics.tasks.inc(task.type, "duplicate")
                return await self._duplicate(task, recorded.stored_receipt)
            in_step = recorded.status != "applied" or await self.enforcers.apply(recorded.diff)
        status, receipt, applied_at = self._settle(
            task, recorded, in_step, received_at, time.monotonic() - started
        )
        await self._store_receipt(task.iss, task.id, receipt, applied_at)
        self._tell_pushed(task)
        if task.type == "resume" and status == "applied":
            self._tell_resumed(task.instruction, applied_at)
        return Answer(STATUS_CODE[status], receipt)

    def _settle(
        self,
        task: Task,
        recorded: Recorded,
        in_step: bool,
        received_at: dt.datetime,
        elapsed: float,
    ) -> tuple[str, dict[str, Any], dt.datetime | None]:
        """The status of a task just recorded (not a duplicate) and applied (``in_step``:
        every enforcer holds it), counted, logged, and its receipt signed: the same
        for a pushed task and for each task of a page taken from a feed."""
        status: str = recorded.status
        if status == "applied" and not in_step:
            status = "accepted"
        applied_at = self.clock() if status != "accepted" else None
        missing: dict[str, list[str]] = {}
        if status == "applied" and task.type == "restrict":
            missing = self.enforcers.uncarried(task.instruction, task.targets)
            status = "partial" if missing else status
        if status in ("applied", "partial"):
            self.metrics.apply_seconds.observe(elapsed)
        self.metrics.tasks.inc(task.type, status)
        receipt = self._sign(
            task.iss, task.id, task.seq, task.sha256, status, received_at, applied_at, missing
        )
        log.log(
            logging.WARNING if missing else logging.INFO,
            "task iss=%s id=%s seq=%d type=%s outcome=%s apply_ms=%.2f diff=%d%s",
            task.iss,
            task.id,
            task.seq,
            task.type,
            status,
            elapsed * 1000,
            recorded.diff.size(),
            _not_enforced_text(missing),
        )
        return status, receipt, applied_at

    async def _duplicate(self, task: Task, stored: dict[str, Any] | None) -> Answer:
        if stored is not None:
            return Answer(STATUS_CODE.get(str(stored["status"]), 200), stored)
        return await self._sign_missing(task.iss, task.id)

    async def _sign_missing(self, iss: str, task_id: str) -> Answer:
        """Sign the receipt of a task that is stored without one.

        That happens when the daemon stopped, or the receipt's write failed,
        between the commit and the answer. The commit is what counts: the
        start-up reconcile (or the apply that preceded the failure) has put
        the task in force, so its receipt can be signed now.
        """
        found = await self.in_register(self.register.get_task_status, iss, task_id)
        identity = await self.in_register(self.register.task_identity, iss, task_id)
        if found is None or identity is None:
            raise NotFound(f"no task {task_id!r} of issuer {iss!r}")
        stored_status, received_at = found
        if stored_status in ("pending", "cancelled"):
            status = stored_status
        else:
            status = "applied" if self.enforcers.in_step else "accepted"
        missing: dict[str, list[str]] = {}
        if status == "applied":
            made = await self.in_register(self.register.restrict_targets, iss, task_id)
            missing = self.enforcers.uncarried(*made) if made is not None else {}
            status = "partial" if missing else status
        applied_at = self.clock() if status != "accepted" else None
        if status in ("applied", "partial") and applied_at is not None:
            self.metrics.apply_seconds.observe((applied_at - received_at).total_seconds())
        receipt = self._sign(iss, task_id, *identity, status, received_at, applied_at, missing)
        await self._store_receipt(iss, task_id, receipt, applied_at)
        if status == "applied" and self._resumed:
            lifts = await self.in_register(self.register.resume_of, iss, task_id)
            if lifts is not None:
                self._tell_resumed(lifts[0], applied_at)
        return Answer(STATUS_CODE[status], receipt)

    async def _store_receipts(self, items: Sequence[ReceiptItem]) -> None:
        """``_store_receipt`` of a page's receipts, in one transaction."""
        if not items:
            return
        try:
            await self.in_register(self.register.set_receipts, items)
        except Exception:
            log.exception("could not store the receipts of %d task(s); will re-sign", len(items))

    async def _store_receipt(
        self, iss: str, task_id: str, receipt: dict[str, Any], applied_at: dt.datetime | None
    ) -> None:
        # The task itself is committed; a receipt that fails to store can be
        # signed again later (_sign_missing), so this must not fail the answer.
        try:
            await self.in_register(self.register.set_receipt, iss, task_id, receipt, applied_at)
        except Exception:
            log.exception("could not store the receipt of %s/%s; will re-sign", iss, task_id)

    def _sign(
        self,
        iss: str,
        task_id: str,
        seq: int,
        sha256: str,
        status: str,
        received_at: dt.datetime,
        applied_at: dt.datetime | None,
        not_enforced: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        body = build_receipt(
            status=status,
            task_iss=iss,
            task_id=task_id,
            seq=seq,
            sha256=sha256,
            operator=self.operator_id,
            received_at=received_at,
            applied_at=applied_at,
            not_enforced=not_enforced,
        )
        return sign_receipt(body, self.receipt_key, self.operator_id)

    async def _promote_unapplied(self) -> None:
        """Tasks answered `accepted` (or never answered) are in force now: re-sign them."""
        # Under the lock no diff can land between the in-step check and the signature.
        async with self.enforcers.lock:
            for iss, task_id in await self.in_register(self.register.unapplied_tasks):
                if not self.enforcers.in_step:
                    return
                answer = await self._sign_missing(iss, task_id)
                log.info(
                    "task iss=%s id=%s outcome=%s (re-signed)", iss, task_id, answer.body["status"]
                )


def _is_new(result: Recorded | TaskError) -> bool:
    return isinstance(result, Recorded) and result.status != "duplicate"


def _not_enforced_text(missing: dict[str, list[str]]) -> str:
    """`` not_enforced=rpz:2(a.kz,b.kz)`` for a log line, or nothing."""
    if not missing:
        return ""
    parts = [
        f"{name}:{len(values)}({','.join(values[:LOGGED_VALUES])})"
        for name, values in sorted(missing.items())
    ]
    return " not_enforced=" + ";".join(parts)
