"""Routes enforcer benchmark, kernel side: kzgate's routing table in a namespace, no BIRD.

1. 1,000,000 prefixes from empty (goal <= 5 s): ``reconcile`` (strict dump of
   the empty table, then every add in chunks of 4,096, one ack each), timed end to
   end, twice: unpaced (the kernel's and kzgate's capacity) and with the
   enforcer's pace (10,000 routes per 100 ms, for BIRD's sake: at least 10 s
   for 1M by design, see kzgate/enforce/routes/netlink.py);
2. a second reconcile over the full table (dump 1M, nothing to change);
3. apply latency of a 100-prefix diff (50 removed, 50 added) into the full
   table, ``--rounds`` times: median and p99 (goal <= 10 ms);
4. the references, in the same run: pyroute2's per-route ``IPRoute.route("add")``
   (groups=0: no multicast) for ``--reference`` routes, as routes per second,
   against kzgate's rate from 1; and the kernel's floor: the same 1,000,000
   adds as messages built before the clock starts, sent in the same chunks with
   one ack each and nothing else (what no writer on this machine can beat).

Workload: 90% IPv4 /32 hosts (every 16th a /24), 10% IPv6 /48s, as bench/nft.py.
Everything runs in a namespace created here (``kzg-bench-routes-<pid>``) and
deleted at the end. Needs root. Prints JSON.

    .venv/bin/python bench/routes.py [--routes 1000000] [--rounds 50] [--reference 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import os
import statistics
import subprocess
import time
from typing import Any

from kzgate.config import RoutesConfig
from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.routes import RoutesEnforcer
from kzgate.enforce.routes.encode import ADD_FLAGS, route_message
from kzgate.enforce.routes.netlink import CHUNK, PACE, RouteSocket, open_socket
from kzgate.enforce.routes.wire import NLM_F_ACK, RTM_NEWROUTE, RTN_BLACKHOLE
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import IPNetwork

REF = InstructionRef("mci", "bench", "2026-11-01")


def make_prefixes(count: int, base: int = 0) -> dict[IPNetwork, InstructionRef]:
    out: dict[IPNetwork, InstructionRef] = {}
    v6 = count // 10
    for i in range(base, base + count - v6):
        if i % 16 == 0:
            out[ipaddress.IPv4Network(((0x0B000000 + i) << 8 & 0xFFFFFFFF, 24))] = REF
        else:
            out[ipaddress.IPv4Network((0x40000000 + i, 32))] = REF
    for i in range(base, base + v6):
        out[ipaddress.IPv6Network((0x20010DB8 << 96 | i << 80, 48))] = REF
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(coro: Any) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


def flush(ns: str) -> None:
    for family in ("-4", "-6"):
        subprocess.run(
            ["ip", "-n", ns, family, "route", "flush", "table", "666", "proto", "252"],
            capture_output=True,
            check=False,
        )


def pyroute2_rate(ns: str, count: int) -> float:
    """Routes per second of pyroute2's one-call-per-route add, in ``ns``."""
    from pyroute2 import NetNS

    with NetNS(ns, groups=0) as ipr:
        started = time.perf_counter()
        for i in range(count):
            ipr.route(
                "add", dst=f"172.16.{i >> 8}.{i & 255}/32", table=667, proto=252, type="blackhole"
            )
        return count / (time.perf_counter() - started)


def kernel_floor(ns: str, prefixes: list[IPNetwork]) -> float:
    """Seconds for the kernel to take ``prefixes`` as prebuilt acked chunks, into an empty table."""
    writer = RouteSocket(run_in_netns(ns, open_socket))
    try:
        chunks = []
        for first in range(0, len(prefixes), CHUNK):
            part = prefixes[first : first + CHUNK]
            last = len(part) - 1
            chunks.append(
                b"".join(
                    route_message(
                        RTM_NEWROUTE,
                        ADD_FLAGS if i == last else ADD_FLAGS & ~NLM_F_ACK,
                        first + i + 1,
                        net,
                        666,
                        252,
                        RTN_BLACKHOLE,
                    )
                    for i, net in enumerate(part)
                )
            )
        started = time.perf_counter()
        for n, data in enumerate(chunks):
            writer.sock.send(data)
            barrier = min((n + 1) * CHUNK, len(prefixes))
            for ack in writer._answers(n * CHUNK + 1, barrier):
                assert ack.errno == 0, ack.describe()
        return time.perf_counter() - started
    finally:
        writer.sock.close()


async def bench(ns: str, count: int, rounds: int, reference: int) -> dict[str, Any]:
    state = State({}, make_prefixes(count))
    gc.freeze()  # as the daemon does once the register's state is loaded (memory.keep_for_life)
    out: dict[str, Any] = {"routes": count}
    for label, pace in (("unpaced", None), ("paced", PACE)):
        flush(ns)
        e = RoutesEnforcer(RoutesConfig(enabled=True, netns=ns), pace=pace)
        await e.start()
        try:
            out[f"from_empty_{label}_s"] = round(await timed(e.reconcile(state)), 3)
            if label == "unpaced":
                out["reconcile_full_nothing_to_do_s"] = round(await timed(e.reconcile(state)), 3)
                out["held"] = e.route_counts()
                latencies = []
                extra = list(make_prefixes(50 * rounds * 10 // 9 + 10, base=count + 16))
                current = list(state.prefixes)
                for r in range(rounds):
                    gone = frozenset(current[r * 50 : r * 50 + 50])
                    new = {p: REF for p in extra[r * 50 : r * 50 + 50]}
                    latencies.append(
                        await timed(e.apply(Diff(prefixes_added=new, prefixes_removed=gone)))
                    )
                out["diff_100_ms"] = {
                    "median": round(statistics.median(latencies) * 1000, 2),
                    "p99": round(pct(latencies, 0.99) * 1000, 2),
                    "max": round(max(latencies) * 1000, 2),
                }
        finally:
            await e.close()
    flush(ns)
    floor = await asyncio.to_thread(kernel_floor, ns, list(state.prefixes))
    out["kernel_floor_from_empty_s"] = round(floor, 3)
    out["ratio_kzgate_over_kernel_floor"] = round(out["from_empty_unpaced_s"] / floor, 2)
    flush(ns)
    kz_rate = count / out["from_empty_unpaced_s"]
    ref_rate = await asyncio.to_thread(pyroute2_rate, ns, reference)
    out["pyroute2_per_route"] = {"routes": reference, "routes_per_s": round(ref_rate)}
    out["kzgate_unpaced_routes_per_s"] = round(kz_rate)
    out["ratio_kzgate_over_pyroute2"] = round(kz_rate / ref_rate, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--reference", type=int, default=2000)
    args = parser.parse_args()
    ns = f"kzg-bench-routes-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        result = asyncio.run(bench(ns, args.routes, args.rounds, args.reference))
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    result["kernel"] = os.uname().release
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
