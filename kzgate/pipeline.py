"""The path of one task: verify, store durably, apply everywhere, sign a receipt.

Register calls block (SQLite, fsync), so they run on one dedicated thread: the
register is only ever touched from there, and the event loop keeps serving.
Record-and-apply runs under one lock so that diffs reach every enforcer in the
order the register committed them; an enforcer that fails is marked dirty and
repaired by a full reconcile, and tasks it missed are answered 202 `accepted`
until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.enforce.base import Enforcer
from kzgate.enforce.notenforced import NotEnforced, for_targets
from kzgate.errors import NotFound, TaskError
from kzgate.metrics import Metrics, StoredState
from kzgate.model import Diff, State, Task
from kzgate.protocol.intake import verify_task
from kzgate.protocol.receipts import build_receipt, sign_receipt
from kzgate.protocol.trust import TrustStore
from kzgate.register.store import Register

log = logging.getLogger("kzgate.pipeline")

P = ParamSpec("P")
R = TypeVar("R")

# Bodies larger than this are verified off the event loop: a 100k-target task
# takes long enough to normalize that DNS answers would stall behind it.
INLINE_VERIFY_BYTES = 4 * 1024
APPLY_TIMEOUT_SECONDS = 30.0
REPAIR_INTERVAL_SECONDS = 1.0
STATUS_CODE = {"applied": 200, "partial": 200, "pending": 200, "cancelled": 200, "accepted": 202}
LOGGED_VALUES = 5  # target values named in one log line; the count says how many in all


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
        enforcers: Sequence[Enforcer],
        trust: TrustStore,
        operator_id: str,
        receipt_key: Ed25519PrivateKey,
        metrics: Metrics,
        clock: Callable[[], dt.datetime] = local_now,
        apply_timeout: float = APPLY_TIMEOUT_SECONDS,
    ) -> None:
        self.register = register
        self.enforcers = list(enforcers)
        self.trust = trust
        self.operator_id = operator_id
        self.receipt_key = receipt_key
        self.metrics = metrics
        self.clock = clock
        self.apply_timeout = apply_timeout
        self.dirty: set[str] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="register")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._repair_requests: dict[str, int] = {}  # drift reports per enforcer, ever
        self._stored_state = StoredState(0, {}, {})
        self._repair_task: asyncio.Task[None] | None = None
        metrics.watch_stored_state(lambda: self._stored_state)
        # Kept in step with every diff and reconcile: what each enforcer leaves out.
        self.not_enforced = NotEnforced(enforcer.name for enforcer in self.enforcers)
        metrics.watch_not_enforced(self.not_enforced.counts)
        for enforcer in self.enforcers:
            # Present at 0 from the start, so increase() in alert rules sees them.
            metrics.enforcer_errors.labels(enforcer.name)
            metrics.drift_repairs.labels(enforcer.name)

    async def in_register(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking register call on the register's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Reconcile every enforcer to the register, then keep repairing the dirty ones."""
        async with self._lock:
            state = await self.in_register(self.register.state.snapshot)
            for enforcer in self.enforcers:
                await self._reconcile(enforcer, state)
        for name, count in self.not_enforced.counts().items():
            if count:
                log.warning(
                    "enforcer %s cannot represent %d active target(s), enforced everywhere"
                    " else: %s",
                    name,
                    count,
                    ", ".join(self.not_enforced.values(name, LOGGED_VALUES)),
                )
        await self._promote_unapplied()
        self._repair_task = asyncio.create_task(self._repair_loop(), name="enforcer-repair")

    async def close(self) -> None:
        if self._repair_task is not None:
            self._repair_task.cancel()
            await asyncio.gather(self._repair_task, return_exceptions=True)
        async with self._lock:
            await self.in_register(self.register.close)
        self._executor.shutdown(wait=True)

    @property
    def healthy(self) -> bool:
        return not self.dirty

    # -- tasks ---------------------------------------------------------------

    async def submit(self, body: bytes) -> Answer:
        """Take one task's bytes; answer with a signed receipt or raise TaskError."""
        received_at = self.clock()
        started = time.monotonic()
        try:
            task = await self._verify(body, received_at)
        except TaskError as exc:
            self.metrics.tasks.labels("unknown", exc.code).inc()
            raise
        try:
            answer = await self._record_and_apply(task, received_at, started)
        except TaskError as exc:
            self.metrics.tasks.labels(task.type, exc.code).inc()
            log.info(
                "task refused iss=%s id=%s type=%s outcome=%s detail=%s",
                task.iss,
                task.id,
                task.type,
                exc.code,
                exc.detail,
            )
            raise
        return answer

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
        async with self._lock:
            recorded = await self.in_register(self.register.record, task, received_at)
            if recorded.status == "duplicate":
                self.metrics.tasks.labels(task.type, "duplicate").inc()
                return await self._duplicate(task, recorded.stored_receipt)
            status: str = recorded.status
            if status == "applied" and not await self._apply(recorded.diff):
                status = "accepted"
        applied_at = self.clock() if status != "accepted" else None
        elapsed = time.monotonic() - started
        missing: dict[str, list[str]] = {}
        if status == "applied" and task.type == "restrict":
            missing = for_targets(self.enforcers, task.instruction, task.targets)
            status = "partial" if missing else status
        if status in ("applied", "partial"):
            self.metrics.apply_seconds.observe(elapsed)
        self.metrics.tasks.labels(task.type, status).inc()
        receipt = self._sign(
            task.iss, task.id, task.seq, task.sha256, status, received_at, applied_at, missing
        )
        await self._store_receipt(task.iss, task.id, receipt, applied_at)
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
        return Answer(STATUS_CODE[status], receipt)

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
            status = "applied" if self.healthy else "accepted"
        missing: dict[str, list[str]] = {}
        if status == "applied":
            made = await self.in_register(self.register.restrict_targets, iss, task_id)
            missing = for_targets(self.enforcers, *made) if made is not None else {}
            status = "partial" if missing else status
        applied_at = self.clock() if status != "accepted" else None
        if status in ("applied", "partial") and applied_at is not None:
            self.metrics.apply_seconds.observe((applied_at - received_at).total_seconds())
        receipt = self._sign(iss, task_id, *identity, status, received_at, applied_at, missing)
        await self._store_receipt(iss, task_id, receipt, applied_at)
        return Answer(STATUS_CODE[status], receipt)

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

    # -- enforcers -----------------------------------------------------------

    async def _apply(self, diff: Diff) -> bool:
        """Apply to every clean enforcer; True when all of them are in step."""
        if diff.is_empty():
            return not self.dirty
        for enforcer in self.enforcers:
            # Dirty ones too: this follows the register, not the enforcer's health.
            new = self.not_enforced.update(enforcer, diff)
            if new:
                log.warning(
                    "enforcer %s cannot represent %d new target(s), left out there and"
                    " enforced everywhere else: %s",
                    enforcer.name,
                    len(new),
                    ", ".join(new[:LOGGED_VALUES]),
                )
        for enforcer in self.enforcers:
            if enforcer.name in self.dirty:
                continue  # its next reconcile includes this diff
            try:
                await asyncio.wait_for(enforcer.apply(diff), self.apply_timeout)
            except Exception:
                log.exception("enforcer %s failed to apply a diff; reconciling", enforcer.name)
                self.metrics.enforcer_errors.labels(enforcer.name).inc()
                self.dirty.add(enforcer.name)
        if self.dirty:
            # One immediate attempt: drift (an element someone removed) is
            # usually fixed by a reconcile, and then this task is in force now.
            await self._repair_locked()
        return not self.dirty

    async def _reconcile(self, enforcer: Enforcer, state: State) -> bool:
        self.not_enforced.reset(enforcer, state)
        requested = self._repair_requests.get(enforcer.name, 0)
        try:
            fixed = await asyncio.wait_for(enforcer.reconcile(state), self.apply_timeout)
        except Exception:
            log.exception("enforcer %s failed to reconcile", enforcer.name)
            self.metrics.enforcer_errors.labels(enforcer.name).inc()
            self.dirty.add(enforcer.name)
            return False
        if self._repair_requests.get(enforcer.name, 0) == requested:
            self.dirty.discard(enforcer.name)
        else:
            # Drift was reported while this reconcile ran: what it wrote may
            # already be undone, so it stays dirty and goes round again.
            self._wake.set()
        if not fixed.is_empty():
            log.info("enforcer %s reconciled: %d changes", enforcer.name, fixed.size())
        return True

    def request_repair(self, name: str) -> None:
        """An enforcer saw its state changed under it (drift): reconcile it soon.

        Call on the event loop (from another thread: loop.call_soon_threadsafe).
        """
        self.dirty.add(name)
        self._repair_requests[name] = self._repair_requests.get(name, 0) + 1
        self._wake.set()

    async def repair(self) -> None:
        """Reconcile the dirty enforcers to the register, then answer the tasks they held up."""
        if not self.dirty:
            return
        async with self._lock:
            await self._repair_locked()
        if not self.dirty:
            await self._promote_unapplied()

    async def _repair_locked(self) -> None:
        state = await self.in_register(self.register.state.snapshot)
        for enforcer in self.enforcers:
            if enforcer.name in self.dirty and await self._reconcile(enforcer, state):
                self.metrics.drift_repairs.labels(enforcer.name).inc()
                log.warning("enforcer %s repaired: reconciled to the register", enforcer.name)

    async def _repair_loop(self) -> None:
        while True:
            # Woken at once by request_repair, else retried on a timer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), REPAIR_INTERVAL_SECONDS)
            self._wake.clear()
            try:
                await self.repair()
            except Exception:
                log.exception("enforcer repair failed")

    async def _promote_unapplied(self) -> None:
        """Tasks answered `accepted` (or never answered) are in force now: re-sign them."""
        # Under the lock no diff can land between the dirty check and the signature.
        async with self._lock:
            for iss, task_id in await self.in_register(self.register.unapplied_tasks):
                if self.dirty:
                    return
                answer = await self._sign_missing(iss, task_id)
                log.info(
                    "task iss=%s id=%s outcome=%s (re-signed)", iss, task_id, answer.body["status"]
                )

    def not_enforced_summary(self, limit: int = 20) -> dict[str, dict[str, Any]]:
        """Per enforcer that leaves targets out: how many, and the first ``limit`` of them."""
        return {
            name: {"count": count, "targets": self.not_enforced.values(name, limit)}
            for name, count in self.not_enforced.counts().items()
            if count
        }

    async def refresh_stored_state(self) -> None:
        """Re-read the stored-state gauges; the metrics endpoint calls this per scrape."""
        self._stored_state = await self.in_register(self._read_stored_state)

    def _read_stored_state(self) -> StoredState:
        counts = self.register.state.counts()
        return StoredState(
            instructions_active=self.register.active_instruction_count(),
            targets_active={k: counts[k] for k in ("domain", "ip", "cidr", "url", "app")},
            # Every configured issuer has a series, at 0 until it is missing something.
            seq_gaps={**dict.fromkeys(self.trust.issuers(), 0), **self.register.seq_gap_counts()},
        )


def _not_enforced_text(missing: dict[str, list[str]]) -> str:
    """`` not_enforced=rpz:2(a.kz,b.kz)`` for a log line, or nothing."""
    if not missing:
        return ""
    parts = [
        f"{name}:{len(values)}({','.join(values[:LOGGED_VALUES])})"
        for name, values in sorted(missing.items())
    ]
    return " not_enforced=" + ";".join(parts)
