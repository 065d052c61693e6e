"""Listening sockets for DNS-speaking servers: UDP and TCP on one address and port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kzgate.config import HostPort

RCVBUF_BYTES = 4 * 1024 * 1024  # absorbs bursts while the loop is busy

# A DNS worker serves sockets that its control process bound and keeps open
# (dns/workers/handover.py), so that what arrives while a crashed worker is forked again
# waits in their queues. The worker hands them over here before its server binds.
_handed_over: dict[tuple[str, int], tuple[socket.socket, socket.socket]] = {}


def hand_over(host: str, port: int, udp: socket.socket, tcp: socket.socket) -> None:
    """The next ``bind_udp_tcp(host, port)`` in this process returns these, bound already."""
    _handed_over[(host, port)] = (udp, tcp)


async def bind_udp_tcp(
    host: str, port: int, *, reuse_port: bool = False, big_rcvbuf: bool = False
) -> tuple[socket.socket, socket.socket]:
    """A bound, non-blocking UDP and TCP socket pair on ``host``:``port``.

    Port 0 means any free port, the same for both: UDP picks one and TCP must
    get it too; if TCP finds it taken, another is tried.
    """
    pair = _handed_over.pop((host, port), None)
    if pair is not None:
        return pair
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, addr = infos[0][0], infos[0][4]
    for _ in range(20 if port == 0 else 1):
        udp = _bound(family, socket.SOCK_DGRAM, addr, reuse_port, big_rcvbuf)
        bound = udp.getsockname()
        try:
            tcp = _bound(family, socket.SOCK_STREAM, (addr[0], bound[1], *addr[2:]), reuse_port)
        except OSError as exc:
            udp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")


class Closable(Protocol):
    def close(self) -> None: ...


ReadUdp = Callable[[socket.socket], Awaitable[Closable]]  # starts reading a bound UDP socket
ServeTcp = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Listening:
    """One address a server listens on: its UDP socket with what reads it, and its TCP server."""

    address: tuple[str, int]
    udp: socket.socket
    reader: Closable  # closing it stops reading and closes ``udp``
    tcp: asyncio.Server

    def close(self) -> None:
        self.tcp.close()
        self.reader.close()


class Listeners:
    """Every address one DNS-speaking server listens on, over UDP and TCP, and its TCP clients.

    ``close`` stops listening and ends every TCP connection still being served
    (cancelling its ``serve_tcp``), so a server's own close has only its own
    work left to end.
    """

    def __init__(
        self,
        read_udp: ReadUdp,
        serve_tcp: ServeTcp,
        *,
        reuse_port: bool = False,
        big_rcvbuf: bool = False,
        backlog: int = 100,
    ) -> None:
        self._read_udp = read_udp
        self._serve_tcp = serve_tcp
        self._reuse_port = reuse_port
        self._big_rcvbuf = big_rcvbuf
        self._backlog = backlog
        self.bound: list[Listening] = []
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self, listen: Sequence[HostPort]) -> list[tuple[str, int]]:
        """Listen on every address, or on none: if one fails, all are closed again."""
        try:
            return [await self.listen(hp.host, hp.port) for hp in listen]
        except BaseException:
            await self.close()
            raise

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Bind ``host``:``port`` over UDP and TCP and serve both; the address bound."""
        udp, tcp = await bind_udp_tcp(
            host, port, reuse_port=self._reuse_port, big_rcvbuf=self._big_rcvbuf
        )
        address = udp.getsockname()
        reader: Closable | None = None
        try:
            reader = await self._read_udp(udp)
            server = await asyncio.start_server(self._client, sock=tcp, backlog=self._backlog)
        except BaseException:
            if reader is not None:
                reader.close()
            udp.close()
            tcp.close()
            raise
        self.bound.append(Listening((address[0], address[1]), udp, reader, server))
        return address[0], address[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        assert this is not None
        self._clients.add(this)
        try:
            await self._serve_tcp(reader, writer)
        finally:
            self._clients.discard(this)

    async def close(self) -> None:
        for listening in self.bound:
            listening.close()
        self.bound = []
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)


def _bound(
    family: int, kind: int, addr: tuple[Any, ...], reuse_port: bool, big_rcvbuf: bool = False
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:  # so [::] and 0.0.0.0 can both be listed
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif big_rcvbuf:
            _grow_rcvbuf(sock)
        if reuse_port:  # dns.workers > 1: the kernel spreads packets over processes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _grow_rcvbuf(sock: socket.socket) -> None:
    # SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN; otherwise take what is allowed.
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, RCVBUF_BYTES)
            return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
