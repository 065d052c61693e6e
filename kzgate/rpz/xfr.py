"""The transfer listeners: TCP (AXFR/IXFR, RFC 5936 / RFC 7766) and UDP (SOA, IXFR→SOA).

Plumbing only: the answer is decided by ``answer.answer`` and arrives as an
iterator of messages; each is written, drained (so a slow secondary pushes
back instead of growing our buffer) and followed by a yield to the loop, so a
1M-name transfer shares the loop with DNS queries and task intake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from kzgate.config import HostPort
from kzgate.dns.sockets import bind_udp_tcp
from kzgate.rpz.answer import Answer

log = logging.getLogger(__name__)

Responder = Callable[[bytes, str, bool], Answer | None]  # (query, peer address, tcp)
Outcome = Callable[[str, str], None]  # (kind, outcome), once per answer

_IDLE = 30.0  # seconds a TCP connection may sit without a query or stall a write
_MAX_CLIENTS = 64  # transfers are few (one per secondary); refuse floods


class XfrServer:
    def __init__(self, listen: Sequence[HostPort], respond: Responder, done: Outcome) -> None:
        self._listen = list(listen)
        self._respond = respond
        self._done = done
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self) -> list[tuple[str, int]]:
        try:
            return [await self._bind(hp.host, hp.port) for hp in self._listen]
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for server in self._tcp:
            server.close()
        for transport in self._udp:
            transport.close()
        for task in self._clients:
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        self._udp, self._tcp = [], []

    async def _bind(self, host: str, port: int) -> tuple[str, int]:
        udp, tcp = await bind_udp_tcp(host, port)
        bound = udp.getsockname()
        try:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
            self._udp.append(transport)
            self._tcp.append(await asyncio.start_server(self._client, sock=tcp))
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return bound[0], bound[1]

    def udp_query(
        self, data: bytes, addr: tuple[Any, ...], transport: asyncio.DatagramTransport
    ) -> None:
        try:
            ans = self._respond(data, addr[0], False)
            if ans is not None:
                for message in ans.messages:
                    transport.sendto(message, addr)
                self._done(ans.kind, ans.outcome)
        except Exception:
            log.exception("RPZ UDP query failed")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        assert this is not None
        if len(self._clients) >= _MAX_CLIENTS:
            writer.transport.abort()
            return
        self._clients.add(this)
        peer = str(writer.get_extra_info("peername")[0])
        try:
            while True:  # queries on one connection are answered in order
                async with asyncio.timeout(_IDLE):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
                ans = self._respond(data, peer, True)
                if ans is None:
                    return
                await self._stream(ans, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # close(): end quietly
        except Exception:
            log.exception("RPZ transfer connection failed")
        finally:
            self._clients.discard(this)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a stalled secondary: do not wait to flush
            else:
                writer.close()

    async def _stream(self, ans: Answer, writer: asyncio.StreamWriter) -> None:
        outcome = "error"  # unless every message is out
        try:
            for message in ans.messages:
                writer.write(len(message).to_bytes(2, "big") + message)
                async with asyncio.timeout(_IDLE):
                    await writer.drain()
                await asyncio.sleep(0)  # let DNS queries and apply() run between messages
            outcome = ans.outcome
        finally:
            self._done(ans.kind, outcome)


class _Udp(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def __init__(self, server: XfrServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._server.udp_query(data, addr, self.transport)

    def error_received(self, exc: Exception) -> None:
        log.debug("RPZ UDP listener: %s", exc)
