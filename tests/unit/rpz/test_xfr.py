"""The RPZ transfer listener on loopback with a stand-in responder: what goes out, to whom.

The answers themselves are tests/unit/rpz/test_answer.py's; the listener with the
real zone, TSIG and secondaries is in tests/integration/rpz/test_enforcer.py and
test_xfr_limits.py. Here the responder is a list of messages, so what is under
test is only the plumbing: ACL before parsing, framing, order, outcomes, timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kzgate.config import HostPort, RpzConfig
from kzgate.rpz.answer import Answer, Kind, Outcome
from kzgate.rpz.xfr import XfrServer
from tests.support.dnsmsg import frame, read_framed

INSIDE, OUTSIDE = "127.0.0.1", "127.0.0.2"  # both loopback; only the first may transfer


@dataclass
class Responder:
    """Answers every query with ``messages`` (or None, or raises), recording what it was asked."""

    messages: list[bytes] = field(default_factory=lambda: [b"m1", b"m2"])
    kind: Kind = "axfr"
    outcome: Outcome = "ok"
    drop: bool = False
    fail: bool = False
    asked: list[tuple[bytes, str, bool]] = field(default_factory=list)
    done: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, data: bytes, peer: str, tcp: bool) -> Answer | None:
        self.asked.append((data, peer, tcp))
        if self.fail:
            raise RuntimeError("a bug in the responder")
        if self.drop:
            return None
        return Answer(self.kind, self.outcome, iter(list(self.messages)))

    def finished(self, kind: str, outcome: str) -> None:
        self.done.append((kind, outcome))


@dataclass
class Running:
    server: XfrServer
    responder: Responder
    port: int


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def xfr() -> AsyncIterator[Start]:
    servers: list[XfrServer] = []

    async def start(**changes: Any) -> Running:
        cfg = RpzConfig(
            enabled=True,
            listen=(HostPort("127.0.0.1", 0),),
            allow_transfer=(ipaddress.ip_network(f"{INSIDE}/32"),),
            **changes,
        )
        responder = Responder()
        server = XfrServer(cfg, responder, responder.finished)
        servers.append(server)
        ((_, port),) = await server.start()
        return Running(server, responder, port)

    yield start
    for server in servers:
        await server.close()


async def udp_ask(port: int, data: bytes, source: str = INSIDE, wait: float = 2.0) -> list[bytes]:
    """Send ``data`` from ``source``; every datagram that comes back within ``wait``."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        got: list[bytes] = []
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(wait):
                    got.append(await loop.sock_recv(sock, 65535))
                wait = 0.2  # the rest of one answer follows at once
        return got


async def connect(
    port: int, source: str = INSIDE
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(5):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True  # aborted rather than closed


async def test_udp_from_inside_gets_every_message_and_the_outcome_is_counted(xfr: Start) -> None:
    r = await xfr()
    r.responder.kind, r.responder.messages = "soa", [b"soa-answer"]
    assert await udp_ask(r.port, b"query") == [b"soa-answer"]
    assert r.responder.asked == [(b"query", INSIDE, False)]
    assert r.responder.done == [("soa", "ok")]
    assert r.server.refusals.counts == {}


async def test_udp_from_outside_is_not_even_parsed(xfr: Start) -> None:
    r = await xfr()
    assert await udp_ask(r.port, b"query", source=OUTSIDE, wait=0.3) == []
    assert r.responder.asked == [] and r.responder.done == []
    assert r.server.refusals.counts == {"acl": 1}


async def test_udp_a_dropped_or_failed_query_gets_nothing_and_the_listener_stays(
    xfr: Start,
) -> None:
    r = await xfr()
    r.responder.drop = True
    assert await udp_ask(r.port, b"q1", wait=0.3) == []
    r.responder.drop, r.responder.fail = False, True
    assert await udp_ask(r.port, b"q2", wait=0.3) == []
    r.responder.fail = False
    assert await udp_ask(r.port, b"q3") == [b"m1", b"m2"]
    assert r.responder.done == [("axfr", "ok")]


async def test_tcp_queries_on_one_connection_are_answered_in_order(xfr: Start) -> None:
    r = await xfr()
    reader, writer = await connect(r.port)
    writer.write(frame(b"first") + frame(b"second"))
    assert [await read_framed(reader, wait=5) for _ in range(4)] == [b"m1", b"m2", b"m1", b"m2"]
    assert [(data, tcp) for data, _, tcp in r.responder.asked] == [
        (b"first", True),
        (b"second", True),
    ]
    assert r.responder.done == [("axfr", "ok"), ("axfr", "ok")]
    writer.close()


async def test_tcp_from_outside_is_cut_before_a_byte_is_read(xfr: Start) -> None:
    r = await xfr()
    reader, writer = await connect(r.port, source=OUTSIDE)
    writer.write(frame(b"query"))
    assert await closed_by_server(reader)
    assert r.responder.asked == []
    assert r.server.refusals.counts == {"acl": 1}
    writer.close()


async def test_tcp_a_query_the_responder_drops_ends_the_connection(xfr: Start) -> None:
    r = await xfr()
    r.responder.drop = True
    reader, writer = await connect(r.port)
    writer.write(frame(b"not dns"))
    assert await closed_by_server(reader)
    assert r.responder.done == []
    writer.close()


async def test_a_connection_never_served_is_closed_at_the_timeout_and_counted(
    xfr: Start,
) -> None:
    r = await xfr(idle_timeout=0.2)
    reader, writer = await connect(r.port)
    assert await closed_by_server(reader)
    assert r.server.refusals.counts == {"read_timeout": 1}
    writer.close()


async def test_a_connection_served_then_idle_is_closed_without_a_refusal(xfr: Start) -> None:
    r = await xfr(idle_timeout=0.3)
    reader, writer = await connect(r.port)
    writer.write(frame(b"query"))
    assert [await read_framed(reader, wait=5) for _ in range(2)] == [b"m1", b"m2"]
    assert await closed_by_server(reader)
    assert r.server.refusals.counts == {}
    writer.close()


async def test_an_answer_refused_does_not_extend_the_connection(xfr: Start) -> None:
    r = await xfr(idle_timeout=0.6)
    r.responder.kind, r.responder.outcome = "other", "refused"
    loop = asyncio.get_running_loop()
    reader, writer = await connect(r.port)
    opened = loop.time()
    for _ in range(3):  # refusals at 0, 0.25 and 0.5 s: had they counted, 1.1 s at least
        writer.write(frame(b"refuse me"))
        assert [await read_framed(reader, wait=5) for _ in range(2)] == [b"m1", b"m2"]
        await asyncio.sleep(0.25)
    assert await closed_by_server(reader)
    assert loop.time() - opened < 1.0
    assert r.server.refusals.counts == {"read_timeout": 1}
    writer.close()


async def test_close_ends_open_connections_and_frees_the_port(xfr: Start) -> None:
    r = await xfr()
    reader, writer = await connect(r.port)
    writer.write(frame(b"query"))
    assert [await read_framed(reader, wait=5) for _ in range(2)] == [b"m1", b"m2"]
    await r.server.close()
    assert await closed_by_server(reader)
    with pytest.raises(OSError):
        await connect(r.port)
    writer.close()
