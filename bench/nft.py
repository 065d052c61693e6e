"""nftables enforcer benchmark: netlink batches into a large interval set, in a namespace.

Workload model: the register holds ``--elements`` maximal prefixes (default
1,000,000): 90% IPv4 (mostly /32 hosts, every 16th a /24), 10% IPv6 /48s, named
by 1,000 instructions, as a national registry of blocked addresses looks. The
enforcer runs as the daemon runs it: monitor socket listening (so the kernel
builds a notification per element), full mode with forward and output chains.

1. start-up reload: ``reconcile`` of the whole state into empty sets (skeleton
   via ``nft -f``, encode, one batch: flush + add), timed end to end; then a
   second reload over the full sets (flush 1M + add 1M in one batch);
2. apply latency of a 100-prefix diff (50 removed, 50 added) into the full set,
   ``--rounds`` times: median and p99; and, as a baseline, the same into a set
   of ``50 * rounds`` prefixes (what kzgate itself costs, without the kernel's
   per-commit work that grows with the set);
3. a 100,000-prefix add into the full set, and its removal;
4. kernel memory per element: Slab (SUnreclaim) + VmallocUsed from
   /proc/meminfo, before the reload and after it, divided by the element count
   (one interval element per /32... see "elements_in_kernel": a closed prefix
   is two kernel elements, start and end).

Everything runs in a namespace created here (``kzg-bench-<pid>``) and deleted
at the end; the host's ruleset is never touched. Needs root (or CAP_SYS_ADMIN
for the namespace and CAP_NET_ADMIN). Prints JSON.

    .venv/bin/python bench/nft.py [--elements 1000000] [--rounds 50]
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

from kzgate.config import NftConfig
from kzgate.enforce.nft import NftEnforcer
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import IPNetwork


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def kernel_bytes() -> int:
    info = meminfo()
    return info["SUnreclaim"] + info["VmallocUsed"]


def refs(n: int) -> list[InstructionRef]:
    return [InstructionRef("mci", str(1000 + i), "2026-03-01") for i in range(n)]


def make_prefixes(count: int, names: list[InstructionRef], base: int = 0) -> dict[IPNetwork, Any]:
    """Disjoint prefixes; ``base`` shifts the address range so that sets never overlap."""
    v6 = count // 10
    out: dict[IPNetwork, Any] = {}
    start4 = int(ipaddress.IPv4Address("11.0.0.0")) + base * 256
    for i in range(count - v6):
        if i % 16 == 15:
            net: IPNetwork = ipaddress.IPv4Network((start4 + i * 256, 24))
        else:
            net = ipaddress.IPv4Network((start4 + i * 256 + 7, 32))
        out[net] = names[i % len(names)]
    start6 = int(ipaddress.IPv6Address("2a00::")) + (base << 80)
    for i in range(v6):
        out[ipaddress.IPv6Network((start6 + (i << 80), 48))] = names[i % len(names)]
    return out


def kernel_elements(prefixes: dict[IPNetwork, Any]) -> int:
    top = {4: 0xFFFFFFFF, 6: (1 << 128) - 1}
    return sum(1 if int(n.broadcast_address) == top[n.version] else 2 for n in prefixes)


async def timed(coro: Any) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


async def apply_rounds(
    enforcer: NftEnforcer, present: list[Any], extra: list[Any], rounds: int
) -> dict[str, float]:
    """Each round: remove 50 present prefixes and add 50 new ones, then the reverse."""
    latencies = []
    for r in range(rounds):
        gone = present[r * 50 : (r + 1) * 50]
        new = dict(extra[r * 50 : (r + 1) * 50])
        diff = Diff(prefixes_added=new, prefixes_removed=frozenset(n for n, _ in gone))
        latencies.append(await timed(enforcer.apply(diff)))
        back = Diff(prefixes_added=dict(gone), prefixes_removed=frozenset(new))
        latencies.append(await timed(enforcer.apply(back)))
    latencies.sort()
    return {
        "n": len(latencies),
        "median": round(statistics.median(latencies) * 1000, 2),
        "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "max": round(latencies[-1] * 1000, 2),
    }


async def bench(ns: str, count: int, rounds: int) -> dict[str, Any]:
    names = refs(1000)
    state = State({}, make_prefixes(count, names))
    cfg = NftConfig(True, "kzgate", ("forward", "output"), "drop", netns=ns)
    enforcer = NftEnforcer(cfg, on_drift=lambda: None)
    await enforcer.start()
    result: dict[str, Any] = {
        "elements": count,
        "elements_in_kernel": kernel_elements(state.prefixes),
    }
    # baseline: the same 100-prefix diffs into an almost empty set (our own overhead)
    small = make_prefixes(50 * rounds, names, base=count * 6)
    small_extra = list(make_prefixes(50 * rounds, names, base=count * 8).items())
    await enforcer.reconcile(State({}, small))
    result["apply_100_ms_small_set"] = await apply_rounds(
        enforcer, list(small.items()), small_extra, rounds
    )
    await enforcer.reconcile(State({}, {}))
    gc.collect()
    before = kernel_bytes()
    result["reload_empty_s"] = round(await timed(enforcer.reconcile(state)), 3)
    after = kernel_bytes()
    result["kernel_bytes_per_prefix"] = round((after - before) / count, 1)
    result["kernel_bytes_per_element"] = round((after - before) / result["elements_in_kernel"], 1)
    result["reload_full_s"] = round(await timed(enforcer.reconcile(state)), 3)

    # 100-prefix diffs: remove 50 present, add 50 new; then put them back
    extra = list(make_prefixes(50 * rounds, names, base=count * 2).items())
    present = list(state.prefixes.items())
    result["apply_100_ms"] = await apply_rounds(enforcer, present, extra, rounds)

    big = make_prefixes(100_000, names, base=count * 4)
    result["add_100k_s"] = round(await timed(enforcer.apply(Diff(prefixes_added=big))), 3)
    result["remove_100k_s"] = round(
        await timed(enforcer.apply(Diff(prefixes_removed=frozenset(big)))), 3
    )
    await asyncio.sleep(0.5)  # let the monitor see anything queued
    result["drift_reports_from_own_batches"] = enforcer.drift_repairs
    result["element_counts"] = enforcer.element_counts()
    await enforcer.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    ns = f"kzg-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        result = asyncio.run(bench(ns, args.elements, args.rounds))
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "del", ns], check=True)
        result["netns_delete_s"] = round(time.perf_counter() - started, 2)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
