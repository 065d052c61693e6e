"""dns.workers > 1: N forked resolver processes share each DNS port (SO_REUSEPORT).

Workers are forked after the start-up reconcile, so each begins with a
copy-on-write copy of an index that already equals the register's state.
From then on the main process sends every diff to every worker over a
socketpair and waits for each to acknowledge it: a receipt says "applied"
only when all of them answer with the new policy. A worker that dies is
forked again from the main process's index, which already holds every diff
sent so far, so its unacknowledged diffs count as delivered once it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import pickle
import signal
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from kzgate.config import DnsConfig, HostPort
from kzgate.dns.local import LocalDns
from kzgate.dns.telemetry import DnsSnapshot, total
from kzgate.dns.types import BlockSettings
from kzgate.enforce.dnsindex import DnsIndexEnforcer, apply_to_index
from kzgate.model import Diff, State
from kzgate.policy import PolicyIndex

log = logging.getLogger("kzgate.dns.workers")

ACK_TIMEOUT_SECONDS = 10.0
STATS_INTERVAL_SECONDS = 0.5
_LEN = struct.Struct("!I")
PR_SET_PDEATHSIG = 1


def _frame(message: object) -> bytes:
    # Both ends are this program, over a private socketpair: pickle is safe here.
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> Any:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    return pickle.loads(await reader.readexactly(size))


class WorkerStartError(Exception):
    """A DNS worker exited before it was listening."""


@dataclass
class _Worker:
    slot: int
    pid: int
    ready: asyncio.Future[list[tuple[str, int]]]
    writer: asyncio.StreamWriter | None = None
    backlog: list[bytes] = field(default_factory=list)  # frames sent before the pipe is up
    pending: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    snapshot: DnsSnapshot = field(default_factory=DnsSnapshot.zero)
    reader_task: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        if self.writer is None:
            self.backlog.append(frame)
        else:
            self.writer.write(frame)

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        for frame in self.backlog:
            writer.write(frame)
        self.backlog.clear()


class WorkerPool:
    """The DNS workers as one enforcer: apply() returns once every worker has the diff."""

    name = "dns-workers"

    def __init__(self, index: PolicyIndex, cfg: DnsConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.count = cfg.workers
        self.listen: list[HostPort] = []
        self.workers: dict[int, _Worker] = {}
        self.bound: list[tuple[str, int]] = []
        self._seq = 0
        self._retired = DnsSnapshot.zero()
        self._closing = False
        self._settings: BlockSettings | None = None
        self._started = False
        self.start_error = ""
        self._failures: dict[int, int] = {}  # slot -> consecutive deaths before ready

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        self.listen = [_fix_port(where) for where in self.cfg.listen]
        for slot in range(self.count):
            self._fork(slot)
        try:
            results = await asyncio.gather(*(w.ready for w in self.workers.values()))
        except WorkerStartError as exc:
            # One worker could not listen (a port held without SO_REUSEPORT, say):
            # stop the others and say why, rather than fork again and again.
            self.start_error = str(exc)
            await self.close()
            raise
        self.bound = results[0]
        self._started = True
        return self.bound

    async def close(self) -> None:
        self._closing = True
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
            if worker.writer is not None:
                worker.writer.close()
        for worker in self.workers.values():
            await asyncio.get_running_loop().run_in_executor(None, _reap, worker.pid)
            if worker.reader_task is not None:
                worker.reader_task.cancel()

    def snapshot(self) -> DnsSnapshot:
        return total([self._retired, *(w.snapshot for w in self.workers.values())])

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
            # First call, at start-up: the index was reconciled just before, so
            # forking now hands every worker the exact state.
            await self.start()
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
        frame = _frame((kind, self._seq, payload))
        waits = []
        loop = asyncio.get_running_loop()
        for worker in list(self.workers.values()):
            future: asyncio.Future[None] = loop.create_future()
            worker.pending[self._seq] = future
            worker.send(frame)
            waits.append(future)
        _, late = await asyncio.wait(waits, timeout=ACK_TIMEOUT_SECONDS)
        if late:
            # A worker that is alive but stuck would hold every task up: replace
            # it. The new one is forked from the index, which already has this.
            for worker in list(self.workers.values()):
                if any(not f.done() for f in worker.pending.values()):
                    log.error(
                        "DNS worker %d (pid %d) did not acknowledge; killing it",
                        worker.slot,
                        worker.pid,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*waits), ACK_TIMEOUT_SECONDS)

    # -- processes -----------------------------------------------------------

    def _fork(self, slot: int) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            parent_sock.close()
            _child(child_sock, self.index, self.cfg, self.listen, self._settings)
        child_sock.close()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        worker = _Worker(slot, pid, loop.create_future())
        self.workers[slot] = worker

        async def attach() -> None:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, parent_sock)
            worker.attach(asyncio.StreamWriter(transport, protocol, reader, loop))
            await self._listen_to(worker, reader)

        worker.reader_task = loop.create_task(attach())

    async def _listen_to(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, *rest = await _read(reader)
                if kind == "ready":
                    worker.ready.set_result(rest[0])
                elif kind == "ack":
                    future = worker.pending.pop(rest[0], None)
                    if future is not None and not future.done():
                        future.set_result(None)
                elif kind == "stats":
                    worker.snapshot = rest[0]
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if not worker.ready.done():
            worker.ready.set_exception(
                WorkerStartError(
                    f"DNS worker {worker.slot} exited before it was listening "
                    f"on {', '.join(map(str, self.listen))} (see its log line)"
                )
            )
            if not self._started:
                worker.ready.exception()  # start() reports it; mark it retrieved
                return
        if not self._closing:
            await self._replace(worker)

    async def _replace(self, dead: _Worker) -> None:
        log.error("DNS worker %d (pid %d) died; forking a new one", dead.slot, dead.pid)
        await asyncio.get_running_loop().run_in_executor(None, _reap, dead.pid)
        self._retired = self._retired + dead.snapshot
        if dead.ready.done() and dead.ready.exception() is None:
            self._failures[dead.slot] = 0
        else:
            # Dying before it listens again and again: back off, do not fork-storm.
            failures = self._failures[dead.slot] = self._failures.get(dead.slot, 0) + 1
            await asyncio.sleep(min(30.0, 0.5 * 2**failures))
            if self._closing:
                return
        self._fork(dead.slot)
        try:
            await self.workers[dead.slot].ready
        except WorkerStartError:
            return  # that one's own reader replaces it again, later
        # The new worker was forked from an index that already holds every
        # diff sent so far, so what the dead one had not acknowledged is delivered.
        for future in dead.pending.values():
            if not future.done():
                future.set_result(None)


def _fix_port(where: HostPort) -> HostPort:
    """Port 0 means "any": choose one here, so that every worker binds the same port."""
    if where.port != 0:
        return where
    family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((where.host, 0))
        return HostPort(where.host, probe.getsockname()[1])


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _child(
    sock: socket.socket,
    index: PolicyIndex,
    cfg: DnsConfig,
    listen: Sequence[HostPort],
    settings: BlockSettings | None,
) -> NoReturn:
    code = 0
    try:
        # The parent's running loop (and its epoll, shared after fork) must never
        # be touched here: forget it and run a fresh one.
        asyncio.events._set_running_loop(None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # die with the main process
        loop = _new_loop()
        loop.run_until_complete(_serve_child(sock, index, cfg, listen, settings))
    except BaseException:
        log.exception("DNS worker failed")
        code = 1
    finally:
        # Skip interpreter teardown: it would run the parent's finalizers
        # (SQLite connection, event loop) in this process.
        os._exit(code)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


async def _serve_child(
    sock: socket.socket,
    index: PolicyIndex,
    cfg: DnsConfig,
    listen: Sequence[HostPort],
    settings: BlockSettings | None,
) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    resolver = LocalDns(index, cfg, listen, reuse_port=True)
    if settings is not None:
        await resolver.set_settings(settings)
    writer.write(_frame(("ready", await resolver.start())))

    async def report() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_SECONDS)
            writer.write(_frame(("stats", resolver.snapshot())))

    reporter = asyncio.create_task(report())
    try:
        while True:
            try:
                kind, seq, payload = await _read(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the main process is gone
            if kind == "diff":
                apply_to_index(index, payload)
            elif kind == "state":
                await DnsIndexEnforcer(index).reconcile(payload)
            elif kind == "settings":
                await resolver.set_settings(payload)
            elif kind == "upstreams":
                await resolver.set_upstreams(payload)
            writer.write(_frame(("ack", seq)))
            # Send the acknowledgement and the latest counters together.
            writer.write(_frame(("stats", resolver.snapshot())))
    finally:
        reporter.cancel()
        await resolver.close()
