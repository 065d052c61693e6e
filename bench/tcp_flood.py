"""DNS over TCP under the slot-exhaustion attack of issue 10, at the default limits.

Workload: a resolver process (engine, the default dns.tcp limits, one worker)
on 127.0.0.1; an attacker holds --conns connections from as many loopback
addresses as the per-client cap needs, each sending one query every
--every seconds (under the 10 s idle timeout, so no connection ever idles
out); meanwhile an honest client makes --honest fresh connections, one query
each. Reports how many honest queries were answered and how fast, and the
evictions. --no-evict makes nothing evictable, as before the limits (the
newcomer is refused when full).

    .venv/bin/python bench/tcp_flood.py [--conns 1000] [--every 8] [--honest 20] [--no-evict]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import struct
import time
from typing import Any

from dnslib import DNSRecord

from kzgate.config import HostPort
from kzgate.dns import server as server_module
from kzgate.dns.engine import Engine
from kzgate.dns.server import DnsServer, Limits
from kzgate.dns.types import BlockSettings
from kzgate.dns.upstream import Upstreams
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex

QUERY = bytes(DNSRecord.question("www.blocked.kz", "A").pack())
FRAME = struct.pack("!H", len(QUERY)) + QUERY


def serve(port_out: Any, stats_out: Any, stop: Any, no_evict: bool) -> None:
    if no_evict:
        server_module._idle = lambda conn: False  # type: ignore[assignment]

    async def main() -> None:
        index = PolicyIndex()
        index.set_domain("blocked.kz", InstructionRef("mci", "1", "2026-01-01"))
        engine = Engine(index, BlockSettings())
        server = DnsServer(engine, Upstreams([]), [HostPort("127.0.0.1", 0)], limits=Limits())
        (bound,) = await server.start()
        port_out.send(bound[1])
        while not stop.is_set():
            await asyncio.sleep(0.1)
        stats_out.send(dict(engine.stats.refusals))
        await server.close()

    asyncio.run(main())


async def attack(port: int, conns: int, every: float, honest: int) -> tuple[list[float], int]:
    per_source = Limits().tcp.max_per_client
    flood = []
    for i in range(conns):
        src = f"127.0.0.{2 + i // per_source}"
        with contextlib.suppress(OSError):
            flood.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)))
    stop = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            await asyncio.sleep(every * i / len(flood))  # spread over the interval
            while not stop.is_set():
                writer.write(FRAME)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                await reader.readexactly(size)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)

    drips = [asyncio.create_task(drip(r, w, i)) for i, (r, w) in enumerate(flood)]
    await asyncio.sleep(every)  # every attacker has asked at least once
    times, failed = [], 0
    for _ in range(honest):
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writer.write(FRAME)
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
            await asyncio.wait_for(reader.readexactly(size), 2)
            times.append(time.perf_counter() - start)
            writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            failed += 1
        await asyncio.sleep(0.1)
    alive = sum(not t.done() for t in drips)
    stop.set()
    for _, writer in flood:
        writer.close()
    await asyncio.gather(*drips)
    print(f"attacker connections open: {len(flood)}, still dripping at the end: {alive}")
    return times, failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--every", type=float, default=8.0)
    parser.add_argument("--honest", type=int, default=20)
    parser.add_argument("--no-evict", action="store_true")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    port_r, port_w = ctx.Pipe(False)
    stats_r, stats_w = ctx.Pipe(False)
    stop = ctx.Event()
    child = ctx.Process(target=serve, args=(port_w, stats_w, stop, args.no_evict))
    child.start()
    try:
        times, failed = asyncio.run(attack(port_r.recv(), args.conns, args.every, args.honest))
    finally:
        stop.set()
    print(f"server refusals: {stats_r.recv()}")
    child.join(10)
    ms = sorted(t * 1000 for t in times)
    print(f"honest queries answered: {len(times)}/{len(times) + failed}")
    if ms:
        print(f"honest latency ms: p50 {statistics.median(ms):.2f}, max {ms[-1]:.2f}")


if __name__ == "__main__":
    main()
