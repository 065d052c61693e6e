"""The DNS probe and the sweep against a fake resolver on loopback, and a fake kernel."""

from __future__ import annotations

import asyncio
import time

import pytest

from kzgate.config.hostport import HostPort
from kzgate.config.model import NftConfig, RoutesConfig
from kzgate.model import InstructionRef
from kzgate.probes import dnsprobe
from kzgate.probes.model import ProbeTarget
from kzgate.probes.sweep import Places, sweep
from kzgate.probes.verdict import BlockAnswer
from tests.support.dnsfake import FakeDns

REF = InstructionRef("mci", "12", "2026-11-01")
NX = BlockAnswer(frozenset({"NXDOMAIN"}), frozenset(), nodata=False)
ZONE = "open.kz. 60 IN A 203.0.113.5\n"


async def fake() -> tuple[FakeDns, HostPort]:
    server = FakeDns(ZONE)
    host, port = await server.start()
    return server, HostPort(host, port)


async def test_ask_returns_the_matching_reply_with_edns() -> None:
    server, where = await fake()
    try:
        server.spoof = True  # forged replies (wrong ID, wrong question) arrive first
        reply = await dnsprobe.ask(where, "open.kz")
        assert reply is not None and b"\xcb\x00\x71\x05" in reply  # 203.0.113.5, not 6.6.6.6
        assert b"\x06\x06\x06\x06" not in reply
        (logged,) = server.queries("udp")
        assert logged.qname == "open.kz" and logged.qtype == "A"
    finally:
        await server.close()


def test_built_query_carries_edns_1232_and_a_random_id() -> None:
    import dns.message

    ids = set()
    for _ in range(20):
        msg = dns.message.from_wire(dnsprobe.build_query("open.kz"))
        assert msg.edns == 0 and msg.payload == 1232
        ids.add(msg.id)
    assert len(ids) > 1


async def test_ask_times_out_to_none() -> None:
    server, where = await fake()
    try:
        server.drop = True
        started = time.monotonic()
        assert await dnsprobe.ask(where, "open.kz", timeout=0.3) is None
        assert time.monotonic() - started < 2
    finally:
        await server.close()


async def test_ask_never_raises_on_network_errors() -> None:
    server, where = await fake()
    await server.close()  # nobody listens: ICMP port unreachable, or a timeout
    assert await dnsprobe.ask(where, "open.kz", timeout=0.5) is None
    assert await dnsprobe.ask(HostPort("no-such-host.invalid", 53), "x.kz", timeout=0.5) is None
    assert await dnsprobe.ask(where, "a" * 300 + ".kz", timeout=0.5) is None  # not a DNS name


class FakeKernel:
    def __init__(self, covered: set[str], fail: bool = False) -> None:
        self.covered = covered
        self.fail = fail

    def nft_lookup(self, address: str) -> str | None:
        if self.fail:
            raise OSError("netlink: permission denied")
        return f"blocked_v4 {address}" if address in self.covered else None

    def route_lookup(self, address: str) -> str | None:
        return f"table 666 {address}/32 blackhole" if address in self.covered else None

    def connect_result(self, address: str) -> str:
        return "blocked: EPERM" if address in self.covered else "open: connected"


def name(value: str, expect: str) -> ProbeTarget:
    return ProbeTarget("name", value, f"domain:{value}", REF, expect)  # type: ignore[arg-type]


def address(value: str, expect: str) -> ProbeTarget:
    return ProbeTarget("address", value, f"ip:{value}", REF, expect)  # type: ignore[arg-type]


async def test_sweep_sends_names_to_dns_places_and_addresses_to_the_kernel() -> None:
    ours, ours_at = await fake()
    theirs, theirs_at = await fake()
    theirs.add("blocked.kz. 60 IN A 203.0.113.66\n")  # this resolver lets a blocked name through
    try:
        places = Places([ours_at], [theirs_at], NftConfig(), RoutesConfig(), connect=True)
        targets = [
            name("blocked.kz", "blocked"),
            name("open.kz", "open"),
            address("10.0.0.1", "blocked"),
            address("10.0.0.2", "blocked"),
        ]
        done: list[int] = []
        checks = await sweep(
            targets, places, FakeKernel({"10.0.0.1"}), (NX, NX), rate=100, progress=done.append
        )
        got = [(c.target.value, c.place.kind, c.observed, c.outcome) for c in checks]
        assert got == [
            ("blocked.kz", "kzgate", "NXDOMAIN", "pass"),
            ("blocked.kz", "resolver", "A 203.0.113.66", "fail"),
            ("open.kz", "kzgate", "A 203.0.113.5", "pass"),
            ("open.kz", "resolver", "A 203.0.113.5", "pass"),
            ("10.0.0.1", "nft", "blocked_v4 10.0.0.1", "pass"),
            ("10.0.0.1", "routes", "table 666 10.0.0.1/32 blackhole", "pass"),
            ("10.0.0.1", "connect", "blocked: EPERM", "pass"),
            ("10.0.0.2", "nft", "not covered", "fail"),
            ("10.0.0.2", "routes", "not covered", "fail"),
            ("10.0.0.2", "connect", "open: connected", "fail"),
        ]
        assert sorted(done) == [1, 2, 3, 4]
        assert {c.place.name for c in checks if c.place.kind == "resolver"} == {str(theirs_at)}
    finally:
        await ours.close()
        await theirs.close()


async def test_sweep_without_kernel_or_with_a_failing_one() -> None:
    places = Places([], [], NftConfig(), None, connect=False)
    targets = [address("10.0.0.1", "blocked")]
    assert await sweep(targets, places, None, (NX, NX), rate=100) == []
    (check,) = await sweep(targets, places, FakeKernel(set(), fail=True), (NX, NX), rate=100)
    assert check.outcome == "unreachable" and "permission denied" in check.observed


async def test_sweep_keeps_to_its_rate() -> None:
    places = Places([], [], NftConfig(), None, connect=False)
    targets = [address(f"10.0.0.{i}", "open") for i in range(11)]
    started = time.monotonic()
    checks = await sweep(targets, places, FakeKernel(set()), (NX, NX), rate=20)
    assert len(checks) == 11
    # 11 targets at 20 a second: the last starts 0.5 s after the first
    assert time.monotonic() - started >= 0.45


async def test_sweep_reads_a_stream_lazily() -> None:
    read: list[int] = []

    def stream() -> object:
        for i in range(5):
            read.append(i)
            yield address(f"10.0.0.{i}", "open")

    places = Places([], [], NftConfig(), None, connect=False)
    task = asyncio.create_task(
        sweep(stream(), places, FakeKernel(set()), (NX, NX), rate=10)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.15)
    assert len(read) < 5  # paced: not all read up front
    assert len(await task) == 5


def test_rate_must_be_positive() -> None:
    places = Places([], [], None, None, connect=False)
    with pytest.raises(ValueError):
        asyncio.run(sweep([], places, None, (NX, NX), rate=0))
