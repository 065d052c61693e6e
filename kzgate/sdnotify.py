"""systemd's notify protocol: one datagram per state change on $NOTIFY_SOCKET.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op returning False,
so the daemon runs the same under a terminal, a test or a container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("kzgate.sdnotify")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. "READY=1") to systemd; False when not run under it."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def ready(status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """READY=1: start-up (or a reload) is complete; ``status`` shows in systemctl status."""
    state = "READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}"
    return notify(state, environ)


def reloading(environ: Mapping[str, str] | None = None) -> bool:
    """RELOADING=1 with the CLOCK_MONOTONIC timestamp systemd (253+) expects with it.

    Follow it with ``ready()`` once the reload is done or refused.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    """STOPPING=1: the drain has begun."""
    return notify("STOPPING=1", environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """STATUS=…: a one-line free-form status for ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}", environ)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds from WATCHDOG_USEC, or None when it is off.

    When WATCHDOG_PID is set the watchdog belongs to that process only (a
    forked child inherits the environment and must not ping for its parent).
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


async def watchdog(interval: float, environ: Mapping[str, str] | None = None) -> None:
    """Send WATCHDOG=1 every ``interval / 2`` seconds, from the event loop, until cancelled.

    The pings run as a task on the daemon's own loop on purpose: if the loop
    stalls, the pings stop and systemd kills and restarts the service.
    Run it as a task and cancel it on shutdown::

        if (interval := watchdog_interval()) is not None:
            task = asyncio.create_task(watchdog(interval))
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval!r}")
    period = interval / 2
    while True:
        try:
            notify("WATCHDOG=1", environ)
        except OSError as exc:  # systemd re-executing: the next ping may succeed
            log.warning("watchdog ping failed: %s", exc)
        await asyncio.sleep(period)


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())
