"""Upstreams against in-process fake resolvers on 127.0.0.1: failover, TCP on TC, anti-spoofing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from kzgate.dns.upstream import Upstreams
from tests.support.dnsfake import POISON, FakeDns
from tests.support.dnsmsg import query

ZONE = """
example.kz. 300 IN A 203.0.113.5
big.kz. 300 IN TXT "a long answer that only TCP carries"
"""

Fakes = Callable[[], Awaitable[FakeDns]]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started: list[FakeDns] = []

    async def make() -> FakeDns:
        fake = FakeDns(ZONE)
        await fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.close()


def addresses(reply: bytes | None) -> list[str]:
    assert reply is not None
    return [str(rr.rdata) for rr in DNSRecord.parse(reply).rr if rr.rtype == QTYPE.A]


async def ask(upstreams: Upstreams, message: bytes) -> bytes | None:
    await upstreams.start()
    try:
        return await asyncio.wait_for(upstreams.query(message), 5)
    finally:
        await upstreams.close()


async def test_answer_keeps_question_and_uses_a_fresh_id(fakes: Fakes) -> None:
    fake = await fakes()
    message = query("ExAmPlE.kz")
    reply = await ask(Upstreams([fake.address]), message)
    assert addresses(reply) == ["203.0.113.5"]
    assert fake.log[0].qname == "ExAmPlE.kz"  # 0x20 case sent as given
    assert reply is not None and reply[12:].startswith(message[12:])


async def test_failover_when_the_first_drops(fakes: Fakes) -> None:
    first, second = await fakes(), await fakes()
    first.drop = True
    start = time.monotonic()
    reply = await ask(Upstreams([first.address, second.address], timeout=0.2), query("example.kz"))
    assert addresses(reply) == ["203.0.113.5"]
    assert len(first.log) == 1 and len(second.log) == 1
    assert time.monotonic() - start < 1.0


async def test_failover_at_once_when_the_first_port_is_closed(fakes: Fakes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()
    second = await fakes()
    start = time.monotonic()
    reply = await ask(Upstreams([closed, second.address], timeout=2.0), query("example.kz"))
    assert addresses(reply) == ["203.0.113.5"]
    assert time.monotonic() - start < 1.0  # the ICMP error, not the 2 s timeout


async def test_servfail_moves_on_but_is_kept_as_last_resort(fakes: Fakes) -> None:
    first, second = await fakes(), await fakes()
    first.rcode = RCODE.SERVFAIL
    reply = await ask(Upstreams([first.address, second.address]), query("example.kz"))
    assert addresses(reply) == ["203.0.113.5"]
    second.rcode = RCODE.SERVFAIL
    reply = await ask(Upstreams([first.address, second.address]), query("example.kz"))
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL


async def test_truncated_reply_is_retried_over_tcp(fakes: Fakes) -> None:
    fake = await fakes()
    fake.truncate = True
    reply = await ask(Upstreams([fake.address]), query("big.kz", "TXT"))
    assert reply is not None
    record = DNSRecord.parse(reply)
    assert record.header.tc == 0 and "only TCP carries" in str(record.rr[0].rdata)
    assert [q.transport for q in fake.log] == ["udp", "tcp"]
    assert fake.log[0].id != fake.log[1].id  # each attempt has its own ID


async def test_spoofed_replies_are_ignored(fakes: Fakes) -> None:
    fake = await fakes()
    fake.spoof = True  # a wrong-ID and a wrong-question forgery arrive first
    for _ in range(5):
        reply = await ask(Upstreams([fake.address]), query("example.kz"))
        assert addresses(reply) == ["203.0.113.5"]
        assert POISON not in addresses(reply)


async def test_all_fail_gives_none_within_the_timeouts(fakes: Fakes) -> None:
    first, second = await fakes(), await fakes()
    first.drop = second.drop = True
    start = time.monotonic()
    reply = await ask(Upstreams([first.address, second.address], timeout=0.2), query("example.kz"))
    elapsed = time.monotonic() - start
    assert reply is None
    assert 0.35 < elapsed < 2.0  # both timeouts, nothing more


async def test_observe_gets_each_successful_round_trip(fakes: Fakes) -> None:
    first, second = await fakes(), await fakes()
    first.drop = True
    second.delay = 0.05
    seen: list[float] = []
    upstreams = Upstreams([first.address, second.address], timeout=0.5, observe=seen.append)
    await upstreams.start()
    try:
        for name in ("example.kz", "nope.kz"):
            assert await upstreams.query(query(name)) is not None
    finally:
        await upstreams.close()
    # the winning round trip only, not the 0.5 s lost on the first server
    assert len(seen) == 2 and all(0.05 <= s < 0.5 for s in seen)


async def test_in_flight_queries_are_bounded_per_server(fakes: Fakes) -> None:
    fake = await fakes()
    fake.delay = 0.3
    upstreams = Upstreams([fake.address], max_inflight=2)
    await upstreams.start()
    try:
        replies = await asyncio.wait_for(
            asyncio.gather(*(upstreams.query(query("example.kz")) for _ in range(3))), 5
        )
    finally:
        await upstreams.close()
    assert sum(r is None for r in replies) == 1  # the third found the server full
    assert len(fake.log) == 2


async def test_concurrent_queries_share_one_socket(fakes: Fakes) -> None:
    fake = await fakes()
    fake.delays = {"nope.kz": 0.1}  # answered after the others: matched by ID, not order
    upstreams = Upstreams([fake.address])
    await upstreams.start()
    try:
        names = ["nope.kz", *(["example.kz"] * 20)]
        replies = await asyncio.wait_for(
            asyncio.gather(*(upstreams.query(query(n)) for n in names)), 5
        )
    finally:
        await upstreams.close()
    assert DNSRecord.parse(replies[0]).header.rcode == RCODE.NXDOMAIN
    assert all(addresses(r) == ["203.0.113.5"] for r in replies[1:])
    assert len({q.peer for q in fake.log}) == 1
