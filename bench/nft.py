"""nftables enforcer benchmark: hash sets for hosts, interval sets for prefixes, in a namespace.

Two workloads, both named by 1,000 instructions as a national registry looks:

- *mixed*: ``--elements`` targets (default 1,000,000), 90% hosts (IPv4 /32s
  and, one in ten, IPv6 /128s) and 10% prefixes (IPv4 /24s, IPv6 /48s);
- *diff*: ``--elements`` hosts plus ``--elements / 10`` prefixes, so that
  address diffs go into a million addresses and prefix diffs into 100,000
  prefixes.

The enforcer runs as the daemon runs it: monitor socket listening (so the
kernel builds a notification per element), full mode with forward and output
chains, one rule per set.

1. start-up reload of *mixed* into empty sets (skeleton via ``nft -f``,
   encode, one batch: flush + add), timed end to end (goal ≤ 3 s); then a
   second reload over the full sets;
2. over *diff*: a 100-address diff (50 hosts removed, 50 added) ``--rounds``
   times (goal p99 ≤ 5 ms), and a 100-prefix diff (goal p99 ≤ 20 ms);
   as a baseline, the same diffs into sets of ``50 * rounds`` elements
   (kzgate's own cost, without the kernel's work that grows with a set);
3. the reference, same run: the layout before hash sets, one interval set per
   family holding *mixed* whole (written with the same encoder and socket),
   and the same 100-address diff into it: what today's change is measured
   against;
4. kernel memory per element (SUnreclaim + VmallocUsed from /proc/meminfo)
   before and after the *mixed* reload.

Everything runs in a namespace created here (``kzg-bench-<pid>``) and deleted
at the end; the host's ruleset is never touched. Needs root. Prints JSON and
writes it to ``bench/results/nft-<time>.json``.

    .venv/bin/python bench/nft.py [--elements 1000000] [--rounds 50] [--no-reference]
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
from pathlib import Path
from typing import Any

from kzgate.config import NftConfig
from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.nft import NftEnforcer
from kzgate.enforce.nft.encode import INTERVALS, BatchBuilder
from kzgate.enforce.nft.netlink import Netlink, open_socket
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import IPNetwork

RESULTS = Path(__file__).parent / "results"
V4_BASE = int(ipaddress.IPv4Address("11.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2a00::"))


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


def hosts(count: int, names: list[InstructionRef], base: int) -> dict[IPNetwork, Any]:
    """``count`` distinct hosts, one in ten IPv6; ``base`` keeps separate calls disjoint."""
    out: dict[IPNetwork, Any] = {}
    for i in range(count):
        ref = names[i % len(names)]
        if i % 10 == 9:
            out[ipaddress.IPv6Network((V6_BASE + (base + i << 64) + 1, 128))] = ref
        else:
            # at most one host per /24 block, away from every prefix below
            out[ipaddress.IPv4Network((V4_BASE + (base + i) * 256 + 7, 32))] = ref
    return out


def prefixes(count: int, names: list[InstructionRef], base: int) -> dict[IPNetwork, Any]:
    """``count`` disjoint prefixes: IPv4 /24s, one in ten an IPv6 /48, above every host."""
    out: dict[IPNetwork, Any] = {}
    top4 = int(ipaddress.IPv4Address("120.0.0.0"))
    for i in range(count):
        ref = names[i % len(names)]
        if i % 10 == 9:
            out[ipaddress.IPv6Network((V6_BASE + (1 << 120) + (base + i << 80), 48))] = ref
        else:
            out[ipaddress.IPv4Network((top4 + (base + i) * 256, 24))] = ref
    return out


async def timed(coro: Any) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


def summary(latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "n": len(latencies),
        "median_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3),
    }


async def apply_rounds(
    enforcer: NftEnforcer, present: list[Any], extra: list[Any], rounds: int
) -> dict[str, float]:
    """Each round: remove 50 present elements and add 50 new ones, then the reverse."""
    latencies = []
    for r in range(rounds):
        gone = present[r * 50 : (r + 1) * 50]
        new = dict(extra[r * 50 : (r + 1) * 50])
        diff = Diff(prefixes_added=new, prefixes_removed=frozenset(n for n, _ in gone))
        latencies.append(await timed(enforcer.apply(diff)))
        back = Diff(prefixes_added=dict(gone), prefixes_removed=frozenset(new))
        latencies.append(await timed(enforcer.apply(back)))
    return summary(latencies)


def spread(items: dict[IPNetwork, Any], n: int) -> list[Any]:
    """``n`` items taken evenly across ``items`` (not only its start)."""
    every = list(items.items())
    step = max(1, len(every) // n)
    return every[::step][:n]


async def prefix_diffs_at(
    enforcer: NftEnforcer, n: int, names: list[InstructionRef], extra: list[Any], rounds: int
) -> dict[str, float]:
    """100-prefix diffs into interval sets of ``n`` prefixes and no hosts: how the kernel's
    commit of an interval set grows with the set."""
    only = prefixes(n, names, 0)
    await enforcer.reconcile(State({}, only))
    rounds = min(rounds, n // 50)
    return await apply_rounds(enforcer, spread(only, 50 * rounds), extra, rounds)


# -- the reference: one interval set per family, as before hash sets ------------------


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script.encode(), check=True)


def reference(ns: str, mixed: State, extra: list[Any], rounds: int) -> dict[str, Any]:
    """The same 100-address diffs into interval sets holding the whole mixed state."""
    nft(
        ns,
        "add table inet kzref\n"
        "add set inet kzref all_v4 { type ipv4_addr; flags interval; }\n"
        "add set inet kzref all_v6 { type ipv6_addr; flags interval; }\n",
    )
    netlink = run_in_netns(ns, lambda: Netlink(open_socket(32 * 1024 * 1024)))
    label = {id(r): r.label() for r in set(mixed.prefixes.values())}

    def items(d: dict[IPNetwork, Any], version: int) -> list[tuple[IPNetwork, str]]:
        return [(n, label.get(id(r)) or r.label()) for n, r in d.items() if n.version == version]

    def send(added: dict[IPNetwork, Any], removed: list[IPNetwork]) -> float:
        builder = BatchBuilder("kzref", netlink.seq)
        for v, name in ((4, "all_v4"), (6, "all_v6")):
            builder.delete(name, [n for n in removed if n.version == v], INTERVALS)
        for v, name in ((4, "all_v4"), (6, "all_v6")):
            builder.add(name, items(added, v), INTERVALS)
        started = time.perf_counter()
        netlink.transact(builder)
        return time.perf_counter() - started

    loaded = send(dict(mixed.prefixes), [])
    present = spread(dict(mixed.prefixes), 50 * rounds)
    latencies = []
    for r in range(rounds):
        gone = present[r * 50 : (r + 1) * 50]
        new = dict(extra[r * 50 : (r + 1) * 50])
        latencies.append(send(new, [n for n, _ in gone]))
        latencies.append(send(dict(gone), list(new)))
    netlink.sock.close()
    nft(ns, "delete table inet kzref\n")
    return {"load_s": round(loaded, 3), "apply_100_addresses": summary(latencies)}


# -- the run ----------------------------------------------------------------------------


async def bench(ns: str, count: int, rounds: int, with_reference: bool) -> dict[str, Any]:
    names = refs(1000)
    n_prefix = count // 10
    mixed = State({}, hosts(count - n_prefix, names, 0) | prefixes(n_prefix, names, 0))
    diff_state = State({}, hosts(count, names, 0) | prefixes(n_prefix, names, 0))
    extra_hosts = list(hosts(50 * rounds, names, 4 * count).items())
    extra_prefixes = list(prefixes(50 * rounds, names, 4 * n_prefix).items())
    gc.freeze()  # as the daemon does once the register's state is loaded
    cfg = NftConfig(True, "kzgate", ("forward", "output"), "drop", netns=ns)
    enforcer = NftEnforcer(cfg, on_drift=lambda: None)
    await enforcer.start()
    result: dict[str, Any] = {
        "elements": count,
        "mixed": {"hosts": count - n_prefix, "prefixes": n_prefix},
        "diff_state": {"hosts": count, "prefixes": n_prefix},
    }

    # baseline: the same diffs into small sets (our own overhead)
    small = hosts(50 * rounds, names, 8 * count) | prefixes(50 * rounds, names, 8 * n_prefix)
    await enforcer.reconcile(State({}, small))
    small_hosts = [(n, r) for n, r in small.items() if n.prefixlen == n.max_prefixlen]
    small_prefixes = [(n, r) for n, r in small.items() if n.prefixlen != n.max_prefixlen]
    result["small_sets"] = {
        "apply_100_addresses": await apply_rounds(enforcer, small_hosts, extra_hosts, rounds),
        "apply_100_prefixes": await apply_rounds(enforcer, small_prefixes, extra_prefixes, rounds),
    }
    await enforcer.reconcile(State({}, {}))

    gc.collect()
    before = kernel_bytes()
    result["reload_mixed_from_empty_s"] = round(await timed(enforcer.reconcile(mixed)), 3)
    after = kernel_bytes()
    result["kernel_bytes_per_element"] = round((after - before) / count, 1)
    result["reload_mixed_over_full_s"] = round(await timed(enforcer.reconcile(mixed)), 3)
    result["sets_after_mixed_reload"] = enforcer.status()["nft"]["sets"]  # type: ignore[index]

    await enforcer.reconcile(diff_state)
    result["sets_for_diffs"] = enforcer.status()["nft"]["sets"]  # type: ignore[index]
    only = diff_state.prefixes
    present_hosts = spread(
        {n: r for n, r in only.items() if n.prefixlen == n.max_prefixlen}, 50 * rounds
    )
    present_prefixes = spread(
        {n: r for n, r in only.items() if n.prefixlen != n.max_prefixlen}, 50 * rounds
    )
    result["apply_100_addresses_into_hosts"] = await apply_rounds(
        enforcer, present_hosts, extra_hosts, rounds
    )
    result["apply_100_prefixes_into_prefixes"] = await apply_rounds(
        enforcer, present_prefixes, extra_prefixes, rounds
    )
    result["apply_100_prefixes_by_interval_set_size"] = {
        str(n): await prefix_diffs_at(enforcer, n, names, extra_prefixes, rounds)
        for n in (1_000, 10_000, n_prefix)
    }
    await asyncio.sleep(0.5)  # let the monitor see anything queued
    result["drift_reports_from_own_batches"] = enforcer.drift_repairs
    await enforcer.reconcile(State({}, {}))
    await enforcer.close()

    if with_reference:
        ref = await asyncio.to_thread(reference, ns, mixed, extra_hosts, rounds)
        result["reference_one_interval_set_per_family"] = ref
        p99_ref = ref["apply_100_addresses"]["p99_ms"]
        p99_now = result["apply_100_addresses_into_hosts"]["p99_ms"]
        result["p99_ratio_reference_over_hash"] = round(p99_ref / p99_now, 1)
    result["goals"] = {
        "apply_100_addresses_p99_le_5ms": result["apply_100_addresses_into_hosts"]["p99_ms"] <= 5,
        "apply_100_prefixes_p99_le_20ms": result["apply_100_prefixes_into_prefixes"]["p99_ms"]
        <= 20,
        "reload_mixed_le_3s": result["reload_mixed_from_empty_s"] <= 3,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    ns = f"kzg-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        result = asyncio.run(bench(ns, args.elements, args.rounds, not args.no_reference))
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "del", ns], check=True)
        result["netns_delete_s"] = round(time.perf_counter() - started, 2)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    result["kernel"] = os.uname().release
    text = json.dumps(result, indent=2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"nft-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
