"""DNS in forked worker processes: the control process never answers a query itself.

``dns.workers`` (default 1) resolvers are forked after the start-up reconcile,
so each begins with a copy-on-write copy of an index that already equals the
register's state. From then on the control process sends every diff to every
worker over a socketpair and waits for each to acknowledge it: a receipt says
"applied" only when all of them answer with the new policy.

The control process binds every worker's UDP and TCP sockets itself (one pair
per worker and address, sharing the port with SO_REUSEPORT when there are
several workers) and keeps them: a worker that dies takes no socket with it, so
what arrives until its replacement is up waits in the kernel's queues and is
answered then, instead of being refused or lost. The replacement is forked
from the control process's index, which already holds every diff sent so far,
so the dead one's unacknowledged diffs count as delivered once it is up.
Crashes are counted and logged; repeated ones back off and move that worker
to the pure-Python engine (crashes.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import faulthandler
import logging
import os
import pickle
import resource
import signal
import socket
import stat
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from kzgate.config import Config, DnsConfig, HostPort
from kzgate.dns.crashes import EngineKind, Refork, WorkerHealth
from kzgate.dns.fastpath import FAST
from kzgate.dns.local import LocalDns, block_settings
from kzgate.dns.sockets import bind_udp_tcp, hand_over
from kzgate.dns.telemetry import DnsCollector, DnsSnapshot, WorkerCollector, WorkerCounts, total
from kzgate.dns.types import BlockSettings
from kzgate.enforce.base import Enforcer, Listener, StartError
from kzgate.enforce.dnsindex import DnsIndexEnforcer, apply_to_index
from kzgate.loop import new_event_loop
from kzgate.metrics import Collector
from kzgate.model import Diff, State
from kzgate.nametable import DictNameTable
from kzgate.policy import PolicyIndex

log = logging.getLogger("kzgate.dns.workers")

ACK_TIMEOUT_SECONDS = 10.0
STATS_INTERVAL_SECONDS = 0.5
POLL_TIMEOUT_SECONDS = 1.0  # a scrape waits at most this long for fresh counters
_LEN = struct.Struct("!I")
PR_SET_PDEATHSIG = 1

SocketPair = tuple[socket.socket, socket.socket]  # UDP, TCP


def _frame(message: object) -> bytes:
    # Both ends are this program, over a private socketpair: pickle is safe here.
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> Any:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    return pickle.loads(await reader.readexactly(size))


class WorkerStartError(Exception):
    """The DNS workers could not start: a port could not be bound, or a worker exited first."""


@dataclass
class _Worker:
    slot: int
    pid: int
    engine: EngineKind
    started: float  # monotonic time of the fork
    ready: asyncio.Future[list[tuple[str, int]]]
    writer: asyncio.StreamWriter | None = None
    backlog: list[bytes] = field(default_factory=list)  # frames sent before the pipe is up
    pending: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    # Acknowledgements owed by the dead workers this one replaces: it was forked
    # from an index that already holds what they were sent, so ready settles them.
    inherited: list[asyncio.Future[None]] = field(default_factory=list)
    snapshot: DnsSnapshot = field(default_factory=DnsSnapshot.zero)
    reader_task: asyncio.Task[None] | None = None
    crash_fd: int = -1  # read end of the pipe its fault handler reports a crash on
    report: bytes = b""  # what that handler wrote: the Python stack at the crash
    refork: Refork | None = None  # once its replacement is decided
    dead: bool = False  # crashed or exited: it serves no more
    reaped: bool = False
    retired: bool = False  # its counters moved to the pool's total of dead workers

    def send(self, frame: bytes) -> None:
        if self.dead:
            return  # its replacement starts from the index, which has this already
        if self.writer is None:
            self.backlog.append(frame)
        else:
            self.writer.write(frame)

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        for frame in self.backlog:
            writer.write(frame)
        self.backlog.clear()

    def settle_inherited(self) -> None:
        for future in self.inherited:
            if not future.done():
                future.set_result(None)
        self.inherited.clear()


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
        self.workers: dict[int, _Worker] = {}
        self.bound: list[tuple[str, int]] = []
        first_engine: EngineKind = "c" if FAST is not None else "python"
        self.health = [
            WorkerHealth(cfg.crash_limit, cfg.crash_window, first_engine) for _ in range(self.count)
        ]
        self._sockets: list[list[SocketPair]] = []  # per slot, one pair per listen address
        self._dying: list[_Worker] = []  # replaced or being replaced, not yet reaped
        self._reforks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._retired = DnsSnapshot.zero()
        self._closing = False
        self._settings: BlockSettings | None = None
        self.started = False

    # -- lifecycle -----------------------------------------------------------

    async def bind(self) -> list[tuple[str, int]]:
        """Bind every worker's sockets here, in the control process, which keeps them open."""
        reuse = self.count > 1
        sockets: list[list[SocketPair]] = [[] for _ in range(self.count)]
        listen = []
        try:
            for where in self.cfg.listen:
                port = where.port  # 0: the first bind picks one, the other workers share it
                for pairs in sockets:
                    try:
                        pair = await bind_udp_tcp(
                            where.host, port, reuse_port=reuse, big_rcvbuf=True
                        )
                    except OSError as exc:
                        raise WorkerStartError(
                            f"cannot listen on {where}: {exc.strerror or exc}"
                        ) from None
                    pairs.append(pair)
                    port = pair[0].getsockname()[1]
                listen.append(HostPort(where.host, port))
        except BaseException:
            _close_all(sockets)
            raise
        self._sockets, self.listen = sockets, listen
        self.bound = [(str(h), int(p)) for h, p, *_ in (u.getsockname() for u, _ in sockets[0])]
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
                await loop.run_in_executor(None, _reap, worker.pid)
                worker.reaped = True
            if worker.reader_task is not None:
                worker.reader_task.cancel()
            self._stop_reading(worker)
        _close_all(self._sockets)
        self._sockets = []

    def _all(self) -> list[_Worker]:
        """Every worker not yet retired: serving, starting, or dying."""
        unique = {w.pid: w for w in (*self._dying, *self.workers.values())}
        return [w for w in unique.values() if not w.retired]

    def snapshot(self) -> DnsSnapshot:
        return total([self._retired, *(w.snapshot for w in self._all())])

    async def refresh(self) -> None:
        """Have every live worker report its counters now (a scrape reads them next)."""
        self._seq += 1
        seq, frame = self._seq, _frame(("poll", self._seq, None))
        asked = [w for w in self.workers.values() if not w.dead and w.ready.done()]
        loop = asyncio.get_running_loop()
        for worker in asked:
            worker.pending[seq] = loop.create_future()
            worker.send(frame)
        if asked:
            await asyncio.wait([w.pending[seq] for w in asked], timeout=POLL_TIMEOUT_SECONDS)
        for worker in asked:
            worker.pending.pop(seq, None)

    def counts(self) -> WorkerCounts:
        engines = collections.Counter[str](h.engine for h in self.health)
        return WorkerCounts(sum(h.crashes for h in self.health), dict(engines))

    def collectors(self) -> list[Collector]:
        return [DnsCollector(self.snapshot), WorkerCollector(self.counts)]

    def listeners(self) -> dict[str, Listener]:
        if not self.bound:
            return {}
        return {"dns": Listener(self.bound[0], lambda: self.snapshot().refusals)}

    def status(self) -> dict[str, object]:
        """For `kzgate status`: each worker's process, engine and crashes."""
        workers = []
        for slot, health in enumerate(self.health):
            worker = self.workers.get(slot)
            if worker is None or worker.dead:
                state = "down"  # waiting to be forked again
            else:
                state = "up" if worker.ready.done() else "starting"
            workers.append(
                {
                    "slot": slot,
                    "pid": worker.pid if worker is not None else None,
                    "engine": health.engine,
                    "state": state,
                    "crashes": health.crashes,
                }
            )
        return {
            "dns": {
                "fast_path": "built" if FAST is not None else "not built",
                "crash_limit": self.cfg.crash_limit,
                "crash_window": self.cfg.crash_window,
                "workers": workers,
            }
        }

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
        frame = _frame((kind, self._seq, payload))
        waits = []
        loop = asyncio.get_running_loop()
        for worker in list(self.workers.values()):
            future: asyncio.Future[None] = loop.create_future()
            worker.pending[self._seq] = future  # a dead one's: settled by its replacement
            worker.send(frame)
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

    def _fork(self, slot: int) -> _Worker:
        health = self.health[slot]
        setup = _Setup(
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
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        crash_read, crash_write = os.pipe()
        others = [w.crash_fd for w in self._all() if w.crash_fd >= 0]
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child never returns from here
            parent_sock.close()
            os.close(crash_read)
            _child(child_sock, crash_write, setup, parent, others)
        child_sock.close()
        os.close(crash_write)
        os.set_blocking(crash_read, False)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        worker = _Worker(slot, pid, health.engine, time.monotonic(), loop.create_future())
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

    async def _listen_to(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, *rest = await _read(reader)
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
        status = await asyncio.get_running_loop().run_in_executor(None, _reap, worker.pid)
        worker.reaped = True
        self._crash_reported(worker)  # what its fault handler wrote and was not read yet
        self._stop_reading(worker)
        self._retire(worker)
        refork = worker.refork
        assert refork is not None
        log.error(
            "DNS worker %d (pid %d, %s engine) %s: crash %d of this worker, %d within %g s; "
            "re-fork %s",
            worker.slot,
            worker.pid,
            worker.engine,
            _describe(status),
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

    def _crash_reported(self, worker: _Worker) -> None:
        """Its fault handler wrote the stack: it is dying, so replace it now.

        Not after its exit, which first tears down its memory: 10 to 50 ms with
        a million names, while its queries wait.
        """
        while worker.crash_fd >= 0 and len(worker.report) < 65536:
            try:
                data = os.read(worker.crash_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:  # it exited; the write end closed
                self._stop_reading(worker)
                break
            worker.report += data
        if worker.report and not worker.dead and self.started and not self._closing:
            worker.dead = True
            self._begin_replacement(worker)

    def _stop_reading(self, worker: _Worker) -> None:
        if worker.crash_fd >= 0:
            asyncio.get_running_loop().remove_reader(worker.crash_fd)
            os.close(worker.crash_fd)
            worker.crash_fd = -1

    def _begin_replacement(self, dead: _Worker) -> None:
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

    async def _refork(self, dead: _Worker, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._closing:
            return
        worker = self._fork(dead.slot)
        worker.inherited = [f for f in (*dead.inherited, *dead.pending.values()) if not f.done()]

    def _retire(self, worker: _Worker) -> None:
        """Once reaped and replaced, its last counters join the total of dead workers."""
        if worker.retired or not worker.reaped or self.workers.get(worker.slot) is worker:
            return
        worker.retired = True
        self._retired = self._retired + worker.snapshot
        with contextlib.suppress(ValueError):
            self._dying.remove(worker)


def _close_all(sockets: list[list[SocketPair]]) -> None:
    for pairs in sockets:
        for udp, tcp in pairs:
            udp.close()
            tcp.close()


def _reap(pid: int) -> int | None:
    """The wait status of a child that has exited (or is exiting); None if already reaped."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _describe(status: int | None) -> str:
    if status is None:
        return "died"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with code {os.WEXITSTATUS(status)}"


# -- the worker process --------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    index: PolicyIndex
    cfg: DnsConfig
    listen: tuple[HostPort, ...]
    sockets: tuple[SocketPair, ...]  # one per listen address, bound by the control process
    settings: BlockSettings | None
    engine: EngineKind
    core: bool  # leave a core file if it crashes (as the system's limits allow)


def _child(
    sock: socket.socket, crash_fd: int, setup: _Setup, parent: int, release: Sequence[int]
) -> NoReturn:
    code = 0
    try:
        # The parent's running loop (and its epoll, shared after fork) must never
        # be touched here: forget it and run a fresh one.
        asyncio.events._set_running_loop(None)
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)  # the parent loop's, which must not hear our signals
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # die with the control process
        if os.getppid() != parent:
            os._exit(0)  # it died before prctl could tell us
        if not setup.core:
            with contextlib.suppress(OSError, ValueError):  # a limit is advice, not a need
                _, hard = resource.getrlimit(resource.RLIMIT_CORE)
                resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        # A fault (SIGSEGV, SIGBUS, SIGABRT, ...) writes the Python stack to the
        # control process at once, before the kernel tears this process down.
        faulthandler.enable(file=crash_fd, all_threads=True)
        keep = {sock.fileno(), crash_fd, *(s.fileno() for pair in setup.sockets for s in pair)}
        _release_inherited(keep, release)
        for where, (udp, tcp) in zip(setup.listen, setup.sockets, strict=True):
            hand_over(where.host, where.port, udp, tcp)
        # not uvloop in a pure-Python worker: its point is to run no C on the data path
        loop = new_event_loop(prefer_uvloop=setup.engine == "c")
        loop.run_until_complete(_serve_child(sock, setup))
    except BaseException:
        log.exception("DNS worker failed")
        code = 1
    finally:
        # Skip interpreter teardown: it would run the parent's finalizers
        # (SQLite connection, event loop) in this process.
        os._exit(code)


def _release_inherited(keep: set[int], also: Sequence[int]) -> None:
    """Let go of the control process's sockets and files that fork copied in.

    The API's, metrics' and RPZ's listeners and connections, the other workers'
    sockets and pipes, the register's files: a worker holding them would keep a
    port bound after the control process let go of it. Each descriptor is
    pointed at /dev/null rather than closed, so that an object of the control
    process that still names its number can never close one this worker opens
    later. Other pipes and event descriptors stay (a library's fork handler may
    just have made them anew), but for ``also``: other workers' crash pipes.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        log.warning("DNS worker: /proc/self/fd unreadable; inherited descriptors stay open")
        return
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for name in names:
            fd = int(name)
            if fd <= 2 or fd in keep or fd == devnull:
                continue
            try:
                mode = os.fstat(fd).st_mode
            except OSError:
                continue  # the listing's own descriptor, closed again
            if stat.S_ISSOCK(mode) or stat.S_ISREG(mode) or fd in also:
                os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def _resolver(setup: _Setup) -> tuple[PolicyIndex, LocalDns]:
    """The worker's policy index and resolver, on the engine its slot runs."""
    if setup.engine == "c":
        return setup.index, LocalDns(setup.index, setup.cfg, setup.listen, fast=FAST)
    # Pure Python means no C on any query: the names move to a dict table too.
    index = setup.index if FAST is None else setup.index.copy_onto(DictNameTable())
    return index, LocalDns(index, setup.cfg, setup.listen, fast=None)


async def _serve_child(sock: socket.socket, setup: _Setup) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    index, resolver = _resolver(setup)
    if setup.settings is not None:
        await resolver.set_settings(setup.settings)
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
                return  # the control process is gone
            if kind == "diff":
                apply_to_index(index, payload)
            elif kind == "state":
                await DnsIndexEnforcer(index).reconcile(payload)
            elif kind == "settings":
                await resolver.set_settings(payload)
            elif kind == "upstreams":
                await resolver.set_upstreams(payload)
            # The latest counters first: whoever waits on the ack reads them next.
            writer.write(_frame(("stats", resolver.snapshot())))
            writer.write(_frame(("ack", seq)))
    finally:
        reporter.cancel()
        await resolver.close()
