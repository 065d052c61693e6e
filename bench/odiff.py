"""O(diff) benchmark: a 100-target diff into a small and a large state, same run, same diffs.

Does applying a diff cost the diff or the set? Each enforcer below is filled
by ``reconcile`` (as start-up does, then ``gc.freeze()`` as the daemon does
once its state is loaded) to ``--small`` and to ``--large`` targets, and then
gets ``--rounds`` diffs of 100 domains (50 of the oldest present removed, 50
new added) through its public ``apply``, the call the enforcer set makes after
each commit. Small and large alternate round by round (order flipped every
round), so what else the machine does falls on both; the large/small ratio of
the medians is the answer (1.0: the set's size costs nothing).

Enforcers (``--only`` picks some):

* ``dns``: ``DnsIndexEnforcer`` over the compiled NameTable (the daemon's);
* ``dns-workers``: the ``WorkerPool`` (one forked worker on a loopback port,
  ``dns.workers: 1``, the default) applied right after ``dns`` with the same
  diff, as ``build_enforcers`` orders them: the broadcast, the worker's own
  index update and its ack;
* ``dns-dict``: ``DnsIndexEnforcer`` over the dict NameTable (no C module);
* ``rpz``: ``RpzEnforcer`` as the daemon runs it: zone sets, the IXFR
  journal, and the serial written durably (write, fsync, rename) in
  ``--dir`` (default: a temporary directory on /var/tmp, a disk);
* ``rpz-mem``: the same without the serial file: zone and journal alone.

For both RPZ enforcers, after each diff, the serving side's cost of an IXFR
from the previous serial (``answer()`` on a TCP IXFR query, every message
rendered): its time and its bytes; once at the end, the AXFR of each zone.

Names are a mix as a registry's look (``target_name``): 60 % registrable
domains under .kz/.com/.ru/..., 20 % subdomains (www., cdn., ...), 10 %
hosts under one shared parent, 10 % IDN (Cyrillic, in A-label form, under
.kz and .қаз); each is checked to be what ``normalize_domain`` makes of it.

``--churn N`` then applies N more diffs to every large enforcer but ``rpz``
(its fsync would only add noise to ``rpz-mem``'s numbers), each timed: a hash
table that deletes leaves tombstones (or dummies) and rehashes itself whole now
and then, in time proportional to the set; this lists the diffs that paid for
it (slower than 2 ms and 10x the median). 15,000 reach the compiled
NameTable's first rehash at 1M (they come ~12,400 diffs of 50 new names apart).
``--quick`` is 50 rounds and no churn (~10 s; the default run ~30 s).

    .venv/bin/python bench/odiff.py [--small 1000] [--large 1000000] [--rounds 100]
                                    [--churn 15000] [--only dns,rpz] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset

from kzgate.config import DnsConfig, HostPort, RpzConfig
from kzgate.dns.workers import WorkerPool
from kzgate.enforce.base import Enforcer
from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import normalize_domain
from kzgate.nametable import DictNameTable
from kzgate.policy import PolicyIndex
from kzgate.rpz.answer import answer
from kzgate.rpz.enforcer import RpzEnforcer

KINDS = ("dns", "dns-workers", "dns-dict", "rpz", "rpz-mem")
REFS = [InstructionRef("mci", str(1000 + i), "2026-03-01") for i in range(1000)]
TLDS = ("kz", "com", "ru", "net", "org", "info")
SUBS = ("www", "cdn", "m", "api", "login", "static")
IDN_WORDS = ("сайт", "казино", "ставки", "магазин", "новости")
IDN_TLDS = ("kz", "xn--80ao21a")  # .қаз
HALF = 50  # removed and added per diff
WARMUP = 5
SLOW_S, SLOW_X = 0.002, 10  # a churned diff is slow past 2 ms and 10x the median


def target_name(i: int) -> str:
    """The i-th target of the workload: unique for each i, already normalized."""
    kind = i % 10
    if kind < 6:
        return f"site{i}.{TLDS[i % 6]}"
    if kind < 8:
        return f"{SUBS[i % 6]}.shop{i}.{TLDS[i % 5]}"
    if kind == 8:
        return f"u{i}.blogs.kz"
    # a Cyrillic label with digits is its own UTS 46 mapping: punycode alone gives the A-label
    label = (IDN_WORDS[i % 5] + str(i)).encode("punycode").decode("ascii")
    return f"xn--{label}.{IDN_TLDS[i % 2]}"


def check_names(names: list[str]) -> None:
    """Every 997th name is what intake's normalize_domain makes of it (IDN included)."""
    for name in names[::997]:
        if normalize_domain(name) != name:
            raise SystemExit(f"bench name {name!r} is not normalized")


def nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values by nearest rank: of 100, p99 is the 99th."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.seconds)
        n = len(ordered)
        return {
            "n": n,
            "median_ms": round(statistics.median(ordered) * 1000, 4),
            "p99_ms": round(nearest_rank(ordered, 0.99) * 1000, 4),
            "max_ms": round(ordered[-1] * 1000, 4),
        }


class Workload:
    """One state size: what is present (oldest first) and the next new name."""

    def __init__(self, size: int, first: int) -> None:
        names = [target_name(i) for i in range(first, first + size)]
        check_names(names)
        self.state = State({n: REFS[k % len(REFS)] for k, n in enumerate(names)}, {})
        self.present = deque(names)
        self.next = first + size
        self.count = 0

    def diff(self) -> Diff:
        gone = [self.present.popleft() for _ in range(HALF)]
        new = [target_name(i) for i in range(self.next, self.next + HALF)]
        self.next += HALF
        self.present.extend(new)
        self.count += 1
        return Diff(
            domains_added={n: REFS[(self.next + k) % len(REFS)] for k, n in enumerate(new)},
            domains_removed=frozenset(gone),
        )


@dataclass
class Subject:
    """One enforcer at one state size, and what was measured of it."""

    kind: str
    enforcer: Enforcer
    apply: Timings = field(default_factory=Timings)
    ixfr: Timings = field(default_factory=Timings)
    ixfr_bytes: list[int] = field(default_factory=list)
    fill_s: float = 0.0


