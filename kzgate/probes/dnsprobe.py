"""One DNS question over UDP, as a subscriber's stub would ask it: the edge of the DNS probes.

The reply is returned as bytes for verdict.dns_check to judge; here only the
ID and the question are matched (a stray or spoofed datagram is ignored and
the wait goes on), and every network failure is "no answer" (None).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct

import dns.message
import dns.rdatatype

from kzgate.config.hostport import HostPort

EDNS_PAYLOAD = 1232  # the DNS Flag Day 2020 size: no fragmented UDP replies
_QDCOUNT = struct.Struct("!H")


def build_query(name: str, qtype: str = "A") -> bytes:
    """A recursive query with EDNS0 (payload 1232) and a random ID."""
    query = dns.message.make_query(
        name, dns.rdatatype.from_text(qtype), use_edns=0, payload=EDNS_PAYLOAD
    )
    query.id = secrets.randbelow(0x10000)
    return query.to_wire()


def matches(query: bytes, reply: bytes) -> bool:
    """The reply carries the query's ID and its one question (name case aside)."""
    qlen = _question_len(query)
    if len(reply) < 12 + qlen or reply[:2] != query[:2] or not reply[2] & 0x80:
        return False
    if _QDCOUNT.unpack_from(reply, 4)[0] != 1:
        return False
    return reply[12 : 12 + qlen].lower() == query[12 : 12 + qlen].lower()


def _question_len(query: bytes) -> int:
    """Octets of the question of a query we built (uncompressed name, type, class)."""
    at = 12
    while query[at]:
        at += 1 + query[at]
    return at + 1 + 4 - 12


class _Waiter(asyncio.DatagramProtocol):
    def __init__(self, query: bytes) -> None:
        self.query = query
        self.reply: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done() and matches(self.query, data):
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable, ...) for our socket: nobody will answer.
        if not self.reply.done():
            self.reply.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_result(None)


async def ask(server: HostPort, name: str, qtype: str = "A", timeout: float = 1.0) -> bytes | None:
    """The first reply from ``server`` whose ID and question match, or None on a timeout
    or any network error."""
    try:
        query = build_query(name, qtype)
    except Exception:  # a name dnspython cannot encode (over 255 octets, ...): no question
        return None
    loop = asyncio.get_running_loop()
    transport: asyncio.DatagramTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, waiter = await loop.create_datagram_endpoint(
                lambda: _Waiter(query), remote_addr=(server.host, server.port)
            )
            transport.sendto(query)
            return await waiter.reply
    except (TimeoutError, OSError):
        return None
    finally:
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
