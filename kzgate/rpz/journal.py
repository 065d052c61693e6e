"""The IXFR history: the last few zone changes, oldest first (pure).

RFC 1995 lets a primary answer an IXFR with the difference sequences from the
client's serial to its own, or with the whole zone when it has no such history.
The window is bounded twice: by the number of changes (``ixfr_history``) and
by the names they hold, so a burst of large changes cannot grow memory without
limit; what falls out of the window is served by AXFR instead.
"""

from __future__ import annotations

from collections import deque

from kzgate.rpz.zone import Change

MAX_NAMES = 1_000_000  # names held across all kept changes


class Journal:
    def __init__(self, history: int, max_names: int = MAX_NAMES) -> None:
        self._history = history
        self._max_names = max_names
        self._changes: deque[Change] = deque()
        self._names = 0

    def __len__(self) -> int:
        return len(self._changes)

    def record(self, change: Change) -> None:
        """Keep ``change``; it must follow the last one kept (else the window restarts)."""
        if self._changes and self._changes[-1].new != change.old:
            self.reset()
        if self._history == 0 or change.size() > self._max_names:
            self.reset()
            return
        self._changes.append(change)
        self._names += change.size()
        while len(self._changes) > self._history or self._names > self._max_names:
            self._names -= self._changes.popleft().size()

    def reset(self) -> None:
        """Forget every change: older serials get AXFR (after a huge reconcile, say)."""
        self._changes.clear()
        self._names = 0

    def since(self, serial: int, current: int) -> list[Change] | None:
        """The changes from ``serial`` to ``current``: [] when equal, None when unknown."""
        if serial == current:
            return []
        for i, change in enumerate(self._changes):
            if change.old == serial:
                steps = list(self._changes)[i:]
                # the window must end at the current serial, or it is not the way there
                return steps if steps[-1].new == current else None
        return None
