"""Open sockets inside a named network namespace (/var/run/netns/NAME).

A socket keeps the namespace it was created in, so only its creation has to
happen there: a short-lived thread enters the namespace (setns affects the
calling thread only), builds the sockets and ends, and the rest of the process
never leaves its own namespace. Python 3.11 has no os.setns, hence ctypes.
Entering a namespace needs CAP_SYS_ADMIN; without ``netns`` nothing here runs.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


def netns_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a network namespace name: {name!r}")
    return os.path.join(NETNS_DIR, name)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` inside namespace ``name`` (or here, when None) and return its result."""
    if name is None:
        return fn()
    path = netns_path(name)
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
