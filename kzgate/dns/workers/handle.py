"""The control process's handle on one worker process: its pipe, the acks it owes, its crash."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field

from kzgate.dns.crashes import EngineKind, Refork
from kzgate.dns.telemetry import DnsSnapshot

CRASH_REPORT_MAX_BYTES = 65536


@dataclass
class WorkerHandle:
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

    def read_crash_report(self) -> None:
        """Add what its fault handler wrote so far to ``report``; stop reading once it exited."""
        while self.crash_fd >= 0 and len(self.report) < CRASH_REPORT_MAX_BYTES:
            try:
                data = os.read(self.crash_fd, CRASH_REPORT_MAX_BYTES)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:  # it exited; the write end closed
                self.stop_reading_crashes()
                break
            self.report += data

    def stop_reading_crashes(self) -> None:
        if self.crash_fd >= 0:
            asyncio.get_running_loop().remove_reader(self.crash_fd)
            os.close(self.crash_fd)
            self.crash_fd = -1


def reap(pid: int) -> int | None:
    """The wait status of a child that has exited (or is exiting); None if already reaped."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def describe(status: int | None) -> str:
    if status is None:
        return "died"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with code {os.WEXITSTATUS(status)}"
