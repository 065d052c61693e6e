"""Asking the upstream resolvers: UDP in order of preference, TCP when truncated.

Each server has one connected UDP socket shared by every query sent to it. A
reply is accepted only when its ID and question match a query still waiting
(RFC 5452): each attempt gets a fresh random ID, so a blind spoofer must guess
16 bits on top of our source port, and anything unsolicited is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import cast

log = logging.getLogger(__name__)

_RNG = random.SystemRandom()
_RCVBUF = 1 << 20
_SERVFAIL, _REFUSED = 2, 5

Key = tuple[int, bytes]  # (message ID, lower-cased question section)


class _Unavailable(Exception):
    """This server cannot take the query now (too many in flight, socket gone)."""


class _Channel(asyncio.DatagramProtocol):
    """One server's UDP socket and the queries waiting for a reply on it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[Key, asyncio.Future[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or not data[2] & 0x80:
            return  # not a reply
        key = _key(data)
        fut = self.pending.get(key) if key is not None else None
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: the server is down, so
        # every query waiting on it moves on to the next server now.
        self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("upstream socket closed"))

    def _fail(self, exc: Exception) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)


class Upstreams:
    """Forward queries to ``servers`` in order; the first good reply wins."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        timeout: float = 1.0,
        tcp_timeout: float = 3.0,
        observe: Callable[[float], None] | None = None,
        max_inflight: int = 4096,
    ) -> None:
        self._servers = list(servers)
        self._timeout = timeout
        self._tcp_timeout = tcp_timeout
        self._observe = observe
        self._max_inflight = max_inflight
        self._channels: list[_Channel | None] = [None] * len(self._servers)
        self._opening = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Open the UDP sockets now; one that fails is retried on its first query."""
        for i, server in enumerate(self._servers):
            try:
                await self._channel(i)
            except OSError as exc:
                log.warning("upstream %s:%d unusable for now: %s", *server, exc)

    async def close(self) -> None:
        self._closed = True  # queries still failing over must not open new sockets
        for chan in self._channels:
            if chan is not None and chan.transport is not None:
                chan.transport.close()
        self._channels = [None] * len(self._servers)

    async def query(self, message: bytes) -> bytes | None:
        """The first usable reply to ``message``, or None when every server failed.

        A SERVFAIL or REFUSED reply moves on to the next server but is returned
        if no server does better.
        """
        question = _question(message)
        if question is None:
            return None
        fallback = None
        for i in range(len(self._servers)):
            try:
                reply = await self._ask(i, message, question)
            except (TimeoutError, OSError, EOFError, _Unavailable) as exc:
                log.debug("upstream %s:%d failed: %r", *self._servers[i], exc)
                continue
            if reply[3] & 0x0F not in (_SERVFAIL, _REFUSED):
                return reply
            fallback = reply
        return fallback

    async def _ask(self, i: int, message: bytes, question: bytes) -> bytes:
        start = time.monotonic()
        reply = await self._udp(i, message, question)
        if reply[2] & 0x02:  # TC: the full answer needs TCP (RFC 7766)
            reply = await self._tcp(i, message, question)
        if self._observe is not None:
            self._observe(time.monotonic() - start)
        return reply

    async def _udp(self, i: int, message: bytes, question: bytes) -> bytes:
        chan = await self._channel(i)
        if len(chan.pending) >= self._max_inflight or chan.transport is None:
            raise _Unavailable
        key = (_RNG.getrandbits(16), question)
        while key in chan.pending:
            key = (_RNG.getrandbits(16), question)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        chan.pending[key] = fut
        try:
            chan.transport.sendto(key[0].to_bytes(2, "big") + message[2:])
            async with asyncio.timeout(self._timeout):
                return await fut
        finally:
            del chan.pending[key]

    async def _tcp(self, i: int, message: bytes, question: bytes) -> bytes:
        qid = _RNG.getrandbits(16)
        wire = qid.to_bytes(2, "big") + message[2:]
        async with asyncio.timeout(self._tcp_timeout):
            reader, writer = await asyncio.open_connection(*self._servers[i])
            try:
                writer.write(len(wire).to_bytes(2, "big") + wire)
                while True:  # skip anything that is not the answer to this query
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    reply = await reader.readexactly(size)
                    if len(reply) >= 12 and reply[2] & 0x80 and _key(reply) == (qid, question):
                        return reply
            finally:
                writer.close()

    async def _channel(self, i: int) -> _Channel:
        chan = self._channels[i]
        if chan is not None and chan.transport is not None:
            return chan
        if self._closed:
            raise _Unavailable
        async with self._opening:  # one socket per server, even when many queries race here
            chan = self._channels[i]
            if chan is None or chan.transport is None:
                chan = await self._open(*self._servers[i])
                self._channels[i] = chan
            return chan

    async def _open(self, host: str, port: int) -> _Channel:
        loop = asyncio.get_running_loop()
        family, _, _, _, addr = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):  # a bigger buffer for reply bursts, if allowed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            sock.setblocking(False)
            sock.connect(addr)  # the kernel then drops datagrams from any other address
            _, chan = await loop.create_datagram_endpoint(_Channel, sock=sock)
        except BaseException:
            sock.close()
            raise
        return chan


def _question(message: bytes) -> bytes | None:
    """The question section of a one-question message, lower-cased (0x20 may differ)."""
    off, end = 12, len(message)
    while off < end:
        n = message[off]
        if n == 0:
            # QTYPE and QCLASS keep their bytes: only the name is case-insensitive
            return message[12:off].lower() + message[off : off + 5] if off + 5 <= end else None
        if n > 63:
            return None  # a compression pointer or a reserved label type
        off += n + 1
    return None


def _key(message: bytes) -> Key | None:
    question = _question(message)
    if question is None:
        return None
    return int.from_bytes(message[:2], "big"), question
