"""The transfer listeners: TCP (AXFR/IXFR, RFC 5936 / RFC 7766) and UDP (SOA, IXFR→SOA).

Plumbing only: the answer is decided by ``answer.answer`` and arrives as an
iterator of messages; each is written, drained (so a slow secondary pushes
back instead of growing our buffer) and followed by a yield to the loop, so a
1M-name transfer shares the loop with DNS queries and task intake.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from kzgate.config import RpzConfig
from kzgate.connections import ConnectionTable, client_of
from kzgate.dns.sockets import Listeners
from kzgate.metrics import Refusals
from kzgate.rpz.answer import Answer, allowed
from kzgate.udp import Address, Reply, open_udp

log = logging.getLogger(__name__)

Responder = Callable[[bytes, str, bool], Answer | None]  # (query, peer address, tcp)
Outcome = Callable[[str, str], None]  # (kind, outcome), once per answer


class _Cut(Exception):
    """A limit ends this connection (already counted)."""


class _Conn:
    """One secondary's connection; ``served`` once it got an answer, not only refusals."""

    __slots__ = ("served", "streaming", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.served = False
        self.streaming = False


def _unserved(conn: _Conn) -> bool:
    return not conn.served and not conn.streaming


def _abort(conn: _Conn) -> None:
    conn.writer.transport.abort()


class XfrServer:
    """Only hosts in ``allow_transfer`` get a connection slot; each holds a bounded share.

    A connection lives ``idle_timeout`` from its start or from the last answer
    it was served: a refused query (no TSIG, a wrong zone) does not extend it.
    When every slot is taken, a new connection pushes out the oldest one that
    was never served. At most ``max_transfers`` zones stream at once; another
    waits for a slot as long as a stalled transfer may keep one.
    """

    def __init__(self, cfg: RpzConfig, respond: Responder, done: Outcome) -> None:
        self._listen = list(cfg.listen)
        self._acl = cfg.allow_transfer
        self._idle = cfg.idle_timeout
        self._respond = respond
        self._done = done
        self._listeners = Listeners(self._read_udp, self._client)
        self._conns: ConnectionTable[_Conn] = ConnectionTable(
            cfg.max_connections, cfg.max_per_client
        )
        self._transfers = asyncio.Semaphore(cfg.max_transfers)
        self.refusals = Refusals()

    async def start(self) -> list[tuple[str, int]]:
        return await self._listeners.start(self._listen)

    async def close(self) -> None:
        await self._listeners.close()

    async def _read_udp(self, sock: socket.socket) -> asyncio.DatagramTransport:
        return await open_udp(self.udp_query, "RPZ UDP listener", sock=sock)

    def udp_query(self, data: bytes, addr: Address, reply: Reply) -> None:
        if not allowed(addr[0], self._acl):
            self.refusals("acl")  # not even parsed: a flood from outside costs little
            return
        try:
            ans = self._respond(data, addr[0], False)
            if ans is not None:
                for message in ans.messages:
                    reply(message)
                self._done(ans.kind, ans.outcome)
        except Exception:
            log.exception("RPZ UDP query failed")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername")[0])
        if not allowed(peer, self._acl):
            self.refusals("acl")  # closed before it can hold a slot or send a byte we read
            writer.transport.abort()
            return
        conn = _Conn(writer)
        if not self._conns.enter(
            conn, client_of(peer), refused=self.refusals, can_evict=_unserved, evict=_abort
        ):
            writer.transport.abort()
            return
        try:
            await self._serve(reader, conn, peer)
        except (asyncio.IncompleteReadError, ConnectionError, _Cut):
            pass
        except asyncio.CancelledError:
            pass  # close(): end quietly
        except Exception:
            log.exception("RPZ transfer connection failed")
        finally:
            self._conns.remove(conn)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a stalled secondary: do not wait to flush
            else:
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, conn: _Conn, peer: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle
        while True:  # queries on one connection are answered in order
            try:
                async with asyncio.timeout_at(deadline):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
            except TimeoutError:
                if not conn.served:  # held a slot and was never served: count it
                    self.refusals("read_timeout")
                return
            ans = self._respond(data, peer, True)
            if ans is None:
                return
            conn.streaming = True
            try:
                if _is_transfer(ans):
                    await self._transfer(ans, data, peer, conn.writer)
                else:
                    await self._stream(ans, conn.writer)
            finally:
                conn.streaming = False
            if ans.outcome == "ok":  # only an answer served extends the connection's life
                conn.served = True
                self._conns.touch(conn)
                deadline = loop.time() + self._idle

    async def _transfer(
        self, ans: Answer, data: bytes, peer: str, writer: asyncio.StreamWriter
    ) -> None:
        """Stream a zone in one of the ``max_transfers`` slots, waiting up to ``idle_timeout``.

        That is as long as a stalled transfer may keep its slot, so a secondary
        behind one that stalled gets its turn.
        """
        if self._transfers.locked():
            try:
                async with asyncio.timeout(self._idle):
                    await self._transfers.acquire()
            except TimeoutError:
                self.refusals("transfers")
                raise _Cut from None
            # decided afresh: the zone may have changed while this one waited
            fresh = self._respond(data, peer, True)
            if fresh is None:
                self._transfers.release()
                return
            ans = fresh
        else:
            await self._transfers.acquire()
        try:
            await self._stream(ans, writer)
        finally:
            self._transfers.release()

    async def _stream(self, ans: Answer, writer: asyncio.StreamWriter) -> None:
        outcome = "error"  # unless every message is out
        try:
            for message in ans.messages:
                writer.write(len(message).to_bytes(2, "big") + message)
                try:
                    async with asyncio.timeout(self._idle):
                        await writer.drain()
                except TimeoutError:
                    self.refusals("write_timeout")
                    raise _Cut from None
                await asyncio.sleep(0)  # let DNS queries and apply() run between messages
            outcome = ans.outcome
        finally:
            self._done(ans.kind, outcome)


def _is_transfer(ans: Answer) -> bool:
    return ans.outcome == "ok" and ans.kind in ("axfr", "ixfr")
