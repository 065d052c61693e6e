"""The DNS listeners: UDP (RFC 1035) and TCP (RFC 7766) around the sans-IO engine.

Only plumbing lives here: read a message, hand it to the engine with the time,
send what comes back; a Forward is finished in a task once the upstreams reply.
Every handler catches its own exceptions, so one bad packet (or an engine bug)
costs one answer, never the listener. Works on any event loop; the daemon
chooses uvloop (kzgate/loop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kzgate.config import DnsConfig, DnsTcpConfig, HostPort
from kzgate.connections import ConnectionTable, Tally, client_of
from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.sockets import Closable, Listeners
from kzgate.dns.types import Forward
from kzgate.dns.upstream import Upstreams
from kzgate.udp import Address, Reply, open_udp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """What clients may hold of this process (README, "Listener limits").

    Each DNS process (every worker) keeps its own: with N workers a client can
    hold up to N times as much in all, and an honest client finds room in
    whichever worker the kernel hands its connection or datagram to.
    """

    tcp: DnsTcpConfig = field(default_factory=DnsTcpConfig)
    max_pending: int = 4096  # queries (UDP and TCP) waiting on the upstreams
    max_pending_per_client: int = 256

    @staticmethod
    def of(cfg: DnsConfig) -> Limits:
        return Limits(cfg.tcp, cfg.max_pending_upstream, cfg.max_pending_upstream_per_client)


class _TcpConn:
    """One TCP client's connection: its writer and the queries it is still owed."""

    __slots__ = ("inflight", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.inflight: set[asyncio.Task[None]] = set()


def _idle(conn: _TcpConn) -> bool:
    return not conn.inflight  # nothing owed: closing it loses no answer


def _close(conn: _TcpConn) -> None:
    conn.writer.close()  # an idle one: nothing owed on it, a plain close


class DnsServer:
    def __init__(
        self,
        engine: Engine,
        upstreams: Upstreams,
        listen: Sequence[HostPort],
        *,
        reuse_port: bool = False,
        limits: Limits | None = None,
        fast: FastModule | None = FAST,
    ) -> None:
        self._engine = engine
        self._stats = engine.stats
        self._fast = fast
        self._upstreams = upstreams
        self._listen = list(listen)
        self._limits = limits or Limits()
        self._tcp_limits = self._limits.tcp
        self._idle = self._tcp_limits.idle_timeout
        self._listeners = Listeners(
            self._read_udp, self._tcp_client, reuse_port=reuse_port, big_rcvbuf=True, backlog=1024
        )
        self._forwards: set[asyncio.Task[None]] = set()
        self._pending = Tally()  # queries waiting on upstreams, per client
        self._conns: ConnectionTable[_TcpConn] = ConnectionTable(
            self._tcp_limits.max_connections, self._tcp_limits.max_per_client
        )
        self._last_error = float("-inf")
        self._closing = False

    def use_upstreams(self, upstreams: Upstreams) -> None:
        """Forward new queries to ``upstreams`` (config reload); queries in flight finish."""
        self._upstreams = upstreams

    async def start(self) -> list[tuple[str, int]]:
        """Bind UDP and TCP on every listen address; the (host, port) pairs bound."""
        if self._fast is None:
            why = "is not built" if FAST is None else "is off for this worker (repeated crashes)"
            log.info("DNS over UDP in pure Python: the C fast path (kzgate._native) %s", why)
        try:
            return await self._listeners.start(self._listen)
        except BaseException:
            await self.close()  # and the forwards that datagrams may have started meanwhile
            raise

    async def close(self) -> None:
        self._closing = True
        await self._listeners.close()
        for task in self._forwards:
            task.cancel()
        await asyncio.gather(*self._forwards, return_exceptions=True)

    async def _read_udp(self, sock: socket.socket) -> Closable:
        if self._fast is not None:
            return _FastReader(sock, self._udp_ready)
        return await open_udp(self.answer_udp, "DNS UDP listener", sock=sock)

    def _udp_ready(self, sock: socket.socket) -> None:
        """Datagrams wait: the C path answers what it can, the engine the rest."""
        fast = self._fast
        if fast is None:  # only sockets bound with a fast path get here
            return
        try:
            rest = fast.serve(sock.fileno(), time.monotonic(), self._engine.fast_view)
        except Exception:
            self.log_error("UDP fast path")
            return
        for data, addr in rest or ():
            self.answer_udp(data, addr, functools.partial(_send, sock, addr=addr))

    def answer_udp(self, data: bytes, addr: Address, send: Reply) -> None:
        """One UDP query from ``addr`` through the engine: answered now, or once upstreams reply."""
        try:
            out = self._engine.on_query(data, time.monotonic())
            if isinstance(out, bytes):
                send(out)
            elif out is not None:
                self.forward(out, send, client_of(addr[0]))
        except Exception:
            self.log_error("UDP query")

    def forward(self, fwd: Forward, send: Callable[[bytes], None], client: str) -> None:
        """Finish a forwarded UDP query in a task; SERVFAIL at once when too many wait."""
        if not self._reserve(client):
            send(self._engine.on_upstream(fwd, None, time.monotonic()))
            return
        task = asyncio.get_running_loop().create_task(self._resolve(fwd, send))
        self._forwards.add(task)
        task.add_done_callback(functools.partial(self._forwarded, client))

    def _forwarded(self, client: str, task: asyncio.Task[None]) -> None:
        self._forwards.discard(task)
        self._release(client)

    def _reserve(self, client: str) -> bool:
        """Count one more query waiting on the upstreams, unless a limit says SERVFAIL now."""
        if self._pending.total >= self._limits.max_pending:
            self._stats.refused("pending_upstream")
            return False
        if self._pending.held_by(client) >= self._limits.max_pending_per_client:
            self._stats.refused("pending_per_client")
            return False
        self._pending.add(client)
        return True

    def _release(self, client: str) -> None:
        self._pending.remove(client)

    async def _resolve(self, fwd: Forward, send: Callable[[bytes], None]) -> None:
        try:
            reply = await self._upstreams.query(fwd.upstream_query)
            send(self._engine.on_upstream(fwd, reply, time.monotonic()))
        except Exception:
            self.log_error("forwarded query")

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = client_of(str(peer[0])) if peer else ""
        conn = _TcpConn(writer)
        # Full: the connection idle longest makes room (RFC 7766 6.2.3), so
        # connections that sit or drip never lock out a new client.
        if not self._conns.enter(
            conn, client, refused=self._stats.refused, can_evict=_idle, evict=_close
        ):
            writer.transport.abort()  # accepted and closed: the client can try another server
            return
        try:
            await self._read_queries(reader, conn, client)
            if conn.inflight:  # the client said all it will say: answer what it asked
                await asyncio.wait(conn.inflight)
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            # close() cancels connections; on 3.11 a cancelled handler makes asyncio's
            # start_server log an error, so end quietly when the cancel is ours.
            if not self._closing:
                raise
        except Exception:
            self.log_error("TCP connection")
        finally:
            for task in conn.inflight:
                task.cancel()
            self._conns.remove(conn)
            writer.close()  # flushes the last answers first...
            if writer.transport.get_write_buffer_size():
                # ...but a client that never reads them must not keep the socket open
                asyncio.get_running_loop().call_later(self._idle, writer.transport.abort)

    async def _read_queries(
        self, reader: asyncio.StreamReader, conn: _TcpConn, client: str
    ) -> None:
        slots = asyncio.Semaphore(self._tcp_limits.max_pipeline)
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()  # max_pipeline queries in flight: stop reading
            try:
                head = await self._read_head(reader, conn.inflight)
                if head is None:
                    return
                size = int.from_bytes(head, "big")
                if size < 12:
                    return  # shorter than a header: this is not a DNS stream
                # a client that sends a length and then stalls is dropped
                async with asyncio.timeout(self._idle):
                    data = await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                return  # EOF
            except TimeoutError:
                self._stats.refused("read_timeout")
                return
            self._conns.touch(conn)  # a whole query: the last to be evicted now
            task = loop.create_task(self._tcp_query(data, conn.writer, slots, client))
            conn.inflight.add(task)
            task.add_done_callback(conn.inflight.discard)

    async def _read_head(
        self, reader: asyncio.StreamReader, inflight: set[asyncio.Task[None]]
    ) -> bytes | None:
        """The next 2-byte length; None once the connection is idle (RFC 7766 6.2.3)."""
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    return await reader.readexactly(2)  # consumes nothing when cancelled
            except TimeoutError:
                if not inflight:  # idle only when no answer is still owed
                    return None

    async def _tcp_query(
        self, data: bytes, writer: asyncio.StreamWriter, slots: asyncio.Semaphore, client: str
    ) -> None:
        try:
            out = self._engine.on_query(data, time.monotonic(), tcp=True)
            if isinstance(out, Forward):
                reply = None
                if self._reserve(client):
                    try:
                        reply = await self._upstreams.query(out.upstream_query)
                    finally:
                        self._release(client)
                out = self._engine.on_upstream(out, reply, time.monotonic())
            if out is not None and not writer.is_closing():
                writer.write(len(out).to_bytes(2, "big") + out)
                # a client that stops reading its answers must not grow our buffer forever
                async with asyncio.timeout(self._idle):
                    await writer.drain()
        except ConnectionError:
            writer.transport.abort()
        except TimeoutError:
            self._stats.refused("write_timeout")
            writer.transport.abort()
        except Exception:
            self.log_error("TCP query")
        finally:
            slots.release()

    def log_error(self, what: str) -> None:
        """Log the current exception, at most once a second: a flood must not flood the log."""
        now = time.monotonic()
        if now - self._last_error >= 1.0:
            self._last_error = now
            log.exception("DNS %s failed; still serving", what)


def _send(sock: socket.socket, answer: bytes, addr: Address) -> None:
    with contextlib.suppress(OSError):  # a full buffer or a peer gone: UDP drops the answer
        sock.sendto(answer, addr)


class _FastReader:
    """A bound UDP socket that the C fast path drains whenever the loop sees datagrams waiting."""

    def __init__(self, sock: socket.socket, ready: Callable[[socket.socket], None]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), ready, sock)

    def close(self) -> None:
        if self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
