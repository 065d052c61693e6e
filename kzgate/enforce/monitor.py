"""A netlink notification socket read on the event loop, for drift: nftables and routes.

Each enforcer's monitor says whether what it read is someone else changing
what it holds (``drifted``); reading, and treating lost notifications
(ENOBUFS) as drift, is the same for both and lives here.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable


class NetlinkMonitor:
    """Calls ``on_drift`` (on the loop) after a read that found drift."""

    def __init__(
        self, sock: socket.socket, on_drift: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.sock = sock
        self._on_drift = on_drift
        self._loop = loop
        loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def drifted(self, data: bytes) -> bool:
        """Whether the notifications in ``data`` (one recv) show someone else changing
        what the enforcer holds."""
        raise NotImplementedError

    def _readable(self) -> None:
        drift = False
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                drift = True  # notifications were lost: assume the worst
                continue
            if self.drifted(data):
                drift = True
        if drift:
            self._on_drift()