async def timed(step: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await step
    return time.perf_counter() - started


def rpz_config() -> RpzConfig:
    # No NOTIFY targets: a NOTIFY is a task started per diff and sent after apply returns.
    return RpzConfig(enabled=True, notify=())


def make_rpz(serial_file: Path | None) -> RpzEnforcer:
    return RpzEnforcer(
        rpz_config(),
        block_mode="nxdomain",
        sinkhole_ipv4=IPv4Address("192.0.2.1"),
        sinkhole_ipv6=IPv6Address("2001:db8::1"),
        serial_file=serial_file,
    )


def transfer_query(origin: str, rdtype: str, serial: int | None) -> bytes:
    query = dns.message.make_query(origin, rdtype)
    if serial is not None:
        soa = f"localhost. hostmaster.{origin} {serial} 0 0 0 0"
        query.authority.append(dns.rrset.from_text(origin, 0, "IN", "SOA", soa))
    return query.to_wire()


def serve(rpz: RpzEnforcer, rdtype: str, serial: int | None) -> tuple[str, int]:
    """The transfer ``rpz`` answers a TCP query with, rendered whole: (kind served, bytes)."""
    data = transfer_query(rpz.zone.params.origin, rdtype, serial)
    ans = answer(
        data,
        "127.0.0.1",
        tcp=True,
        zone=rpz.zone,
        journal=rpz.journal,
        acl=rpz.cfg.allow_transfer,
        key=None,
        now=int(time.time()),
    )
    if ans is None:
        raise SystemExit(f"no answer to an {rdtype}")
    return ans.kind, sum(map(len, ans.messages))


async def apply_one(subject: Subject, diff: Diff, record: bool) -> None:
    enforcer = subject.enforcer
    old = enforcer.serial if isinstance(enforcer, RpzEnforcer) else 0
    took = await timed(enforcer.apply(diff))
    if isinstance(enforcer, RpzEnforcer):
        started = time.perf_counter()
        kind, size = serve(enforcer, "IXFR", old)
        served = time.perf_counter() - started
        if kind != "ixfr":
            raise SystemExit(f"{subject.kind}: an IXFR from {old} was served as {kind}")
        if record:
            subject.ixfr.seconds.append(served)
            subject.ixfr_bytes.append(size)
    if record:
        subject.apply.seconds.append(took)


def build(kinds: list[str], state: State, serial_dir: Path, tag: str) -> list[Subject]:
    """The enforcers of ``kinds``, in the order the daemon's set applies them."""
    subjects: list[Subject] = []
    index = PolicyIndex()
    for kind in kinds:
        if kind == "dns":
            subjects.append(Subject(kind, DnsIndexEnforcer(index)))
        elif kind == "dns-workers":
            # Forked from ``index`` in serve(): it follows "dns", which fills that index.
            cfg = DnsConfig(listen=(HostPort("127.0.0.1", 0),), workers=1)
            subjects.append(Subject(kind, WorkerPool(index, cfg)))
        elif kind == "dns-dict":
            subjects.append(Subject(kind, DnsIndexEnforcer(PolicyIndex(DictNameTable()))))
        elif kind == "rpz":
            subjects.append(Subject(kind, make_rpz(serial_dir / f"{tag}.rpz-serial")))
        else:
            subjects.append(Subject(kind, make_rpz(None)))
    return subjects


async def fill(subjects: list[Subject], state: State) -> None:
    for subject in subjects:
        enforcer = subject.enforcer
        if isinstance(enforcer, WorkerPool):
            started = time.perf_counter()
            await enforcer.start()
            await enforcer.serve()  # forks the worker from the index "dns" just filled
            subject.fill_s = time.perf_counter() - started
        else:
            subject.fill_s = await timed(enforcer.reconcile(state))


def table_size(enforcer: Enforcer) -> int:
    """What a hash table rebuild changes: the NameTable's or the zone set's allocation."""
    if isinstance(enforcer, DnsIndexEnforcer):
        table = enforcer.index.name_table
        if isinstance(table, DictNameTable):
            return sys.getsizeof(table._names)  # its nbytes walks every key: O(set)
        return table.nbytes  # slots and arena, O(1)
    if isinstance(enforcer, RpzEnforcer):
        return sys.getsizeof(enforcer.zone.domains)
    return 0


async def churn(subjects: list[Subject], work: Workload, diffs: int) -> dict[str, Any]:
    """``diffs`` more diffs into each subject, each timed; the slow ones, and which of
    them changed the table's allocation (a same-size rehash does not: the zone's set)."""
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {s.kind: [] for s in subjects}
    resized: dict[str, set[int]] = {s.kind: set() for s in subjects}
    for number in range(diffs):
        diff = work.diff()
        for subject in subjects:
            before = table_size(subject.enforcer)
            times[subject.kind].append(await timed(subject.enforcer.apply(diff)))
            if table_size(subject.enforcer) != before:
                resized[subject.kind].add(number)
    for subject in subjects:
        seconds = times[subject.kind]
        ordered = sorted(seconds)
        median = statistics.median(ordered)
        slow = [n for n, took in enumerate(seconds) if took > max(SLOW_S, SLOW_X * median)]
        out[subject.kind] = {
            "diffs": diffs,
            "median_ms": round(median * 1000, 4),
            "p99_ms": round(nearest_rank(ordered, 0.99) * 1000, 4),
            "p999_ms": round(nearest_rank(ordered, 0.999) * 1000, 4),
            "max_ms": round(ordered[-1] * 1000, 3),
            "slow": [
                {
                    "diff": n,
                    "ms": round(seconds[n] * 1000, 3),
                    "table_resized": n in resized[subject.kind],
                }
                for n in slow
            ],
        }
    return out


async def bench(args: argparse.Namespace, serial_dir: Path) -> dict[str, Any]:
    kinds = [k for k in KINDS if k in args.only]
    sizes = {"small": args.small, "large": args.large}
    works = {"small": Workload(args.small, 0), "large": Workload(args.large, 10_000_000)}
    subjects: dict[str, list[Subject]] = {}
    for tag, work in works.items():
        subjects[tag] = build(kinds, work.state, serial_dir, tag)
        await fill(subjects[tag], work.state)
    gc.collect()
    gc.freeze()  # as the daemon does once its state is loaded (memory.keep_for_life)
    try:
        for r in range(WARMUP + args.rounds):
            order = ("small", "large") if r % 2 == 0 else ("large", "small")
            for tag in order:
                diff = works[tag].diff()
                for subject in subjects[tag]:
                    await apply_one(subject, diff, record=r >= WARMUP)
        result: dict[str, Any] = {"sizes": sizes, "rounds": args.rounds, "diff": 2 * HALF}
        for kind_number, kind in enumerate(kinds):
            small, large = subjects["small"][kind_number], subjects["large"][kind_number]
            row: dict[str, Any] = {}
            for tag, subject in (("small", small), ("large", large)):
                row[tag] = {"fill_s": round(subject.fill_s, 3), **subject.apply.summary()}
                if isinstance(subject.enforcer, RpzEnforcer):
                    axfr_started = time.perf_counter()
                    _, axfr_bytes = serve(subject.enforcer, "AXFR", None)
                    row[tag]["axfr_s"] = round(time.perf_counter() - axfr_started, 3)
                    row[tag]["ixfr"] = {
                        **subject.ixfr.summary(),
                        "bytes_median": int(statistics.median(subject.ixfr_bytes)),
                        "axfr_bytes": axfr_bytes,
                    }
            row["ratio_median"] = round(row["large"]["median_ms"] / row["small"]["median_ms"], 2)
            row["ratio_p99"] = round(row["large"]["p99_ms"] / row["small"]["p99_ms"], 2)
            if "ixfr" in row["large"]:
                row["ixfr_ratio_median"] = round(
                    row["large"]["ixfr"]["median_ms"] / row["small"]["ixfr"]["median_ms"], 2
                )
            result[kind] = row
        if args.churn:
            chosen = [s for s in subjects["large"] if s.kind != "rpz"]  # rpz: the fsync, again
            result["churn_large"] = await churn(chosen, works["large"], args.churn)
        return result
    finally:
        for tag in subjects:
            for subject in subjects[tag]:
                await subject.enforcer.close()


def markdown(result: dict[str, Any]) -> str:
    small, large = result["sizes"]["small"], result["sizes"]["large"]
    lines = [
        f"| enforcer | {small:,} targets: median / p99, ms | {large:,} targets: median / p99, ms"
        " | large / small (median, p99) |",
        "| --- | --- | --- | --- |",
    ]
    for kind in KINDS:
        row = result.get(kind)
        if row is None:
            continue
        s, g = row["small"], row["large"]
        lines.append(
            f"| {kind} | {s['median_ms']:.3f} / {s['p99_ms']:.3f} | {g['median_ms']:.3f} /"
            f" {g['p99_ms']:.3f} | {row['ratio_median']:.2f}, {row['ratio_p99']:.2f} |"
        )
        if "ixfr" in g:
            si, gi = s["ixfr"], g["ixfr"]
            lines.append(
                f"| {kind}: serve the IXFR | {si['median_ms']:.3f} / {si['p99_ms']:.3f}"
                f" ({si['bytes_median']:,} B of {si['axfr_bytes']:,} B AXFR) |"
                f" {gi['median_ms']:.3f} / {gi['p99_ms']:.3f} ({gi['bytes_median']:,} B of"
                f" {gi['axfr_bytes']:,} B AXFR) | {row['ixfr_ratio_median']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--churn", type=int, default=15_000)
    parser.add_argument(
        "--only", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS)
    )
    parser.add_argument("--dir", type=Path, default=None, help="where rpz writes its serial")
    parser.add_argument("--quick", action="store_true", help="50 rounds, no churn")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.churn = 50, 0
    args.only = {k.strip() for k in args.only.split(",")}
    unknown = args.only - set(KINDS)
    if unknown or args.rounds < 1 or args.small < 2 * HALF:
        parser.error(f"--only: one of {', '.join(KINDS)}; --rounds ≥ 1; --small ≥ {2 * HALF}")
    if "dns-workers" in args.only:
        args.only.add("dns")  # the workers are forked from that index
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp", prefix="kzg-odiff-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
