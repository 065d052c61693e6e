"""Every enforcer, kept in step with the register.

Each diff goes to every enforcer that is in step; one that fails (or reports
drift) is marked dirty and repaired by a full reconcile to the register's
state, at once and then on a timer. Tasks it missed are answered 202
``accepted`` until then; once every enforcer is in step again the pipeline
re-signs them (``in_step``). The set also keeps, per enforcer, the active
targets it cannot represent, and runs every enforcer's lifecycle (base.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any

from kzgate.config import Config
from kzgate.enforce.base import Enforcer, Listener
from kzgate.enforce.notenforced import NotEnforced, for_targets
from kzgate.metrics import (
    ENFORCER_DRIFT_REPAIRS,
    ENFORCER_ERRORS,
    NOT_ENFORCED_TARGETS,
    Collector,
    Counts,
    Reading,
    by_label,
)
from kzgate.model import Diff, InstructionRef, State, Target

log = logging.getLogger("kzgate.enforce")

APPLY_TIMEOUT_SECONDS = 30.0  # per enforcer, per apply or reconcile
REPAIR_INTERVAL_SECONDS = 1.0
LOGGED_VALUES = 5  # target values named in one log line; the count says how many in all

ReadState = Callable[[], Awaitable[State]]
InStep = Callable[[], Awaitable[None]]


class EnforcerSet:
    """The enforcers, in the order they start, reconcile, serve and apply."""

    def __init__(
        self, enforcers: Iterable[Enforcer], *, apply_timeout: float = APPLY_TIMEOUT_SECONDS
    ) -> None:
        self.enforcers = list(enforcers)
        names = [enforcer.name for enforcer in self.enforcers]
        if len(set(names)) != len(names):
            raise ValueError(f"two enforcers share a name: {names}")
        self.apply_timeout = apply_timeout
        self.dirty: set[str] = set()
        # Held while a diff is on its way from the register to the enforcers
        # (the pipeline's record-and-apply) and while they are reconciled, so
        # that diffs reach every enforcer in the order the register committed them.
        self.lock = asyncio.Lock()
        # Kept in step with every diff and reconcile: what each enforcer leaves out.
        self.not_enforced = NotEnforced(names)
        # Present at 0 from the start, so increase() in alert rules sees them.
        self.errors = Counts(ENFORCER_ERRORS, [(name,) for name in names])
        self.repairs = Counts(ENFORCER_DRIFT_REPAIRS, [(name,) for name in names])
        self._wake = asyncio.Event()
        self._repair_requests: dict[str, int] = {}  # drift reports per enforcer, ever
        self._repair_task: asyncio.Task[None] | None = None
        self._started: list[Enforcer] = []
        self._read_state: ReadState | None = None
        self._in_step: InStep | None = None

    def __getitem__(self, name: str) -> Enforcer:
        for enforcer in self.enforcers:
            if enforcer.name == name:
                return enforcer
        raise KeyError(name)

    @property
    def in_step(self) -> bool:
        """Every enforcer holds the register's state (none is waiting for a repair)."""
        return not self.dirty

    # -- lifecycle -------------------------------------------------------------

    async def start(self, read_state: ReadState, in_step: InStep) -> None:
        """Start each enforcer, reconcile each to ``read_state()``, then keep repairing.

        ``in_step`` runs after a repair has brought every enforcer back in step.
        A StartError of an enforcer's start propagates; ``close`` then closes
        it and those started before it.
        """
        self._read_state, self._in_step = read_state, in_step
        for enforcer in self.enforcers:
            self._started.append(enforcer)  # closed too if its start fails half-way
            await enforcer.start(self._drift_reporter(enforcer.name))
        async with self.lock:
            state = await read_state()
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
        self._repair_task = asyncio.create_task(self._repair_loop(), name="enforcer-repair")

    async def serve(self) -> None:
        """Each enforcer begins serving what it holds (after ``start``: reconciled)."""
        for enforcer in self.enforcers:
            await enforcer.serve()

    async def close(self) -> None:
        """Stop repairing, then close every started enforcer, the last started first."""
        if self._repair_task is not None:
            self._repair_task.cancel()
            await asyncio.gather(self._repair_task, return_exceptions=True)
            self._repair_task = None
        while self._started:
            enforcer = self._started.pop()
            try:
                await enforcer.close()
            except Exception:
                log.exception("enforcer %s failed to close", enforcer.name)

    def _drift_reporter(self, name: str) -> Callable[[], None]:
        return lambda: self.request_repair(name)

    # -- diffs -----------------------------------------------------------------

    async def apply(self, diff: Diff) -> bool:
        """Apply to every clean enforcer (``lock`` held); True when all of them are in step."""
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
                async with asyncio.timeout(self.apply_timeout):
                    await enforcer.apply(diff)
            except Exception:
                log.exception("enforcer %s failed to apply a diff; reconciling", enforcer.name)
                self.errors.inc(enforcer.name)
                self.dirty.add(enforcer.name)
        if self.dirty:
            # One immediate attempt: drift (an element someone removed) is
            # usually fixed by a reconcile, and then this task is in force now.
            await self._repair_locked()
        return not self.dirty

    def uncarried(self, ref: InstructionRef, targets: Iterable[Target]) -> dict[str, list[str]]:
        """Per enforcer that cannot carry some of ``targets``: their values, in order."""
        return for_targets(self.enforcers, ref, targets)

    # -- repairs ---------------------------------------------------------------

    def request_repair(self, name: str) -> None:
        """An enforcer saw its state changed under it (drift): reconcile it soon.

        Call on the event loop (from another thread: loop.call_soon_threadsafe).
        """
        self.dirty.add(name)
        self._repair_requests[name] = self._repair_requests.get(name, 0) + 1
        self._wake.set()

    async def repair(self) -> None:
        """Reconcile the dirty enforcers to the register; once all are in step, ``in_step``."""
        if not self.dirty:
            return
        async with self.lock:
            await self._repair_locked()
        if not self.dirty and self._in_step is not None:
            await self._in_step()

    async def _repair_locked(self) -> None:
        if self._read_state is None:
            raise RuntimeError("the enforcer set is not started")
        state = await self._read_state()
        for enforcer in self.enforcers:
            if enforcer.name in self.dirty and await self._reconcile(enforcer, state):
                self.repairs.inc(enforcer.name)
                log.warning("enforcer %s repaired: reconciled to the register", enforcer.name)

    async def _reconcile(self, enforcer: Enforcer, state: State) -> bool:
        self.not_enforced.reset(enforcer, state)
        requested = self._repair_requests.get(enforcer.name, 0)
        try:
            async with asyncio.timeout(self.apply_timeout):
                fixed = await enforcer.reconcile(state)
        except Exception:
            log.exception("enforcer %s failed to reconcile", enforcer.name)
            self.errors.inc(enforcer.name)
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

    async def _repair_loop(self) -> None:
        while True:
            # Woken at once by request_repair, else retried on a timer. Not
            # wait_for: on 3.11 it loses a cancel that meets a report, and then
            # close() would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPAIR_INTERVAL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.repair()
            except Exception:
                log.exception("enforcer repair failed")

    # -- what the daemon shows -------------------------------------------------

    def health(self) -> dict[str, str]:
        """Per enforcer: ``ok``, or ``repairing`` while it is out of step."""
        return {e.name: "repairing" if e.name in self.dirty else "ok" for e in self.enforcers}

    def status(self) -> dict[str, object]:
        """The fields every enforcer adds to ``GET /status``."""
        out: dict[str, object] = {}
        for enforcer in self.enforcers:
            out.update(enforcer.status())
        return out

    def not_enforced_summary(self, limit: int = 20) -> dict[str, dict[str, Any]]:
        """Per enforcer that leaves targets out: how many, and the first ``limit`` of them."""
        return {
            name: {"count": count, "targets": self.not_enforced.values(name, limit)}
            for name, count in self.not_enforced.counts().items()
            if count
        }

    def listeners(self) -> dict[str, Listener]:
        out: dict[str, Listener] = {}
        for enforcer in self.enforcers:
            out.update(enforcer.listeners())
        return out

    def collectors(self) -> Sequence[Collector]:
        """The set's own metrics, then each enforcer's."""
        own: list[Collector] = [
            self.errors,
            self.repairs,
            Reading(NOT_ENFORCED_TARGETS, lambda: by_label(self.not_enforced.counts())),
        ]
        return own + [c for enforcer in self.enforcers for c in enforcer.collectors()]

    async def refresh(self) -> None:
        for enforcer in self.enforcers:
            await enforcer.refresh()

    async def reload(self, cfg: Config, live: Collection[str]) -> None:
        for enforcer in self.enforcers:
            await enforcer.reload(cfg, live)
