"""The resolver on real sockets (127.0.0.1, port 0), driven by dig, kdig and raw clients.

Upstream is the in-process fake (tests/support/dnsfake.py); the engine and the policy
index are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord

from kzgate.config import DnsTcpConfig, HostPort
from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.server import DnsServer, Limits
from kzgate.dns.types import BlockMode, BlockSettings
from kzgate.dns.upstream import Upstreams
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex
from tests.support.dnsfake import FakeDns
from tests.support.dnsmsg import frame, query, rcode, read_framed, udp_exchange

ZONE = """
example.kz. 300 IN A 203.0.113.5
slow.kz. 300 IN A 203.0.113.6
www.shop.kz. 300 IN CNAME shop-cdn.kz.
shop-cdn.kz. 300 IN A 203.0.113.7
"""
REF = InstructionRef("mincifry", "12-34/567", "2024-05-01")
dig_missing = pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
kdig_missing = pytest.mark.skipif(shutil.which("kdig") is None, reason="kdig is not installed")


@dataclass
class Resolver:
    server: DnsServer
    upstreams: Upstreams
    engine: Engine
    index: PolicyIndex
    fake: FakeDns
    port: int


Make = Callable[..., Awaitable[Resolver]]


# Every test runs on both UDP paths: the C fast path (kzgate/dns/fast_*.c) in front
# of the engine, and the engine alone (an install without a compiler).
UDP_PATHS = [
    pytest.param(FAST, id="udp-c", marks=pytest.mark.skipif(FAST is None, reason="not built")),
    pytest.param(None, id="udp-python"),
]


@pytest.fixture(params=UDP_PATHS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Start fake upstream + engine + upstreams + server; everything is closed afterwards."""
    opened: list[Resolver] = []
    fast: FastModule | None = request.param

    async def start(
        mode: BlockMode = "nxdomain", timeout: float = 1.0, **server_args: Any
    ) -> Resolver:
        fake = FakeDns(ZONE)
        await fake.start()
        index = PolicyIndex()
        index.set_domain("blocked.kz", REF)
        engine = Engine(index, BlockSettings(mode=mode))
        upstreams = Upstreams([fake.address], timeout=timeout)
        await upstreams.start()
        server_args.setdefault("fast", fast)
        server = DnsServer(engine, upstreams, [HostPort("127.0.0.1", 0)], **server_args)
        (bound,) = await server.start()
        assert bound[0] == "127.0.0.1"
        resolver = Resolver(server, upstreams, engine, index, fake, bound[1])
        opened.append(resolver)
        return resolver

    yield start
    for r in opened:
        await r.server.close()
        await r.upstreams.close()
        await r.fake.close()


@pytest.fixture
async def resolver(make: Make) -> Resolver:
    return await make()


