"""The listening sockets' hand-over: bound by the control process, served by a worker.

The control process binds every worker's UDP and TCP sockets (one pair per
worker and listen address, sharing the port with SO_REUSEPORT when there are
several workers) and keeps them for its whole life. A forked worker adopts its
slot's pairs and lets go of every other socket and file it inherited.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Sequence

from kzgate.config import HostPort
from kzgate.dns.sockets import bind_udp_tcp, hand_over

log = logging.getLogger("kzgate.dns.workers")

SocketPair = tuple[socket.socket, socket.socket]  # UDP, TCP


class WorkerStartError(Exception):
    """The DNS workers could not start: a port could not be bound, or a worker exited first."""


async def bind_all(
    listen: Sequence[HostPort], count: int
) -> tuple[list[list[SocketPair]], list[HostPort]]:
    """Per worker slot, one bound pair per address; and the addresses with the ports bound."""
    reuse = count > 1
    sockets: list[list[SocketPair]] = [[] for _ in range(count)]
    bound = []
    try:
        for where in listen:
            port = where.port  # 0: the first bind picks one, the other workers share it
            for pairs in sockets:
                try:
                    pair = await bind_udp_tcp(where.host, port, reuse_port=reuse, big_rcvbuf=True)
                except OSError as exc:
                    raise WorkerStartError(
                        f"cannot listen on {where}: {exc.strerror or exc}"
                    ) from None
                pairs.append(pair)
                port = pair[0].getsockname()[1]
            bound.append(HostPort(where.host, port))
    except BaseException:
        close_all(sockets)
        raise
    return sockets, bound


def close_all(sockets: list[list[SocketPair]]) -> None:
    for pairs in sockets:
        for udp, tcp in pairs:
            udp.close()
            tcp.close()


def adopt(listen: Sequence[HostPort], sockets: Sequence[SocketPair]) -> None:
    """In the worker: its resolver's binds on ``listen`` get these sockets, bound already."""
    for where, (udp, tcp) in zip(listen, sockets, strict=True):
        hand_over(where.host, where.port, udp, tcp)


def release_inherited(keep: set[int], also: Sequence[int]) -> None:
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
