"""A tiny in-process DNS server for tests: answers from a small zone, with faults on demand.

Plays the upstream resolver (or an authoritative server) on 127.0.0.1, UDP and
TCP on one port. The zone is dnslib zone text; CNAME chains inside it are
followed. Faults are attributes a test flips: ``drop``, ``delay``/``delays``,
``truncate`` (UDP answers carry TC=1 and no records), ``rcode`` (e.g.
SERVFAIL for everything), ``spoof`` (each UDP answer is preceded by forgeries
with a wrong ID and a wrong question). Every query received is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from dnslib import EDNS0, QTYPE, RCODE, RR, SOA, A, DNSLabel, DNSRecord


@dataclass(frozen=True)
class Logged:
    transport: str  # "udp" or "tcp"
    qname: str  # as received, case kept
    qtype: str
    id: int
    peer: tuple[str, int]


class FakeDns:
    def __init__(self, zone: str = "") -> None:
        self.records: list[RR] = RR.fromZone(zone) if zone else []
        self.drop = False
        self.delay = 0.0
        self.delays: dict[str, float] = {}  # lower-case name without the dot -> extra delay
        self.truncate = False
        self.rcode: int | None = None
        self.spoof = False
        self.log: list[Logged] = []
        self.address = ("127.0.0.1", 0)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, zone: str) -> None:
        self.records.extend(RR.fromZone(zone))

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # UDP on an ephemeral port, then TCP on the same one
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=("127.0.0.1", 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, "127.0.0.1", port)
            except OSError:
                transport.close()
                continue
            self._udp = transport
            self.address = ("127.0.0.1", port)
            return self.address
        raise OSError("no port free for both UDP and TCP")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def queries(self, transport: str | None = None) -> list[Logged]:
        return [q for q in self.log if transport is None or q.transport == transport]

    def answer(self, request: DNSRecord) -> DNSRecord:
        """The reply to ``request``: zone data with CNAMEs followed, or NXDOMAIN."""
        reply = request.reply()  # same ID and question, case kept
        for opt in request.ar:  # EDNS in the query: echo an OPT, as a real server does
            if opt.rtype == QTYPE.OPT:
                reply.add_ar(EDNS0(udp_len=1232, flags="do" if opt.ttl & 0x8000 else ""))
        if self.rcode is not None:
            reply.header.rcode = self.rcode
            return reply
        qtype = request.q.qtype
        name = request.q.qname
        for _ in range(10):
            here = [rr for rr in self.records if rr.rname == name]
            if not here:
                if not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                    reply.add_auth(_soa())
                return reply
            cname = [rr for rr in here if rr.rtype == QTYPE.CNAME]
            if cname and qtype != QTYPE.CNAME:
                reply.add_answer(cname[0])
                name = cname[0].rdata.label
                continue
            for rr in here:
                if rr.rtype == qtype:
                    reply.add_answer(rr)
            if not reply.rr:
                reply.add_auth(_soa())  # NODATA
            return reply
        return reply

    async def _respond(self, data: bytes, transport: str, peer: tuple[str, int]) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        qname = str(request.q.qname).rstrip(".")
        self.log.append(
            Logged(transport, qname, QTYPE.get(request.q.qtype), request.header.id, peer)
        )
        delay = self.delay + self.delays.get(qname.lower(), 0.0)
        if delay:
            await asyncio.sleep(delay)
        if self.drop:
            return None
        reply = self.answer(request)
        if transport == "udp" and self.truncate:
            reply = request.reply()
            reply.header.tc = 1
        return cast(bytes, reply.pack())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        out = await self._respond(data, "udp", addr)
        if out is None or self._udp is None:
            return
        if self.spoof:
            wrong_id = bytes([out[0] ^ 0x5A, out[1]]) + out[2:]
            forged = DNSRecord.parse(out)
            forged.q.qname = DNSLabel("forged." + str(forged.q.qname))
            for spoofed in (wrong_id, forged.pack()):
                self._udp.sendto(_poison(spoofed), addr)
        self._udp.sendto(out, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                out = await self._respond(await reader.readexactly(size), "tcp", peer)
                if out is not None:
                    writer.write(len(out).to_bytes(2, "big") + out)
                    await writer.drain()
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeDns) -> None:
        self._fake = fake

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._fake._spawn(self._fake._serve_udp(data, addr))


POISON = "6.6.6.6"


def _poison(message: bytes) -> bytes:
    """The same reply with every A record pointing at POISON: what a spoofer would send."""
    record = DNSRecord.parse(message)
    record.rr = [RR(rr.rname, QTYPE.A, rdata=A(POISON), ttl=rr.ttl) for rr in record.rr] or [
        RR(record.q.qname, QTYPE.A, rdata=A(POISON), ttl=300)
    ]
    return cast(bytes, record.pack())


def _soa() -> RR:
    return RR(
        ".", QTYPE.SOA, ttl=60, rdata=SOA("ns.fake.", "hostmaster.fake.", (1, 60, 60, 60, 60))
    )