async def run(tool: str, port: int, *args: str) -> str:
    """Run dig or kdig against the server; the loop keeps serving while it waits."""
    # one try each, two seconds at most: a lost answer fails the test, it is not retried
    limits = ["+tries=1", "+time=2"] if tool == "dig" else ["+retry=0", "+timeout=2"]
    proc = await asyncio.create_subprocess_exec(
        tool,
        "@127.0.0.1",
        "-p",
        str(port),
        *args,
        *limits,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    return out.decode()


# --- blocking, seen through dig and kdig ----------------------------------------------


@dig_missing
async def test_dig_blocked_name_gets_nxdomain_with_ede(resolver: Resolver) -> None:
    out = await run("dig", resolver.port, "www.blocked.kz", "A")
    assert "status: NXDOMAIN" in out
    # dig 9.18 prints: ; EDE: 16 (Censored): (restricted by mincifry No. 12-34/567 of 2024-05-01)
    assert "; EDE: 16 (Censored): (restricted by mincifry No. 12-34/567 of 2024-05-01)" in out
    assert "blocked.kz.\t\t60\tIN\tSOA" in out  # negative caching (RFC 2308)


@dig_missing
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
async def test_dig_ede_over_udp_and_tcp_with_and_without_do(
    resolver: Resolver, transport: str
) -> None:
    for extra in ("+edns=0", "+dnssec"):
        out = await run("dig", resolver.port, "blocked.kz", "AAAA", transport, extra)
        assert "status: NXDOMAIN" in out
        assert "EDE: 16 (Censored)" in out and "12-34/567" in out and "2024-05-01" in out
        assert ("(TCP)" in out) == (transport == "+tcp")
        assert ("flags: do;" in out) == (extra == "+dnssec")


@dig_missing
async def test_dig_without_edns_gets_no_ede(resolver: Resolver) -> None:
    out = await run("dig", resolver.port, "blocked.kz", "A", "+noedns")
    assert "status: NXDOMAIN" in out
    assert "OPT PSEUDOSECTION" not in out and "EDE" not in out


@kdig_missing
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
async def test_kdig_blocked_name_shows_ede(resolver: Resolver, transport: str) -> None:
    out = await run("kdig", resolver.port, "www.blocked.kz", "A", "+edns=0", transport)
    assert "status: NXDOMAIN" in out
    # kdig 3.2 prints: ;; EDE: 16 (Censored): 'restricted by mincifry No. ... of 2024-05-01'
    assert ";; EDE: 16 (Censored): 'restricted by mincifry No. 12-34/567 of 2024-05-01'" in out


@dig_missing
async def test_sinkhole_mode_answers_the_block_page_address(make: Make) -> None:
    r = await make(mode="sinkhole")
    out = await run("dig", r.port, "www.blocked.kz", "A")
    assert "status: NOERROR" in out
    assert "www.blocked.kz.\t\t60\tIN\tA\t192.0.2.1" in out
    assert "EDE: 16 (Censored)" in out
    out = await run("dig", r.port, "www.blocked.kz", "AAAA", "+short")
    assert out.strip() == "2001:db8::1"
    out = await run("dig", r.port, "blocked.kz", "MX")
    assert "status: NOERROR" in out and "ANSWER: 0" in out  # NODATA


@dig_missing
async def test_refused_mode(make: Make) -> None:
    r = await make(mode="refused")
    out = await run("dig", r.port, "blocked.kz", "A")
    assert "status: REFUSED" in out and "EDE: 16 (Censored)" in out


# --- forwarding -------------------------------------------------------------------------


@dig_missing
@pytest.mark.parametrize("extra", ["+notcp", "+tcp", "+noedns", "+dnssec"])
async def test_allowed_name_is_forwarded(resolver: Resolver, extra: str) -> None:
    out = await run("dig", resolver.port, "example.kz", "A", extra)
    assert "status: NOERROR" in out
    assert "example.kz.\t\t300\tIN\tA\t203.0.113.5" in out
    assert [q.qname for q in resolver.fake.log] == ["example.kz"]


@kdig_missing
async def test_kdig_allowed_name_is_forwarded(resolver: Resolver) -> None:
    out = await run("kdig", resolver.port, "www.shop.kz", "A", "+tcp")
    assert "status: NOERROR" in out
    assert "shop-cdn.kz." in out and "203.0.113.7" in out


@dig_missing
async def test_cname_into_a_restricted_domain_is_blocked(resolver: Resolver) -> None:
    resolver.index.set_domain("shop-cdn.kz", REF)
    out = await run("dig", resolver.port, "www.shop.kz", "A")
    assert "status: NXDOMAIN" in out and "EDE: 16 (Censored)" in out
    assert "203.0.113.7" not in out


@dig_missing
async def test_servfail_quickly_when_every_upstream_drops(make: Make) -> None:
    r = await make(timeout=0.2)
    r.fake.drop = True
    start = time.monotonic()
    out = await run("dig", r.port, "example.kz", "A")
    assert "status: SERVFAIL" in out
    assert time.monotonic() - start < 1.5


@dig_missing
async def test_policy_change_applies_to_the_next_query(resolver: Resolver) -> None:
    assert "203.0.113.5" in await run("dig", resolver.port, "example.kz", "+short")
    resolver.index.set_domain("example.kz", REF)
    assert "status: NXDOMAIN" in await run("dig", resolver.port, "example.kz")
    resolver.index.remove_domain("example.kz")
    assert "203.0.113.5" in await run("dig", resolver.port, "example.kz", "+short")


async def test_0x20_case_and_id_are_preserved(resolver: Resolver) -> None:
    for name in ("ExAmPlE.kz", "WwW.bLoCkEd.Kz"):
        message = query(name, qid=0xBEEF)
        answer = await udp_exchange(resolver.port, message)
        assert answer is not None
        assert answer[:2] == b"\xbe\xef"
        assert answer[12 : len(message)] == message[12:]  # the question, byte for byte
    assert [q.qname for q in resolver.fake.log] == ["ExAmPlE.kz"]


# --- TCP (RFC 7766) ---------------------------------------------------------------------


async def test_tcp_pipelining_answers_out_of_order(resolver: Resolver) -> None:
    resolver.fake.delays = {"slow.kz": 0.3}
    reader, writer = await asyncio.open_connection("127.0.0.1", resolver.port)
    try:
        names = {1: "slow.kz", 2: "example.kz", 3: "blocked.kz", 4: "nothing.kz"}
        writer.write(b"".join(frame(query(n, qid=i)) for i, n in names.items()))
        answers = [DNSRecord.parse(await read_framed(reader)) for _ in names]
    finally:
        writer.close()
    order = [a.header.id for a in answers]
    assert sorted(order) == [1, 2, 3, 4]
    assert order[-1] == 1  # the slow one did not hold the others back
    by_id = {a.header.id: a for a in answers}
    assert str(by_id[1].rr[0].rdata) == "203.0.113.6"
    assert by_id[3].header.rcode == RCODE.NXDOMAIN
    assert by_id[4].header.rcode == RCODE.NXDOMAIN  # from the fake, forwarded


async def test_tcp_stops_reading_at_max_pipeline(make: Make) -> None:
    r = await make(limits=Limits(DnsTcpConfig(max_pipeline=2)))
    r.fake.delay = 1.0
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        writer.write(b"".join(frame(query(f"q{i}.kz", qid=i)) for i in range(4)))
        await asyncio.sleep(0.3)
        assert len(r.fake.log) == 2  # two in flight, the rest not read yet
        ids = sorted([DNSRecord.parse(await read_framed(reader)).header.id for _ in range(4)])
        assert ids == [0, 1, 2, 3]
    finally:
        writer.close()


async def test_tcp_idle_and_stalled_connections_are_closed(make: Make) -> None:
    r = await make(limits=Limits(DnsTcpConfig(idle_timeout=0.2)))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(frame(query("blocked.kz")))
    assert rcode(await read_framed(reader)) == RCODE.NXDOMAIN
    assert await asyncio.wait_for(reader.read(), 2) == b""  # idle: closed by the server
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(b"\x00\x40" + b"\x00" * 10)  # a length, then less than it promised
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_tcp_connection_stays_open_while_an_answer_is_owed(make: Make) -> None:
    r = await make(limits=Limits(DnsTcpConfig(idle_timeout=0.2)))
    r.fake.delay = 0.5  # longer than the idle timeout
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        writer.write(frame(query("example.kz")))
        assert rcode(await read_framed(reader)) == RCODE.NOERROR
    finally:
        writer.close()


async def test_tcp_clients_beyond_the_limit_are_closed(make: Make) -> None:
    r = await make(limits=Limits(DnsTcpConfig(max_connections=2)))
    r.fake.delay = 0.5
    held = [await asyncio.open_connection("127.0.0.1", r.port) for _ in range(2)]
    for _, w in held:  # a query each, still owed an answer: neither may be evicted
        w.write(frame(query("example.kz")))
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(frame(query("blocked.kz")))
    with contextlib.suppress(ConnectionResetError):  # closed with our query unread: RST
        assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    assert r.engine.stats.refusals == {"connections": 1}
    for _, w in held:
        w.close()
    await asyncio.sleep(0.6)  # their answers are done; a new client is served again
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(frame(query("blocked.kz")))
    assert rcode(await read_framed(reader)) == RCODE.NXDOMAIN
    writer.close()


# --- bad input --------------------------------------------------------------------------

POINTER_LOOP = struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
MALFORMED = {
    "short": b"\x12\x34\x01",
    "qr=1": struct.pack("!6H", 7, 0x8100, 1, 0, 0, 0) + query("example.kz")[12:],
    "garbage": bytes(range(256)) * 2,
    "pointer loop": POINTER_LOOP,
    "qdcount 2": struct.pack("!6H", 7, 0x0100, 2, 0, 0, 0) + query("example.kz")[12:],
    "label 64": struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0) + b"\x40" + b"a" * 64 + b"\x00\0\1\0\1",
}


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_udp_gets_formerr_or_nothing_and_serving_goes_on(
    resolver: Resolver, name: str
) -> None:
    answer = await udp_exchange(resolver.port, MALFORMED[name], wait=0.3)
    if name in ("short", "qr=1"):
        assert answer is None
    else:
        assert answer is not None and rcode(answer) == RCODE.FORMERR
    assert rcode(await udp_exchange(resolver.port, query("blocked.kz"))) == RCODE.NXDOMAIN
    assert resolver.fake.log == []


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_tcp_gets_formerr_or_close_and_serving_goes_on(
    resolver: Resolver, name: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", resolver.port)
    try:
        writer.write(frame(MALFORMED[name]))
        if name == "short":  # a length below 12: not DNS, the connection is closed
            assert await asyncio.wait_for(reader.read(), 2) == b""
            return
        if name != "qr=1":
            assert rcode(await read_framed(reader)) == RCODE.FORMERR
        writer.write(frame(query("blocked.kz")))  # same connection still serves
        assert rcode(await read_framed(reader)) == RCODE.NXDOMAIN
    finally:
        writer.close()


async def test_an_engine_exception_costs_one_answer_not_the_listener(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def flaky(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("engine bug")
            return real(*args, **kwargs)

        return call

    fast = resolver.server._fast
    if fast is None:
        monkeypatch.setattr(resolver.engine, "on_query", flaky(resolver.engine.on_query))
    else:  # the C path answers blocked names itself: make it the one that fails
        failing = type("Failing", (), {"serve": staticmethod(flaky(fast.serve))})()
        monkeypatch.setattr(resolver.server, "_fast", failing)
    reached_loop: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reached_loop.append(context))
    try:
        first = await udp_exchange(resolver.port, query("blocked.kz"), wait=0.3)
        if fast is None:
            assert first is None  # the engine had read it: that one answer is lost
        else:  # the C path failed before reading: the datagram waits for the next call
            assert rcode(first) == RCODE.NXDOMAIN
        assert rcode(await udp_exchange(resolver.port, query("blocked.kz"))) == RCODE.NXDOMAIN
        assert calls >= 2
    finally:
        loop.set_exception_handler(None)
    assert reached_loop == []


async def test_too_many_waiting_forwards_get_servfail_at_once(make: Make) -> None:
    r = await make(limits=Limits(max_pending=1))
    r.fake.delay = 0.5
    first = asyncio.create_task(udp_exchange(r.port, query("example.kz", qid=1)))
    await asyncio.sleep(0.1)
    start = time.monotonic()
    assert rcode(await udp_exchange(r.port, query("slow.kz", qid=2))) == RCODE.SERVFAIL
    assert time.monotonic() - start < 0.3
    assert rcode(await first) == RCODE.NOERROR


# --- lifecycle --------------------------------------------------------------------------


async def test_close_cancels_waiting_queries(make: Make) -> None:
    r = await make()
    r.fake.delay = 5
    pending = asyncio.create_task(udp_exchange(r.port, query("example.kz"), wait=1))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(frame(query("example.kz")))
    await asyncio.sleep(0.1)
    start = time.monotonic()
    await r.server.close()
    assert time.monotonic() - start < 0.5
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert await pending is None
    writer.close()


async def test_reuse_port_lets_two_servers_share_a_port(make: Make) -> None:
    r = await make(reuse_port=True)
    twin = DnsServer(r.engine, r.upstreams, [HostPort("127.0.0.1", r.port)], reuse_port=True)
    try:
        assert await twin.start() == [("127.0.0.1", r.port)]
    finally:
        await twin.close()
    plain = DnsServer(r.engine, r.upstreams, [HostPort("127.0.0.1", r.port)])
    with pytest.raises(OSError):
        await plain.start()


async def test_udp_receive_buffer_is_enlarged(resolver: Resolver) -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    server = resolver.server
    sock = server._listeners.bound[0].udp
    # Linux reports twice what was set; without CAP_NET_ADMIN it is capped at rmem_max.
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * min(4 << 20, rmem_max)
