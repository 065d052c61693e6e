"""Policy lookup benchmark: the DNS hot path's one dictionary walk, alone.

Workload model: the policy index holds 1,000,000 restricted domains from 10
instructions of 100,000 names each (``b{i}.blocked-{i % 1000}.kz``, as
bench/dns_vs_unbound.py uses). Queries arrive as the server sees them: lower-case
wire-form names freshly cut from a packet, so each is a new ``bytes`` object whose
hash is not cached yet. Three kinds are timed apart:

* hit: a restricted name itself (one probe);
* miss: an allowed name, ``www.site{i}.example{i % 50}.com`` (four probes, all misses);
* subdomain: ``www.`` + a restricted name (a miss, then a hit).

Access patterns: ``uniform`` spreads queries over the whole index, so nearly
every probe misses the CPU caches and the TLB (the worst case); ``hot1000`` and
``hot10000`` draw them from 1,000 or 10,000 names, as real traffic repeats
popular names. (Their entries are scattered over the whole heap: 10,000 of them
fit in the caches but span more 4 KiB pages than the TLB covers.) Each query object
is built just before it is looked up, as a qname cut from a packet is. Two
timings per kind and pattern:

* batch means: ``perf_counter_ns`` around a loop of ``--batch`` lookups, divided
  by the batch size (the loop itself is included; its cost alone is reported);
* per call: ``perf_counter_ns`` around each single lookup (includes the timer's
  own cost, reported as ``timer_overhead_ns``).

Also: load time (``PolicyIndex.set_domain`` for each of the 1M normalized names,
as a reconcile at start-up does; and the whole ``DnsIndexEnforcer.reconcile``
from an empty index), and bytes per entry (tracemalloc and RSS growth).

    .venv/bin/python bench/lookup.py [--names 1000000] [--queries 200000] [--batch 1000]
                                     [--hot 1000 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.model import InstructionRef, State
from kzgate.names import domain_to_wire
from kzgate.policy import PolicyIndex

PER_INSTRUCTION = 100_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def restricted_names(n: int) -> list[str]:
    return [f"b{i}.blocked-{i % 1000}.kz" for i in range(n)]


def refs_for(n: int) -> list[InstructionRef]:
    count = max(1, -(-n // PER_INSTRUCTION))
    return [InstructionRef("mci", f"BENCH-{k}", "2026-11-01") for k in range(count)]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def build(names: list[str], refs: list[InstructionRef]) -> PolicyIndex:
    index = PolicyIndex()
    for i, name in enumerate(names):
        index.set_domain(name, refs[i // PER_INSTRUCTION])
    return index


async def timed_reconcile(state: State) -> float:
    """Seconds for a start-up reconcile of ``state`` into an empty index.

    Timed inside the loop, and returning a float: asyncio.run (3.11) formats
    the main task's result while restoring its SIGINT handler, and the repr of
    a 1M-name Diff alone takes over a second.
    """
    enforcer = DnsIndexEnforcer(PolicyIndex())
    started = time.perf_counter()
    await enforcer.reconcile(state)
    return time.perf_counter() - started


def queries(kind: str, population: list[int], count: int, rng: random.Random) -> list[str]:
    picks = rng.choices(population, k=count)
    if kind == "hit":
        return [f"b{i}.blocked-{i % 1000}.kz" for i in picks]
    if kind == "subdomain":
        return [f"www.b{i}.blocked-{i % 1000}.kz" for i in picks]
    return [f"www.site{i}.example{i % 50}.com" for i in picks]


def timer_overhead_ns(samples: int = 100_000) -> float:
    clock = time.perf_counter_ns
    spans = []
    for _ in range(samples):
        t0 = clock()
        spans.append(clock() - t0)
    return statistics.median(spans)


def empty_loop_ns(batch: int, rounds: int = 200) -> float:
    items = [b""] * batch
    clock = time.perf_counter_ns
    means = []
    for _ in range(rounds):
        t0 = clock()
        for _q in items:
            pass
        means.append((clock() - t0) / batch)
    return statistics.median(means)


def time_batches(lookup: Callable[[bytes], object], qs: list[str], batch: int) -> list[float]:
    clock = time.perf_counter_ns
    means = []
    for start in range(0, len(qs) - batch + 1, batch):
        # New objects just before use: hash not computed, bytes in cache, like a qname
        # just cut from a packet.
        chunk = [domain_to_wire(name) for name in qs[start : start + batch]]
        t0 = clock()
        for q in chunk:
            lookup(q)
        means.append((clock() - t0) / batch)
    return means


def time_calls(lookup: Callable[[bytes], object], qs: list[str]) -> list[float]:
    clock = time.perf_counter_ns
    spans: list[float] = []
    append = spans.append
    for name in qs:
        q = domain_to_wire(name)
        t0 = clock()
        lookup(q)
        append(clock() - t0)
    return spans


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "p99": round(pct(values, 0.99), 1),
        "mean": round(statistics.fmean(values), 1),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(20261122)
    names = restricted_names(args.names)
    refs = refs_for(args.names)
    results: dict[str, object] = {"names": args.names, "instructions": len(refs)}

    # Load time: what a start-up reconcile does, without tracemalloc slowing it.
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    index = build(names, refs)
    results["load_set_domain_s"] = round(time.perf_counter() - started, 3)
    results["rss_growth_bytes_per_entry"] = round((rss_bytes() - rss_before) / args.names, 1)
    del index
    gc.collect()

    state = State(
        domains={name: refs[i // PER_INSTRUCTION] for i, name in enumerate(names)},
        prefixes={},
    )
    results["load_reconcile_s"] = round(asyncio.run(timed_reconcile(state)), 3)
    del state
    gc.collect()

    # Memory: every allocation the index makes (keys, dict table); refs are shared.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = build(names, refs)
    results["tracemalloc_bytes_per_entry"] = round(
        (tracemalloc.get_traced_memory()[0] - base) / args.names, 1
    )
    tracemalloc.stop()

    lookup = index.lookup_wire
    overhead = timer_overhead_ns()
    results["timer_overhead_ns"] = overhead
    results["empty_loop_ns_per_item"] = round(empty_loop_ns(args.batch), 1)
    patterns = {"uniform": list(range(args.names))} | {
        f"hot{size}": rng.sample(range(args.names), min(size, args.names)) for size in args.hot
    }
    for pattern, population in patterns.items():
        for kind in ("hit", "miss", "subdomain"):
            expect_hit = kind != "miss"
            checks = queries(kind, population, 100, rng)
            if any((lookup(domain_to_wire(q)) is not None) != expect_hit for q in checks):
                raise RuntimeError(f"{kind} queries do not behave as {kind}s")
            time_batches(lookup, queries(kind, population, args.batch * 20, rng), args.batch)
            batch_qs = queries(kind, population, args.queries, rng)
            calls = time_calls(lookup, queries(kind, population, args.queries, rng))
            results[f"{kind}_{pattern}_ns"] = {
                "batch_means": summary(time_batches(lookup, batch_qs, args.batch)),
                "per_call_raw": summary(calls),
                "per_call_minus_timer": summary([c - overhead for c in calls]),
            }
    results["goals"] = {"lookup_p50_ns": 500, "load_s": 3.0}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200_000, help="per kind and timing")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--hot", type=int, nargs="+", default=[1000, 10_000], help="sizes of popular sets"
    )
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
