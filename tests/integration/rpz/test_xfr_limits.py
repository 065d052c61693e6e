"""RPZ transfer listener limits under attack: an allowed secondary still gets the zone.

The primary serves on 127.0.0.1; attackers bind 127.0.0.2, 127.0.0.3, ... The
honest secondary is dnspython's AXFR client with the TSIG key, from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import re
import shutil
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.tsig
import pytest

from kzgate.config import HostPort, RpzConfig, TsigConfig
from kzgate.model import InstructionRef, State
from kzgate.rpz.enforcer import RpzEnforcer
from tests.support.dnsmsg import frame
from tests.support.streams import Stream, closed_within, connect

REF = InstructionRef("mci", "1", "2026-01-01")
ORIGIN = "rpz.kzgate."
SECRET = base64.b64encode(bytes(range(32))).decode()
KEYNAME = dns.name.from_text("kzgate-xfr.")
KEYRING = {KEYNAME: dns.tsig.Key(KEYNAME, SECRET, "hmac-sha256")}
Factory = Callable[..., Any]


class Primary:
    def __init__(self, enforcer: RpzEnforcer, port: int) -> None:
        self.enforcer, self.port = enforcer, port

    @property
    def refusals(self) -> dict[str, int]:
        return self.enforcer.server.refusals.counts

    async def axfr(self, source: str = "127.0.0.1") -> list[Any]:
        """The honest secondary: a signed AXFR; every record, or an exception."""

        def run() -> list[Any]:
            return list(
                dns.query.xfr(
                    "127.0.0.1",
                    ORIGIN,
                    port=self.port,
                    keyring=KEYRING,
                    keyname=KEYNAME,
                    source=source,
                    relativize=False,
                    lifetime=8,
                )
            )

        return await asyncio.wait_for(asyncio.to_thread(run), 10)


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[Factory]:
    started: list[RpzEnforcer] = []

    async def make(names: int = 3, **changes: Any) -> Primary:
        secret = tmp_path / "xfr.tsig"
        secret.write_text(SECRET + "\n")
        changes.setdefault("allow_transfer", (ipaddress.ip_network("127.0.0.0/8"),))
        cfg = RpzConfig(
            enabled=True,
            listen=(HostPort("127.0.0.1", 0),),
            notify=(),
            tsig=TsigConfig("kzgate-xfr.", "hmac-sha256", secret),
            **changes,
        )
        enforcer = RpzEnforcer(
            cfg,
            block_mode="nxdomain",
            sinkhole_ipv4=ipaddress.IPv4Address("192.0.2.1"),
            sinkhole_ipv6=ipaddress.IPv6Address("2001:db8::1"),
        )
        await enforcer.reconcile(
            State(domains={f"n{i}.example.kz": REF for i in range(names)}, prefixes={})
        )
        [(_, port)] = await enforcer.listen()
        started.append(enforcer)
        return Primary(enforcer, port)

    yield make
    for enforcer in started:
        await enforcer.close()


def unsigned_axfr() -> bytes:
    return frame(dns.message.make_query(ORIGIN, dns.rdatatype.AXFR).to_wire())


def soa_count(records: list[Any]) -> int:
    return sum(rrset.rdtype == dns.rdatatype.SOA for m in records for rrset in m.answer)


async def test_outside_the_acl_a_flood_never_holds_a_slot(primary: Factory) -> None:
    p = await primary(
        allow_transfer=(ipaddress.ip_network("127.0.0.1/32"),),
        max_connections=4,
        max_per_client=4,
    )
    stop = asyncio.Event()
    attempts = 0

    async def flood(source: str) -> None:
        nonlocal attempts
        while not stop.is_set():  # connect, send junk, and again as soon as we are closed
            with contextlib.suppress(OSError):
                reader, writer = await connect(p.port, source)
                attempts += 1
                writer.write(b"\x00\x10" + b"junk" * 4)
                await closed_within(reader, 1.0)
                writer.close()

    attackers = [asyncio.create_task(flood(f"127.0.0.{i}")) for i in range(2, 12)]
    try:
        await asyncio.sleep(0.3)
        records = await p.axfr()
        assert soa_count(records) == 2  # the whole zone, SOA to SOA
        assert attempts >= 20 and p.refusals.get("acl", 0) >= 20
        assert set(p.refusals) == {"acl"}
        assert len(p.enforcer.server._conns) <= 1  # no attacker ever held a slot
    finally:
        stop.set()
        await asyncio.gather(*attackers)


async def test_refused_queries_do_not_keep_a_slot(primary: Factory) -> None:
    """Inside the ACL but without the key: every query is REFUSED and extends nothing."""
    p = await primary(max_connections=6, max_per_client=3, idle_timeout=1.0)
    held = [await connect(p.port, f"127.0.0.{2 + i // 3}") for i in range(6)]
    stop = asyncio.Event()

    async def refused_every_tenth_of_a_second(stream: Stream) -> float:
        reader, writer = stream
        start = time.monotonic()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not stop.is_set():
                writer.write(unsigned_axfr())
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                reply = dns.message.from_wire(await reader.readexactly(size))
                assert reply.rcode() == dns.rcode.REFUSED
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
        return time.monotonic() - start

    keepers = [asyncio.create_task(refused_every_tenth_of_a_second(s)) for s in held]
    try:
        await asyncio.sleep(0.2)
        more = await connect(p.port, "127.0.0.2")  # its fourth: over its share
        assert await closed_within(more[0], 0.5)
        # every slot is held by refused queries: the signed secondary still gets in
        assert soa_count(await p.axfr()) == 2
        assert p.refusals.get("evicted") == 1
        lifetimes = await asyncio.wait_for(asyncio.gather(*keepers), 3)
        # the queries went on, yet each connection ended at the idle timeout
        assert all(0.2 < life < 1.6 for life in lifetimes), lifetimes
        assert p.refusals == {"per_client": 1, "evicted": 1, "read_timeout": 5}
    finally:
        stop.set()
        for _, writer in held:
            writer.close()


@pytest.mark.skipif(shutil.which("kdig") is None, reason="kdig is not installed")
async def test_a_stalled_transfer_holds_its_slot_only_until_the_timeout(primary: Factory) -> None:
    p = await primary(names=80_000, max_transfers=1, idle_timeout=1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a secondary that reads nothing
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", p.port))
    try:
        query = dns.message.make_query(ORIGIN, dns.rdatatype.AXFR)
        query.use_tsig(KEYRING[KEYNAME])
        sock.send(frame(query.to_wire()))
        server = p.enforcer.server

        def stalled() -> bool:  # it has the only transfer slot, and its answers pile up
            return any(c.writer.transport.get_write_buffer_size() > 65536 for c in server._conns)

        async with asyncio.timeout(5):
            while not stalled():
                await asyncio.sleep(0.01)
        start = time.monotonic()
        # the honest secondary waits for the slot, then gets the zone (kdig checks every TSIG)
        proc = await asyncio.create_subprocess_exec(
            "kdig", "-b", "127.0.0.2", "-p", str(p.port), "@127.0.0.1", ORIGIN, "AXFR",
            "-y", f"hmac-sha256:kzgate-xfr:{SECRET}", "+timeout=5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await asyncio.wait_for(proc.communicate(), 10))[0].decode()
        summary = re.search(r"Received \d+ B \(\d+ messages, (\d+) records\)", out)
        assert summary is not None and int(summary[1]) == 2 + 1 + 2 * 80_000, out[-300:]
        assert time.monotonic() - start < 4.0
        assert p.refusals == {"write_timeout": 1}
    finally:
        sock.close()


async def test_transfers_beyond_the_cap_wait_their_turn(
    primary: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await primary(names=500, max_transfers=2)
    server = p.enforcer.server
    streaming, peak = 0, 0
    real = server._stream

    async def counted(ans: Any, writer: Any) -> None:
        nonlocal streaming, peak
        streaming += 1
        peak = max(peak, streaming)
        try:
            await real(ans, writer)
        finally:
            streaming -= 1

    monkeypatch.setattr(server, "_stream", counted)
    results = await asyncio.gather(*(p.axfr(f"127.0.0.{i}") for i in range(2, 8)))
    assert all(soa_count(r) == 2 for r in results)  # every one got the whole zone
    assert peak == 2
    assert p.refusals == {}


async def test_a_notify_reply_flood_is_bounded() -> None:
    from kzgate.rpz.notify import MAX_REPLIES, queue_replies

    queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_REPLIES)
    receive = queue_replies(queue)
    for _ in range(10 * MAX_REPLIES):  # forged replies faster than they are read
        receive(b"junk", ("127.0.0.1", 53), lambda answer: None)
    assert queue.qsize() == MAX_REPLIES
