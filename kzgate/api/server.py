"""The HTTP listeners (task API, metrics): aiohttp behind an accept loop that enforces limits.

aiohttp alone caps nothing a client can hold: any number of connections, a
TLS handshake of up to a minute, a request head read for as long as its
keep-alive timer allows (an hour by default). Here every connection is
admitted by a ConnectionTable first, and then:

- ``max_per_client`` connections from one client (IPv4 address, IPv6 /64);
  more are closed at once;
- ``max_connections`` in all; when every slot is taken, the least recently
  active connection with no request in progress (in its handshake, sending a
  head, or idle) is closed to make room, so a flood cannot lock out a client
  that has something to send;
- ``handshake_timeout`` for TLS; ``header_timeout`` for a complete request
  head, from the handshake or from the previous answer (which also ends an
  idle keep-alive connection); ``body_timeout`` from the head to the body's
  last byte;
- ``max_header_bytes`` a header line, ``max_headers`` header lines: aiohttp
  answers 400 beyond them.
Each refusal or cut is counted by reason (kzgate_listener_refusals_total).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from kzgate.config import ApiConfig, HostPort, MetricsConfig
from kzgate.connections import ConnectionTable, client_of

log = logging.getLogger("kzgate.api.server")

Refused = Callable[[str], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """One listener's limits; the defaults are ApiConfig's (config/model.py), not repeated."""

    max_connections: int
    max_per_client: int
    handshake_timeout: float
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_headers: int

    @staticmethod
    def of_api(cfg: ApiConfig) -> HttpLimits:
        return HttpLimits(
            cfg.max_connections,
            cfg.max_per_client,
            cfg.handshake_timeout,
            cfg.header_timeout,
            cfg.body_timeout,
            cfg.max_header_bytes,
            cfg.max_headers,
        )

    @staticmethod
    def of_metrics(cfg: MetricsConfig) -> HttpLimits:
        """The metrics listener's own limits; what its section does not name is the API's
        default (a placeholder ApiConfig: only its limits are read)."""
        defaults = HttpLimits.of_api(ApiConfig(tls_cert=Path(), tls_key=Path()))
        return dataclasses.replace(
            defaults,
            max_connections=cfg.max_connections,
            max_per_client=cfg.max_per_client,
            header_timeout=cfg.header_timeout,
        )


class _Conn:
    """One accepted connection, from accept to close."""

    __slots__ = ("busy", "handler", "partial", "requests", "task", "timer", "transport")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None  # accept → handshake done
        self.transport: asyncio.BaseTransport | None = None
        self.handler: RequestHandler | None = None
        self.busy = 0  # requests in a handler now
        self.requests = 0
        self.partial = False  # bytes came since the last request began or ended
        self.timer: asyncio.TimerHandle | None = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]
        elif self.task is not None:
            self.task.cancel()  # still in its handshake

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _idle(conn: _Conn) -> bool:
    return conn.busy == 0


def _evict(conn: _Conn) -> None:
    conn.abort()


class Gate:
    """The limits of one HTTP listener and the connections it admitted."""

    def __init__(self, limits: HttpLimits, refused: Refused) -> None:
        self.limits = limits
        self.refused = refused
        self.conns: ConnectionTable[_Conn] = ConnectionTable(
            limits.max_connections, limits.max_per_client
        )
        self._by_handler: dict[RequestHandler, _Conn] = {}

    def admit(self, peer: str) -> _Conn | None:
        conn = _Conn()
        if self.conns.enter(
            conn, client_of(peer), refused=self.refused, can_evict=_idle, evict=_evict
        ):
            return conn
        return None

    def connected(self, conn: _Conn, handler: RequestHandler) -> None:
        self._by_handler[handler] = conn
        self._wait_for_head(conn)

    def lost(self, conn: _Conn) -> None:
        conn.disarm()
        if conn.handler is not None:
            self._by_handler.pop(conn.handler, None)
        self.conns.remove(conn)

    def _wait_for_head(self, conn: _Conn) -> None:
        conn.disarm()
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(self.limits.header_timeout, self._head_late, conn)

    def _head_late(self, conn: _Conn) -> None:
        conn.timer = None
        if conn.busy:
            return
        if conn.partial or not conn.requests:  # a head begun and not finished, or none at all
            self.refused("header_timeout")
        conn.abort()  # else an idle keep-alive connection: its time is up

    def _body_late(self, conn: _Conn, request: web.BaseRequest) -> None:
        conn.timer = None
        if conn.busy and not request.content.is_eof():
            self.refused("body_timeout")
            conn.abort()

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: the connection is busy while a request is handled; its body is timed."""
        conn = self._by_handler.get(request.protocol)
        if conn is None:
            return await handler(request)
        conn.busy += 1
        conn.requests += 1
        conn.partial = False
        conn.disarm()
        self.conns.touch(conn)
        if not request.content.is_eof():
            loop = asyncio.get_running_loop()
            conn.timer = loop.call_later(self.limits.body_timeout, self._body_late, conn, request)
        this = asyncio.current_task()
        if this is not None:  # aiohttp runs each request in its own task: done = answer sent
            this.add_done_callback(lambda _: self._request_done(conn))
        return await handler(request)

    @web.middleware
    async def quiet(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Innermost: a connection closed under a handler (a body too slow) is no error."""
        try:
            return await handler(request)
        except ConnectionError:
            transport = request.transport
            if transport is None or transport.is_closing():
                return web.Response(status=408)  # written nowhere: the peer is gone
            raise

    def _request_done(self, conn: _Conn) -> None:
        conn.busy -= 1
        conn.partial = False
        if not conn.busy and conn.transport is not None and not conn.transport.is_closing():
            self._wait_for_head(conn)


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol, with the gate told of the connection's start, bytes and end."""

    def __init__(self, gate: Gate, conn: _Conn, handler: RequestHandler) -> None:
        self._gate, self._conn, self._handler = gate, conn, handler
        conn.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn.transport = transport
        self._handler.connection_made(transport)
        self._gate.connected(self._conn, self._handler)

    def data_received(self, data: bytes) -> None:
        self._conn.partial = True
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        self._handler.eof_received()
        return None  # as aiohttp's: close the connection on EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.lost(self._conn)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


GATE = web.AppKey("gate", Gate)


async def limited_runner(
    app: web.Application, limits: HttpLimits, refused: Refused, *, drain_seconds: float
) -> web.AppRunner:
    """An AppRunner for ``app`` whose requests pass the gate; set up, not yet listening."""
    gate = Gate(limits, refused)
    app[GATE] = gate
    app.middlewares.insert(0, gate.track)
    app.middlewares.append(gate.quiet)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=drain_seconds,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
        # the gate's head timer closes idle connections first; this is a backstop
        keepalive_timeout=2 * limits.header_timeout,
        lingering_time=min(10.0, limits.body_timeout),
    )
    await runner.setup()
    return runner


