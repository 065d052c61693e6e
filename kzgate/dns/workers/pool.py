"""The pool of DNS workers, as one enforcer: fork them, broadcast with acks, replace the dead.

apply() returns once every worker has acknowledged the diff; a worker that
dies is forked again from the control process's index (after the back-off of
crashes.py), and what it owed is settled by its replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Sequence

from kzgate.config import Config, DnsConfig, HostPort
from kzgate.dns.crashes import EngineKind, WorkerHealth
from kzgate.dns.fastpath import FAST
from kzgate.dns.local import block_settings
from kzgate.dns.telemetry import DnsCollector, DnsSnapshot, WorkerCollector, WorkerCounts, total
from kzgate.dns.types import BlockSettings
from kzgate.dns.workers.child import Setup, fork_worker
from kzgate.dns.workers.frames import frame, read_frame
from kzgate.dns.workers.handle import WorkerHandle, describe, reap
from kzgate.dns.workers.handover import SocketPair, WorkerStartError, bind_all, close_all
from kzgate.dns.workers.status import pool_status, worker_counts
from kzgate.enforce.base import Enforcer, Listener, StartError
from kzgate.metrics import Collector
from kzgate.model import Diff, State
from kzgate.policy import PolicyIndex

log = logging.getLogger("kzgate.dns.workers")

ACK_TIMEOUT_SECONDS = 10.0
POLL_TIMEOUT_SECONDS = 1.0  # a scrape waits at most this long for fresh counters


class WorkerPool(Enforcer):
    """The DNS workers as one enforcer: apply() returns once every worker has the diff.

    Its lifecycle: ``start`` binds every worker's sockets (before the start-up
    reconcile), ``serve`` forks the workers from the index (after it: the index
    then equals the register's state), ``close`` stops them.
    """

    name = "dns-workers"

    def __init__(self, index: PolicyIndex, cfg: DnsConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.count = cfg.workers
        self.listen: list[HostPort] = []
        self.workers: dict[int, WorkerHandle] = {}
        self.bound: list[tuple[str, int]] = []
        first_engine: EngineKind = "c" if FAST is not None else "python"
        self.health = [
            WorkerHealth(cfg.crash_limit, cfg.crash_window, first_engine) for _ in range(self.count)
        ]
        self._sockets: list[list[SocketPair]] = []  # per slot, one pair per listen address
        self._dying: list[WorkerHandle] = []  # replaced or being replaced, not yet reaped
        self._reforks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._retired = DnsSnapshot.zero()
        self._closing = False
        self._settings: BlockSettings | None = None
        self.started = False

    # -- lifecycle -----------------------------------------------------------

    async def bind(self) -> list[tuple[str, int]]:
        """Bind every worker's sockets here, in the control process, which keeps them open."""
        self._sockets, self.listen = await bind_all(self.cfg.listen, self.count)
        first = (udp.getsockname() for udp, _ in self._sockets[0])
        self.bound = [(str(host), int(port)) for host, port, *_ in first]
        return self.bound

    async def start(self, on_drift: Callable[[], None] | None = None) -> None:
        """Bind the sockets; the workers come in ``serve``, once the index holds the register."""
        try:
            await self.bind()
        except WorkerStartError as exc:
            raise StartError(f"dns: {exc}") from None

    async def serve(self) -> None:
        """Fork every worker from the index and wait until each is listening."""
        if not self._sockets:
            await self.bind()
        for slot in range(self.count):
            self._fork(slot)
        try:
            await asyncio.gather(*(w.ready for w in self.workers.values()))
        except WorkerStartError as exc:
            # A worker could not start: stop the others and say why, rather
            # than fork again and again.
            await self.close()
            raise StartError(f"dns: {exc}") from None
        self.started = True

    async def close(self) -> None:
        self._closing = True
        for task in self._reforks:
            task.cancel()
        workers = self._all()
        for worker in workers:
            if not worker.dead:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
            if worker.writer is not None:
                worker.writer.close()
        loop = asyncio.get_running_loop()
        for worker in workers:
            if not worker.reaped:
                await loop.run_in_executor(None, reap, worker.pid)
                worker.reaped = True
            if worker.reader_task is not None:
                worker.reader_task.cancel()
            worker.stop_reading_crashes()
        close_all(self._sockets)
        self._sockets = []

    def _all(self) -> list[WorkerHandle]:
        """Every worker not yet retired: serving, starting, or dying."""
        unique = {w.pid: w for w in (*self._dying, *self.workers.values())}
        return [w for w in unique.values() if not w.retired]

    def snapshot(self) -> DnsSnapshot:
        return total([self._retired, *(w.snapshot for w in self._all())])

    async def refresh(self) -> None:
        """Have every live worker report its counters now (a scrape reads them next)."""
        self._seq += 1
        seq, poll = self._seq, frame(("poll", self._seq, None))
        asked = [w for w in self.workers.values() if not w.dead and w.ready.done()]
        loop = asyncio.get_running_loop()
        for worker in asked:
            worker.pending[seq] = loop.create_future()
            worker.send(poll)
        if asked:
            await asyncio.wait([w.pending[seq] for w in asked], timeout=POLL_TIMEOUT_SECONDS)
        for worker in asked:
            worker.pending.pop(seq, None)

    def counts(self) -> WorkerCounts:
        return worker_counts(self.health)

    def collectors(self) -> list[Collector]:
        return [DnsCollector(self.snapshot), WorkerCollector(self.counts)]

    def listeners(self) -> dict[str, Listener]:
        if not self.bound:
            return {}
        return {"dns": Listener(self.bound[0], lambda: self.snapshot().refusals)}

    def status(self) -> dict[str, object]:
        """For `kzgate status`: each worker's process, engine and crashes."""
        return pool_status(self.health, self.workers, self.cfg)

    async def reload(self, cfg: Config, live: Collection[str]) -> None:
        """The block answers always (they are cheap to send), the upstreams when they changed."""
        await self.set_settings(block_settings(cfg.dns))
        if "dns.upstreams" in live:
            await self.set_upstreams(cfg.dns.upstreams)

    # -- the Enforcer protocol -------------------------------------------------

    async def apply(self, diff: Diff) -> None:
        domain_part = Diff(
            domains_added=diff.domains_added,
            domains_removed=diff.domains_removed,
            domains_relabelled=diff.domains_relabelled,
        )
        if not domain_part.is_empty():
            await self._broadcast("diff", domain_part)

    async def reconcile(self, state: State) -> Diff:
        if not self.workers:
            # Not serving yet: serve() forks every worker from the index, which
            # holds this state (reconciled just before, DnsIndexEnforcer).
            return Diff()
        await self._broadcast("state", State(domains=state.domains, prefixes={}))
        return Diff()

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: each worker holds what the DNS index holds (see DnsIndexEnforcer)."""
        return Diff()

    async def set_settings(self, settings: BlockSettings) -> None:
        self._settings = settings
        await self._broadcast("settings", settings)

    async def set_upstreams(self, servers: Sequence[HostPort]) -> None:
        # New forks read upstreams from self.cfg; the running ones are told.
        self.cfg = dataclasses.replace(self.cfg, upstreams=tuple(servers))
        await self._broadcast("upstreams", tuple(servers))

    async def _broadcast(self, kind: str, payload: object) -> None:
        self._seq += 1
        message = frame((kind, self._seq, payload))
        waits = []
        loop = asyncio.get_running_loop()
        for worker in list(self.workers.values()):
            future: asyncio.Future[None] = loop.create_future()
            worker.pending[self._seq] = future  # a dead one's: settled by its replacement
            worker.send(message)
            waits.append(future)
        _, late = await asyncio.wait(waits, timeout=ACK_TIMEOUT_SECONDS)
        if late:
            # A worker that is alive but stuck would hold every task up: replace
            # it. The new one is forked from the index, which already has this.
            for worker in list(self.workers.values()):
                if not worker.dead and any(not f.done() for f in worker.pending.values()):
                    log.error(
                        "DNS worker %d (pid %d) did not acknowledge; killing it",
                        worker.slot,
                        worker.pid,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*waits), ACK_TIMEOUT_SECONDS)

    # -- processes -----------------------------------------------------------

    def _fork(self, slot: int) -> WorkerHandle:
        health = self.health[slot]
        setup = Setup(
            index=self.index,
            cfg=self.cfg,
            listen=tuple(self.listen),
            sockets=tuple(self._sockets[slot]),
            settings=self._settings,
            engine=health.engine,
            # Only a slot's first worker may leave a core: a crash loop must
            # cost neither seconds of dumping per crash nor the disk.
            core=health.crashes == 0,
        )
        others = [w.crash_fd for w in self._all() if w.crash_fd >= 0]
        pid, parent_sock, crash_read = fork_worker(setup, others)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        worker = WorkerHandle(slot, pid, health.engine, time.monotonic(), loop.create_future())
        worker.crash_fd = crash_read
        loop.add_reader(crash_read, self._crash_reported, worker)
        replaced = self.workers.get(slot)
        self.workers[slot] = worker
        if replaced is not None:
            self._retire(replaced)

        async def attach() -> None:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, parent_sock)
            worker.attach(asyncio.StreamWriter(transport, protocol, reader, loop))
            await self._listen_to(worker, reader)

        worker.reader_task = loop.create_task(attach())
        return worker

    async def _listen_to(self, worker: WorkerHandle, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, *rest = await read_frame(reader)
                if kind == "ready":
                    worker.ready.set_result(rest[0])
                    worker.settle_inherited()
                elif kind == "ack":
                    future = worker.pending.pop(rest[0], None)
                    if future is not None and not future.done():
                        future.set_result(None)
                elif kind == "stats":
                    worker.snapshot = rest[0]
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        worker.dead = True
        if not worker.ready.done():
            if not self.started:
                worker.ready.set_exception(
                    WorkerStartError(
                        f"DNS worker {worker.slot} exited before it was listening "
                        f"on {', '.join(map(str, self.listen))} (see its log line)"
                    )
                )
                worker.ready.exception()  # start() reports it; mark it retrieved
                return
            worker.ready.cancel()
        if self._closing:
            return
        self._begin_replacement(worker)  # unless its crash report began it already
        status = await asyncio.get_running_loop().run_in_executor(None, reap, worker.pid)
        worker.reaped = True
        self._crash_reported(worker)  # what its fault handler wrote and was not read yet
        worker.stop_reading_crashes()
        self._retire(worker)
        refork = worker.refork
        assert refork is not None
        log.error(
            "DNS worker %d (pid %d, %s engine) %s: crash %d of this worker, %d within %g s; "
            "re-fork %s",
            worker.slot,
            worker.pid,
            worker.engine,
            describe(status),
            refork.number,
            refork.recent,
            self.cfg.crash_window,
            f"after {refork.delay:g} s" if refork.delay else "at once",
        )
        if worker.report:
            log.error(
                "DNS worker %d (pid %d) crash report:\n%s",
                worker.slot,
                worker.pid,
                worker.report.decode("utf-8", "replace").rstrip(),
            )

    def _crash_reported(self, worker: WorkerHandle) -> None:
        """Its fault handler wrote the stack: it is dying, so replace it now.

        Not after its exit, which first tears down its memory: 10 to 50 ms with
        a million names, while its queries wait.
        """
        worker.read_crash_report()
        if worker.report and not worker.dead and self.started and not self._closing:
            worker.dead = True
            self._begin_replacement(worker)

    def _begin_replacement(self, dead: WorkerHandle) -> None:
        if dead.refork is not None:
            return
        dead.refork = refork = self.health[dead.slot].crashed(time.monotonic(), dead.started)
        if refork.switched:
            log.error(
                "DNS worker %d crashed %d times within %g s (dns.crash_limit): it now runs "
                "the pure-Python engine, without the C fast path, until kzgate restarts",
                dead.slot,
                refork.recent,
                self.cfg.crash_window,
            )
        self._dying.append(dead)
        task = asyncio.get_running_loop().create_task(self._refork(dead, refork.delay))
        self._reforks.add(task)
        task.add_done_callback(self._reforks.discard)

    async def _refork(self, dead: WorkerHandle, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._closing:
            return
        worker = self._fork(dead.slot)
        worker.inherited = [f for f in (*dead.inherited, *dead.pending.values()) if not f.done()]

    def _retire(self, worker: WorkerHandle) -> None:
        """Once reaped and replaced, its last counters join the total of dead workers."""
        if worker.retired or not worker.reaped or self.workers.get(worker.slot) is worker:
            return
        worker.retired = True
        self._retired = self._retired + worker.snapshot
        with contextlib.suppress(ValueError):
            self._dying.remove(worker)
