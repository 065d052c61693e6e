"""After a DNS worker crashes: how long to wait before forking it again, and on which engine.

Pure: crash times in, decisions out; the pool (workers/pool.py) does the forking.
A crash is any death the pool did not ask for: a signal (SIGSEGV from the C
fast path, SIGKILL from the OOM killer or from the pool itself when a worker
stops acknowledging) or an exit.

Two rules, each with one purpose:
- ``crash_limit`` crashes within ``crash_window`` seconds move the worker from
  the C fast path to the pure-Python engine, for the life of the control
  process: a packet that crashes the C code then costs at most crash_limit
  re-forks, not one per packet. It is not moved back: the crashing input may
  come again, and the operator is told (log, metric, alert, `kzgate status`).
- Each re-fork after the first in a streak waits twice as long as the one
  before (50 ms, 100 ms, ... up to 30 s or half the window), so nothing can
  fork-storm the host. A crash never shortens the wait; only a replacement
  that then runs for a whole crash_window without crashing ends the streak
  (a crash after such a run is a new, unrelated fault, and is answered at once).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

EngineKind = Literal["c", "python"]

FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Refork:
    delay: float  # seconds to wait before forking the replacement
    engine: EngineKind  # what the replacement runs
    switched: bool  # this crash moved the worker from the C fast path to pure Python
    recent: int  # crashes within the window, this one included
    number: int  # crashes of this slot since start, this one included


@dataclass
class WorkerHealth:
    """One worker slot's crashes, across every process forked for that slot."""

    limit: int
    window: float
    engine: EngineKind
    crashes: int = 0  # since the control process started
    streak: int = 0  # crashes since the last replacement that ran a whole window
    _recent: deque[float] = field(default_factory=deque)

    def crashed(self, now: float, started: float) -> Refork:
        """The slot's worker, forked at ``started``, died at ``now`` (monotonic seconds)."""
        self.crashes += 1
        if now - started >= self.window:
            self.streak = 0
        self.streak += 1
        recent = self._recent
        recent.append(now)
        while recent[0] <= now - self.window:
            recent.popleft()
        switched = self.engine == "c" and len(recent) >= self.limit
        if switched:
            self.engine = "python"
        return Refork(self._delay(), self.engine, switched, len(recent), self.crashes)

    def _delay(self) -> float:
        if self.streak <= 1:
            return 0.0
        cap = min(MAX_BACKOFF_SECONDS, self.window / 2)
        return min(cap, FIRST_BACKOFF_SECONDS * float(2 ** min(self.streak - 2, 30)))
