"""One worker process: forked with its Setup, it answers DNS until the control process goes.

Its main loop applies what the control process sends (diffs, a whole state,
block settings, upstreams) to its own copy of the policy index and
acknowledges each; meanwhile its resolver answers queries on the sockets it
was handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import logging
import os
import resource
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from kzgate.config import DnsConfig, HostPort
from kzgate.dns.crashes import EngineKind
from kzgate.dns.fastpath import FAST
from kzgate.dns.local import LocalDns
from kzgate.dns.types import BlockSettings
from kzgate.dns.workers.frames import frame, read_frame
from kzgate.dns.workers.handover import SocketPair, adopt, release_inherited
from kzgate.enforce.dnsindex import DnsIndexEnforcer, apply_to_index
from kzgate.loop import new_event_loop
from kzgate.nametable import DictNameTable
from kzgate.policy import PolicyIndex

log = logging.getLogger("kzgate.dns.workers")

STATS_INTERVAL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Setup:
    """What a worker is forked with."""

    index: PolicyIndex
    cfg: DnsConfig
    listen: tuple[HostPort, ...]
    sockets: tuple[SocketPair, ...]  # one per listen address, bound by the control process
    settings: BlockSettings | None
    engine: EngineKind
    core: bool  # leave a core file if it crashes (as the system's limits allow)


def fork_worker(setup: Setup, release: Sequence[int]) -> tuple[int, socket.socket, int]:
    """Fork a worker: its pid, our end of its socketpair, the read end of its crash pipe.

    ``release``: descriptors the child must let go of besides the usual ones
    (the other workers' crash pipes, see ``release_inherited``).
    """
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    crash_read, crash_write = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child never returns from here
        parent_sock.close()
        os.close(crash_read)
        _child(child_sock, crash_write, setup, parent, release)
    child_sock.close()
    os.close(crash_write)
    os.set_blocking(crash_read, False)
    return pid, parent_sock, crash_read


def _child(
    sock: socket.socket, crash_fd: int, setup: Setup, parent: int, release: Sequence[int]
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
        release_inherited(keep, release)
        adopt(setup.listen, setup.sockets)
        # not uvloop in a pure-Python worker: its point is to run no C on the data path
        loop = new_event_loop(prefer_uvloop=setup.engine == "c")
        loop.run_until_complete(_serve(sock, setup))
    except BaseException:
        log.exception("DNS worker failed")
        code = 1
    finally:
        # Skip interpreter teardown: it would run the parent's finalizers
        # (SQLite connection, event loop) in this process.
        os._exit(code)


def resolver_for(setup: Setup) -> tuple[PolicyIndex, LocalDns]:
    """The worker's policy index and resolver, on the engine its slot runs."""
    if setup.engine == "c":
        return setup.index, LocalDns(setup.index, setup.cfg, setup.listen, fast=FAST)
    # Pure Python means no C on any query: the names move to a dict table too.
    index = setup.index if FAST is None else setup.index.copy_onto(DictNameTable())
    return index, LocalDns(index, setup.cfg, setup.listen, fast=None)


async def _serve(sock: socket.socket, setup: Setup) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    index, resolver = resolver_for(setup)
    if setup.settings is not None:
        await resolver.set_settings(setup.settings)
    writer.write(frame(("ready", await resolver.start())))

    async def report() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_SECONDS)
            writer.write(frame(("stats", resolver.snapshot())))

    reporter = asyncio.create_task(report())
    try:
        while True:
            try:
                kind, seq, payload = await read_frame(reader)
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
            writer.write(frame(("stats", resolver.snapshot())))
            writer.write(frame(("ack", seq)))
    finally:
        reporter.cancel()
        await resolver.close()
