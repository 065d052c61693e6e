"""DNS listener limits under attack: an honest client still gets its answer while it runs.

Real sockets on loopback; attackers bind 127.0.0.2, 127.0.0.3, ... so that
per-client caps see distinct clients. Upstream is the in-process fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from dnslib import RCODE

from kzgate.config import DnsTcpConfig, HostPort
from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.server import DnsServer, Limits
from kzgate.dns.types import BlockSettings
from kzgate.dns.upstream import Upstreams
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex
from tests.support.daemon_proc import DaemonProcess
from tests.support.dnsfake import FakeDns
from tests.support.dnsmsg import frame, query, rcode, read_framed, udp_exchange
from tests.support.kzfixtures import write_config
from tests.support.streams import Stream, close_all, connect, sources

ZONE = """
example.kz. 300 IN A 203.0.113.5
slow.kz. 300 IN A 203.0.113.6
"""
REF = InstructionRef("mci", "1", "2026-01-01")


@dataclass
class Resolver:
    server: DnsServer
    engine: Engine
    fake: FakeDns
    port: int

    @property
    def refusals(self) -> dict[str, int]:
        return self.engine.stats.refusals


Make = Callable[..., Awaitable[Resolver]]

UDP_PATHS = [
    pytest.param(FAST, id="udp-c", marks=pytest.mark.skipif(FAST is None, reason="not built")),
    pytest.param(None, id="udp-python"),
]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    opened: list[tuple[Resolver, Upstreams]] = []

    async def start(limits: Limits, fast: FastModule | None = None) -> Resolver:
        fake = FakeDns(ZONE)
        await fake.start()
        index = PolicyIndex()
        index.set_domain("blocked.kz", REF)
        engine = Engine(index, BlockSettings())
        upstreams = Upstreams([fake.address], timeout=3.0)
        await upstreams.start()
        server = DnsServer(engine, upstreams, [HostPort("127.0.0.1", 0)], limits=limits, fast=fast)
        (bound,) = await server.start()
        resolver = Resolver(server, engine, fake, bound[1])
        opened.append((resolver, upstreams))
        return resolver

    yield start
    for r, upstreams in opened:
        await r.server.close()
        await upstreams.close()
        await r.fake.close()


async def tcp_ask(port: int, name: str, source: str = "127.0.0.1") -> int:
    """An honest client: connect, ask, read the answer, close; the RCODE."""
    reader, writer = await asyncio.wait_for(connect(port, source), 3)
    try:
        writer.write(frame(query(name)))
        return rcode(await read_framed(reader))
    finally:
        writer.close()


async def udp_ask(port: int, name: str, source: str, qid: int = 1) -> bytes | None:
    return await udp_exchange(port, query(name, qid=qid), source=source, wait=3)


async def is_closed(reader: asyncio.StreamReader, wait: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), wait) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def wait_for(check: Callable[[], bool], wait: float = 3.0) -> None:
    deadline = time.monotonic() + wait
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- connections --------------------------------------------------------------------


async def test_idle_tcp_flood_does_not_lock_out_an_honest_client(make: Make) -> None:
    r = await make(Limits(DnsTcpConfig(max_connections=40, max_per_client=8)))
    flood = [await connect(r.port, src) for src in sources(5) for _ in range(8)]
    try:
        await wait_for(lambda: len(r.server._conns) == 40)
        assert await tcp_ask(r.port, "blocked.kz") == RCODE.NXDOMAIN
        assert await tcp_ask(r.port, "example.kz") == RCODE.NOERROR
        # one idle attacker made room for each (the second may find the first's slot free)
        evicted = r.refusals.get("evicted", 0)
        assert evicted in (1, 2)
        assert r.refusals.get("connections") is None
        alive = [not await is_closed(reader, 0.01) for reader, _ in flood]
        assert sum(alive) == 40 - evicted  # the flood goes on: it lost only what was taken
    finally:
        close_all(flood)


async def test_query_drip_on_every_slot_does_not_lock_out_dig(make: Make) -> None:
    """The reported attack at the default limits: 1,000 connections that each ask now and then."""
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed")
    r = await make(Limits())  # 1,000 connections, 16 per client, 10 s idle
    flood = [await connect(r.port, src) for src in sources(63) for _ in range(16)][:1000]
    stop = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            while not stop.is_set():  # one query every 2 s: never idle for the 10 s timeout
                writer.write(frame(query("blocked.kz", qid=i % 65536)))
                await read_framed(reader)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

    drips = [asyncio.create_task(drip(rd, wr, i)) for i, (rd, wr) in enumerate(flood)]
    try:
        await wait_for(lambda: len(r.server._conns) == 1000)
        await asyncio.sleep(0.5)  # every attacker has asked at least once
        proc = await asyncio.create_subprocess_exec(
            "dig", "@127.0.0.1", "-p", str(r.port), "+tcp", "+tries=1", "+time=2",
            "www.blocked.kz", "A",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await asyncio.wait_for(proc.communicate(), 10))[0].decode()
        assert "status: NXDOMAIN" in out, out
        assert r.refusals.get("evicted", 0) >= 1
        assert sum(not t.done() for t in drips) >= 990  # the attack is still running
    finally:
        stop.set()
        close_all(flood)
        await asyncio.gather(*drips)


async def test_one_address_cannot_take_more_than_its_share(make: Make) -> None:
    r = await make(Limits(DnsTcpConfig(max_connections=100, max_per_client=4)))
    mine = [await connect(r.port, "127.0.0.2") for _ in range(20)]
    try:
        closed = [await is_closed(reader, 0.5) for reader, _ in mine[4:]]
        assert all(closed)
        assert r.refusals == {"per_client": 16}
        assert await tcp_ask(r.port, "blocked.kz", source="127.0.0.3") == RCODE.NXDOMAIN
        reader, writer = mine[0]  # what it holds still works
        writer.write(frame(query("blocked.kz")))
        assert rcode(await read_framed(reader)) == RCODE.NXDOMAIN
    finally:
        close_all(mine)


async def test_a_connection_that_owes_answers_is_not_evicted(make: Make) -> None:
    r = await make(Limits(DnsTcpConfig(max_connections=2, max_per_client=2)))
    r.fake.delay = 0.5
    waiting = [await connect(r.port, "127.0.0.2") for _ in range(2)]
    try:
        for _, writer in waiting:
            writer.write(frame(query("example.kz")))
        await asyncio.sleep(0.1)
        reader, writer = await connect(r.port, "127.0.0.3")
        assert await is_closed(reader, 1.0)  # full of owed answers: the newcomer is refused
        writer.close()
        assert r.refusals == {"connections": 1}
        for reader, _ in waiting:  # and the waiting ones got their answers
            assert rcode(await read_framed(reader)) == RCODE.NOERROR
    finally:
        close_all(waiting)


async def test_a_stalled_query_is_cut_off_and_counted(make: Make) -> None:
    r = await make(Limits(DnsTcpConfig(idle_timeout=0.3)))
    reader, writer = await connect(r.port, "127.0.0.2")
    writer.write(b"\x00\x40" + b"\x00" * 10)  # a length, then less than it promised
    assert await is_closed(reader, 2.0)
    writer.close()
    assert r.refusals == {"read_timeout": 1}


# --- queries waiting on the upstreams --------------------------------------------------


@pytest.mark.parametrize("fast", UDP_PATHS)
async def test_one_client_cannot_fill_the_upstream_queue(
    make: Make, fast: FastModule | None
) -> None:
    r = await make(Limits(max_pending=100, max_pending_per_client=10), fast=fast)
    r.fake.delays = {"slow.kz": 1.0}
    start = time.monotonic()
    flood = [asyncio.create_task(udp_ask(r.port, "slow.kz", "127.0.0.2", i)) for i in range(30)]
    await wait_for(lambda: r.refusals.get("pending_per_client") == 20, 1.0)
    # the honest client's forward is not held up by the attacker's
    answer = await udp_ask(r.port, "example.kz", "127.0.0.3")
    assert answer is not None and rcode(answer) == RCODE.NOERROR
    assert time.monotonic() - start < 0.9  # answered while the flood's 10 still wait
    rcodes = sorted(rcode(a) for a in await asyncio.gather(*flood) if a is not None)
    assert rcodes == [RCODE.NOERROR] * 10 + [RCODE.SERVFAIL] * 20
    assert r.refusals == {"pending_per_client": 20}


async def test_tcp_forwards_count_against_the_same_cap(make: Make) -> None:
    r = await make(Limits(max_pending=100, max_pending_per_client=5))
    r.fake.delays = {"slow.kz": 1.0}
    reader, writer = await connect(r.port, "127.0.0.2")
    try:
        writer.write(b"".join(frame(query("slow.kz", qid=i)) for i in range(8)))
        first = [rcode(await read_framed(reader, 0.8)) for _ in range(3)]
        assert first == [RCODE.SERVFAIL] * 3  # at once, before the slow ones come back
        assert await tcp_ask(r.port, "example.kz", source="127.0.0.3") == RCODE.NOERROR
        rest = [rcode(await read_framed(reader)) for _ in range(5)]
        assert rest == [RCODE.NOERROR] * 5
        assert r.refusals == {"pending_per_client": 3}
    finally:
        writer.close()


async def test_the_total_upstream_queue_is_bounded(make: Make) -> None:
    r = await make(Limits(max_pending=6, max_pending_per_client=3))
    r.fake.delays = {"slow.kz": 1.0}
    flood = [
        asyncio.create_task(udp_ask(r.port, "slow.kz", src, i))
        for i, src in enumerate(sources(3) * 3)
    ]
    await wait_for(lambda: r.refusals.get("pending_upstream") == 3, 1.0)
    started = time.monotonic()
    answer = await udp_ask(r.port, "example.kz", "127.0.0.9")
    assert answer is not None and rcode(answer) == RCODE.SERVFAIL
    assert time.monotonic() - started < 0.3  # at once, not after a timeout
    assert await udp_ask(r.port, "blocked.kz", "127.0.0.9") is not None  # blocking goes on
    await asyncio.gather(*flood)
    assert r.refusals == {"pending_upstream": 4}


async def test_with_workers_each_process_caps_and_the_metric_sums_them(
    tmp_path: Path, pki: Path
) -> None:
    """`kzgate run` with two DNS workers: the cap holds in each, /metrics adds the refusals."""
    dns = {"listen": ["127.0.0.1:0"], "workers": 2, "tcp": {"max_per_client": 2}}
    proc = DaemonProcess(write_config(tmp_path, pki, dns=dns))
    await proc.start()
    mine: list[Stream] = []
    try:
        port = proc.ports["dns"]
        mine = [await connect(port, "127.0.0.2") for _ in range(12)]
        closed = [await is_closed(reader, 0.3) for reader, _ in mine]
        # each worker kept two (the kernel spreads connections by their source port)
        assert 2 <= closed.count(False) <= 4, closed
        assert await tcp_ask(port, "example.kz", source="127.0.0.3") == RCODE.SERVFAIL  # admitted
        url = f"http://127.0.0.1:{proc.ports['metrics']}/metrics"
        line = 'kzgate_listener_refusals_total{listener="dns",reason="per_client"}'
        deadline = time.monotonic() + 3  # workers report their counters twice a second
        while True:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                text = await resp.text()
            value = [float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line)]
            if value == [closed.count(True)] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert value == [closed.count(True)], text
    finally:
        close_all(mine)
        proc.signal(15)
        assert proc.proc is not None
        await asyncio.wait_for(proc.proc.wait(), 15)