async def start_site(
    runner: web.AppRunner, where: HostPort, tls: ssl.SSLContext | None
) -> tuple[str, int]:
    """Listen on ``where``; the (host, port) bound. Raises OSError when it cannot."""
    site = LimitedSite(runner, where, tls)
    await site.start()
    return site.bound


class LimitedSite(web.BaseSite):
    """A TCP site that accepts connections itself, so that the gate sees every one first."""

    def __init__(self, runner: web.AppRunner, where: HostPort, tls: ssl.SSLContext | None) -> None:
        super().__init__(runner, ssl_context=tls)
        self._where = where
        self._gate = runner.app[GATE]
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self.bound = (where.host, where.port)

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{HostPort(*self.bound)}"

    async def start(self) -> None:
        await super().start()
        self._sock = await _listen(self._where, self._backlog)
        host, port = self._sock.getsockname()[:2]
        self.bound = (str(host), int(port))
        self._accepting = asyncio.get_running_loop().create_task(self._accept(self._sock))

    async def stop(self) -> None:
        self._runner._check_site(self)
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._sock is not None:
            self._sock.close()
        handshakes = [c.task for c in self._gate.conns if c.task is not None and not c.task.done()]
        for task in handshakes:
            task.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)
        self._runner._unreg_site(self)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("%s: cannot accept (%s); pausing", self.name, exc)
                    await asyncio.sleep(0.1)
                continue
            conn = self._gate.admit(str(addr[0]))
            if conn is None:
                sock.close()
                continue
            conn.task = loop.create_task(self._connect(conn, sock))

    async def _connect(self, conn: _Conn, sock: socket.socket) -> None:
        """Hand the socket to aiohttp once its TLS handshake is done (in time)."""
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        tls = self._ssl_context
        try:
            await loop.connect_accepted_socket(
                lambda: _Tracked(self._gate, conn, server()),
                sock,
                ssl=tls,
                ssl_handshake_timeout=self._gate.limits.handshake_timeout if tls else None,
            )
        except asyncio.CancelledError:
            self._gate.lost(conn)  # evicted, or the site is stopping; the loop closes the socket
        except Exception as exc:
            log.debug("%s: handshake failed: %r", self.name, exc)
            self._gate.lost(conn)
            if tls is not None:
                self._gate.refused("handshake")
            sock.close()
        finally:
            conn.task = None


async def _listen(where: HostPort, backlog: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        where.host, where.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
