"""HTTPS API and metrics listener limits under attack: a task push still gets its receipt.

The daemon serves on 127.0.0.1; attackers bind 127.0.0.2, 127.0.0.3, ... The
honest client pushes a signed task with the test client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kzgate.config import load_config
from kzgate.daemon import Daemon
from tests.support.daemon_proc import DaemonProcess
from tests.support.kzfixtures import Regulator, client_ssl, dump_register, push_task, write_config
from tests.support.streams import Stream, close_all, closed_within, connect

Start = Callable[..., Any]


@pytest.fixture
async def daemon(tmp_path: Path, pki: Path) -> AsyncIterator[Start]:
    started: list[Daemon] = []

    async def start(**api: Any) -> Daemon:
        metrics = api.pop("metrics", {})
        d = Daemon(load_config(write_config(tmp_path, pki, api=api, metrics=metrics)))
        await d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()


def refusals(d: Daemon, listener: str = "api") -> dict[str, float]:
    out = {}
    for family in d.metrics.registry.collect():
        if family.name == "kzgate_listener_refusals":
            for sample in family.samples:
                if sample.labels["listener"] == listener and sample.value:
                    out[sample.labels["reason"]] = sample.value
    return out


async def push(d: Daemon, pki: Path, number: str) -> None:
    """The honest client: a signed restrict, answered with an applied receipt."""
    mci = Regulator(pki)
    body = mci.sign(mci.restrict(number, f"domain:honest-{number}.kz"))
    status, receipt = await asyncio.wait_for(push_task(d.bound["api"][1], pki, body), 10)
    assert status == 200, receipt
    assert receipt["status"] == "applied"


async def tls(port: int, pki: Path, source: str) -> Stream:
    return await connect(port, source, ssl=client_ssl(pki))


async def test_a_connection_flood_does_not_lock_out_a_task_push(daemon: Start, pki: Path) -> None:
    d = await daemon(max_connections=20, max_per_client=5)
    port = d.bound["api"][1]
    flood = [await connect(port, f"127.0.0.{2 + i // 5}") for i in range(20)]  # no handshake at all
    over = await connect(port, "127.0.0.2")  # its sixth
    try:
        assert await closed_within(over[0], 1.0)
        await push(d, pki, "77-1")
        assert refusals(d) == {"per_client": 1, "evicted": 1}
        alive = [not await closed_within(reader, 0.01) for reader, _ in flood]
        assert sum(alive) == 19  # the flood goes on; it lost the one slot the push needed
    finally:
        close_all([*flood, over])


async def test_a_stalled_handshake_is_cut_off(daemon: Start, pki: Path) -> None:
    d = await daemon(handshake_timeout=0.5)
    reader, writer = await connect(d.bound["api"][1], "127.0.0.2")
    writer.write(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, and no more
    start = time.monotonic()
    assert await closed_within(reader, 3.0)
    assert 0.4 < time.monotonic() - start < 2.0
    writer.close()
    assert refusals(d) == {"handshake": 1}


async def test_slowloris_headers_are_cut_off_while_a_push_gets_through(
    daemon: Start, pki: Path
) -> None:
    d = await daemon(header_timeout=1.0, max_connections=10, max_per_client=10)
    port = d.bound["api"][1]
    slow = [await tls(port, pki, "127.0.0.2") for _ in range(8)]  # with a valid certificate
    stop = asyncio.Event()

    async def drip(stream: Stream) -> float:
        _, writer = stream
        start = time.monotonic()
        head = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        with contextlib.suppress(ConnectionError, OSError):
            for byte in head:  # one byte every 50 ms: never a complete head
                if stop.is_set() or writer.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        return time.monotonic() - start

    drips = [asyncio.create_task(drip(s)) for s in slow]
    try:
        await asyncio.sleep(0.3)
        await push(d, pki, "77-2")
        cut = [await closed_within(reader, 2.0) for reader, _ in slow]
        assert all(cut)
        assert refusals(d) == {"header_timeout": 8}
    finally:
        stop.set()
        await asyncio.gather(*drips)
        close_all(slow)


async def test_a_slow_body_is_cut_off_and_nothing_is_stored(daemon: Start, pki: Path) -> None:
    d = await daemon(body_timeout=1.0)
    port = d.bound["api"][1]
    before = dump_register(d.cfg.register.path)
    mci = Regulator(pki)
    body = mci.sign(mci.restrict("66-6", "domain:slow.kz", seq=50))
    reader, writer = await tls(port, pki, "127.0.0.2")
    head = (
        "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/jose\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:10])

    async def drip() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            for i in range(10, len(body) - 1):
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        start = time.monotonic()
        assert await closed_within(reader, 3.0)
        assert time.monotonic() - start < 2.0
        assert refusals(d) == {"body_timeout": 1}
        assert dump_register(d.cfg.register.path) == before
        await push(d, pki, "77-3")
    finally:
        dripping.cancel()
        writer.close()


async def test_header_size_and_count_limits(daemon: Start, pki: Path) -> None:
    d = await daemon(max_header_bytes=1024, max_headers=16)
    base = f"https://127.0.0.1:{d.bound['api'][1]}"
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(base + "/healthz", headers={"X-Big": "a" * 2000}) as resp:
            assert resp.status == 400
        many = {f"X-H{i}": "v" for i in range(20)}
        async with session.get(base + "/healthz", headers=many) as resp:
            assert resp.status == 400
        fits = {"X-Big": "a" * 900, **{f"X-H{i}": "v" for i in range(8)}}
        async with session.get(base + "/healthz", headers=fits) as resp:
            assert resp.status == 200
    await push(d, pki, "77-4")


async def test_the_metrics_listener_has_its_own_caps(daemon: Start, pki: Path) -> None:
    d = await daemon(metrics={"max_connections": 4, "max_per_client": 2, "header_timeout": 5})
    port = d.bound["metrics"][1]
    held = [await connect(port, f"127.0.0.{2 + i // 2}") for i in range(4)]
    third = await connect(port, "127.0.0.2")
    try:
        assert await closed_within(third[0], 1.0)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
        assert resp.status == 200
        assert 'kzgate_listener_refusals_total{listener="metrics",reason="evicted"} 1.0' in text
        assert 'kzgate_listener_refusals_total{listener="metrics",reason="per_client"} 1.0' in text
    finally:
        close_all([*held, third])


async def test_the_real_daemon_on_uvloop_keeps_taking_pushes_under_a_flood(
    tmp_path: Path, pki: Path
) -> None:
    """`kzgate run` (uvloop): 300 idle connections from 30 addresses, then a push."""
    config = write_config(tmp_path, pki, api={"max_connections": 100, "max_per_client": 10})
    proc = DaemonProcess(config)
    await proc.start()
    try:
        port = proc.ports["api"]
        flood: list[Stream] = []
        for i in range(300):
            with contextlib.suppress(OSError):
                flood.append(await connect(port, f"127.0.0.{2 + i // 10}"))
        mci = Regulator(pki)
        status, receipt = await asyncio.wait_for(
            push_task(port, pki, mci.sign(mci.restrict("77-5", "domain:uv.kz"))), 10
        )
        assert status == 200 and receipt["status"] == "applied", receipt
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{proc.ports['metrics']}/metrics") as resp,
        ):
            text = await resp.text()
        evicted = [ln for ln in text.splitlines() if 'listener="api",reason="evicted"' in ln]
        assert evicted and float(evicted[0].split()[-1]) >= 200
        close_all(flood)
    finally:
        proc.signal(15)
        assert proc.proc is not None
        await asyncio.wait_for(proc.proc.wait(), 15)
