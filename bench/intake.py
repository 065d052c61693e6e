"""Intake benchmark: what a regulator pushing tasks over loopback with mutual TLS sees.

Workload model: one issuer pushes 10-target restricts (8 domains, 1 address,
1 /24), first one at a time (receipt latency: verify + fsync'd commit + apply
to every enforcer + signed receipt), then from 8 concurrent clients; then one
100,000-target restrict; then the register is filled to 1,000,000 active
targets, the daemon is killed, and the time from process start to "ready" is
measured, warm (the register and the code in the page cache, as after a
crash) and cold (page cache dropped first: ``sync; echo 3 >
/proc/sys/vm/drop_caches``, as after a reboot; needs root).

All of it runs for each enforcer profile (``--profiles``), every profile's
daemon up at the same time and each measure alternating between them (tasks
in ``--chunks`` chunks, start-ups one by one), so that what else the shared
machine does falls on both alike and their ratio means something:

* ``dns``: the DNS index only (nftables off: address targets go to the
  dry-run enforcer; RPZ off);
* ``dns+nft+rpz``: also nftables, in a network namespace of its own
  (``nftables.netns``, ``mode: full``, the forward hook), and the RPZ primary
  (on a loopback port, no NOTIFY targets; transfers are bench/rpz.py's).
  Needs root.

The enforcers each run reports are what the daemon itself says on
``/status``, not what the config asked for.

    .venv/bin/python bench/intake.py [--tasks 500] [--big 100000] [--stored 1000000]
                                     [--starts 3] [--profiles dns,dns+nft+rpz]

Absolute numbers are noisy on a shared 2-core machine: read medians and p99,
and the ratio of the two profiles measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from kzgate.devpki import ensure_dev_material  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.kzfixtures import Regulator, client_ssl, write_config  # noqa: E402

PROFILES = ("dns", "dns+nft", "dns+rpz", "dns+nft+rpz")  # the DNS index is always on
DEFAULT_PROFILES = "dns,dns+nft+rpz"
START_TIMEOUT = 300.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ten_targets(n: int) -> list[str]:
    return [f"domain:s{n}-{i}.bench.kz" for i in range(8)] + [
        f"ip:10.{n // 250 % 250}.{n % 250}.1",
        f"cidr:10.200.{n % 250}.0/24",
    ]


def netns_name(profile: str) -> str | None:
    """The network namespace of a profile with nftables: one each, or they fight over the table."""
    if "nft" not in profile.split("+"):
        return None
    return f"kzg-{os.getpid()}-{profile.replace('+', '-')}"  # tests/support/netns.py's prefix


def sections(profile: str) -> dict[str, Any]:
    """Config sections that switch the profile's enforcers on."""
    out: dict[str, Any] = {}
    if netns := netns_name(profile):
        out["nftables"] = {"enabled": True, "netns": netns, "mode": "full", "hooks": ["forward"]}
    if "rpz" in profile.split("+"):
        out["rpz"] = {"enabled": True, "listen": ["127.0.0.1:0"], "notify": []}
    return out


@contextlib.contextmanager
def namespaces(names: list[str]) -> Iterator[None]:
    """The network namespaces nftables runs in, for the length of the run."""
    made = []
    try:
        for name in names:
            subprocess.run(
                ["ip", "netns", "add", name], check=True, capture_output=True, timeout=30
            )
            made.append(name)
        yield
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def drop_page_cache() -> None:
    """Write dirty pages out, then drop clean ones, dentries and inodes: a cold start."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n", encoding="ascii")


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/jose"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
    return time.perf_counter() - started


async def live_status(profile: Profile) -> dict[str, Any]:
    assert profile.daemon is not None
    url = f"http://127.0.0.1:{profile.daemon.ports['metrics']}/status"
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        r.raise_for_status()
        status: dict[str, Any] = await r.json()
        return status


@dataclass
class Profile:
    """One daemon under test, with its own register, issuer sequence and results."""

    name: str
    work: Path
    config: Path
    mci: Regulator
    results: dict[str, Any] = field(default_factory=dict)
    daemon: DaemonProcess | None = None

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return f"https://127.0.0.1:{self.daemon.ports['api']}/v1/tasks"


def make_profile(name: str) -> Profile:
    work = Path(tempfile.mkdtemp(prefix=f"kzgate-bench-{name.replace('+', '-')}-"))
    pki = work / "pki"
    ensure_dev_material(pki)
    config = write_config(
        work,
        pki,
        api={"rate_limit": {"per_second": 1e6, "burst": 1_000_000}},
        **sections(name),
    )
    return Profile(name, work, config, Regulator(pki))


async def start(profile: Profile, *, cold: bool = False) -> float:
    """Start the profile's daemon; seconds from exec to its "ready" line."""
    if cold:
        drop_page_cache()
    profile.daemon = DaemonProcess(profile.config)
    started = time.perf_counter()
    await profile.daemon.start(timeout=START_TIMEOUT)
    return time.perf_counter() - started


async def stop(profile: Profile) -> None:
    assert profile.daemon is not None
    profile.daemon.kill()
    await profile.daemon.wait()
    profile.daemon = None


async def push_all(
    profile: Profile, session: aiohttp.ClientSession, bodies: list[bytes], clients: int
) -> tuple[list[float], float]:
    """Push ``bodies`` from ``clients`` concurrent clients: (latency of each, seconds in all)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client() -> None:
        while not queue.empty():
            latencies.append(await post(session, profile.url, queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - started


async def interleaved(
    profiles: list[Profile],
    sessions: dict[str, aiohttp.ClientSession],
    args: argparse.Namespace,
    clients: int,
    offset: int,
) -> list[tuple[list[float], float]]:
    """``args.tasks`` 10-target restricts per profile, in chunks that alternate between them.

    Task ``n`` restricts ``ten_targets(offset + n)``: new targets, so that
    every task changes what each enforcer holds.

    Alternating keeps what else the shared machine does from falling on one
    profile only: their ratio is then worth more than either number.
    """
    out: list[tuple[list[float], float]] = [([], 0.0) for _ in profiles]
    size = max(1, args.tasks // args.chunks)
    for first in range(0, args.tasks, size):
        for i, p in enumerate(profiles):
            bodies = [
                p.mci.sign(p.mci.restrict(f"T{offset + n}", *ten_targets(offset + n)))
                for n in range(first, min(args.tasks, first + size))
            ]
            latencies, elapsed = await push_all(p, sessions[p.name], bodies, clients)
            out[i] = (out[i][0] + latencies, out[i][1] + elapsed)
    return out


async def intake(profiles: list[Profile], args: argparse.Namespace) -> None:
    """Every profile's daemon up at once; each measure alternates between them."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for p in profiles:
            await start(p)
            stack.push_async_callback(stop, p)
            status = await live_status(p)
            p.results["enforcers"] = status["enforcers"]
            p.results["listening"] = sorted(status["listening"])
            connector = aiohttp.TCPConnector(ssl=client_ssl(p.work / "pki"), limit=8)
            sessions[p.name] = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector)
            )
            warm = [
                p.mci.sign(p.mci.restrict(f"W{n}", *ten_targets(2 * args.tasks + n)))
                for n in range(20)
            ]
            await push_all(p, sessions[p.name], warm, 1)  # TLS session, code paths
        for clients, latency_key, rate_key in (
            (1, "receipt_latency_ms", "tasks_per_second_sequential"),
            (8, "latency_8_clients_ms", "tasks_per_second_8_clients"),
        ):
            offset = args.tasks if clients > 1 else 0
            pushed = await interleaved(profiles, sessions, args, clients, offset)
            for p, (latencies, seconds) in zip(profiles, pushed, strict=True):
                p.results[latency_key] = percentiles(latencies)
                p.results[rate_key] = round(len(latencies) / seconds, 1)
        for p in profiles:
            big = p.mci.sign(
                p.mci.restrict("BIG", *[f"domain:b{i}.big.kz" for i in range(args.big)])
            )
            p.results["big_task_bytes"] = len(big)
            p.results["accept_big_s"] = round(await post(sessions[p.name], p.url, big), 3)
        # Fill each register up to the stored-target count with 100k-target restricts.
        per = 100_000
        for k in range(max(0, (args.stored - args.big) // per)):
            for p in profiles:
                fill = [f"domain:f{i}.fill{k}.kz" for i in range(per)]
                await post(sessions[p.name], p.url, p.mci.sign(p.mci.restrict(f"FILL{k}", *fill)))
        for p in profiles:
            status = await live_status(p)
            p.results["enforcers_at_end"] = status["enforcers"]
            if "nft" in status:
                p.results["nft_elements"] = status["nft"]["elements"]
            p.results["stored_targets"] = args.stored
            p.results["register_mb"] = round(
                sum(f.stat().st_size for f in p.work.glob("kzgate.db*")) / 2**20, 1
            )


async def startups(profiles: list[Profile], args: argparse.Namespace) -> None:
    """Warm starts, then cold ones, alternating between the profiles; each killed once ready."""
    for kind in ("warm", "cold"):
        if kind == "cold" and args.no_cold:
            continue
        seconds: dict[str, list[float]] = {p.name: [] for p in profiles}
        for _ in range(args.starts):
            for p in profiles:
                seconds[p.name].append(round(await start(p, cold=kind == "cold"), 2))
                await stop(p)
        for p in profiles:
            each = seconds[p.name]
            p.results[f"startup_{kind}_s"] = {"median": statistics.median(each), "each": each}


def percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values) * 1000, 2),
        "p99": round(pct(values, 0.99) * 1000, 2),
        "n": len(values),
    }


def cold_over_warm(result: dict[str, Any]) -> float | None:
    cold = result.get("startup_cold_s", {}).get("median")
    return round(cold / result["startup_warm_s"]["median"], 2) if cold else None


def markdown(report: dict[str, dict[str, Any]]) -> str:
    """The profiles side by side, and each one's ratio to the first (the reference)."""
    rows = [
        ("receipt latency p50, ms", lambda r: r["receipt_latency_ms"]["p50"]),
        ("receipt latency p99, ms", lambda r: r["receipt_latency_ms"]["p99"]),
        ("tasks/s sequential", lambda r: r["tasks_per_second_sequential"]),
        ("tasks/s 8 clients", lambda r: r["tasks_per_second_8_clients"]),
        ("8 clients p99, ms", lambda r: r["latency_8_clients_ms"]["p99"]),
        ("accept the big restrict, s", lambda r: r["accept_big_s"]),
        ("start-up warm, s (median)", lambda r: r["startup_warm_s"]["median"]),
        ("start-up cold, s (median)", lambda r: r.get("startup_cold_s", {}).get("median")),
        ("start-up cold / warm", cold_over_warm),
    ]
    names = list(report)
    ratios = [f"{n} / {names[0]}" for n in names[1:]]
    out = [
        "| measure | " + " | ".join(names + ratios) + " |",
        "| --- |" + " --- |" * (len(names) + len(ratios)),
    ]
    for title, get in rows:
        values = [get(report[n]) for n in names]
        cells = ["" if v is None else str(v) for v in values]
        cells += [f"{v / values[0]:.2f}" if v and values[0] else "" for v in values[1:]]
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    for n in names:
        out.append(f"\n{n}: enforcers (from /status) {json.dumps(report[n]['enforcers'])}")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    profiles = [make_profile(name) for name in args.profiles]
    try:
        with namespaces([ns for name in args.profiles if (ns := netns_name(name))]):
            print("[intake] tasks, alternating between profiles", file=sys.stderr)
            await intake(profiles, args)
            print("[intake] start-ups with the filled registers", file=sys.stderr)
            await startups(profiles, args)
    finally:
        if not args.keep:  # each register is ~100 MB at 1,000,000 targets
            for p in profiles:
                shutil.rmtree(p.work, ignore_errors=True)
    return {p.name: p.results for p in profiles}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--starts", type=int, default=3, help="timed starts, warm and cold each")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--chunks", type=int, default=8, help="alternations between profiles")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold starts (not root)")
    parser.add_argument(
        "--profiles",
        type=lambda s: s.split(","),
        default=DEFAULT_PROFILES.split(","),
        help=f"comma-separated, of {', '.join(PROFILES)} (default {DEFAULT_PROFILES})",
    )
    args = parser.parse_args()
    if unknown := set(args.profiles) - set(PROFILES):
        parser.error(f"unknown profiles: {', '.join(sorted(unknown))}")
    needs_root = any("nft" in name for name in args.profiles) or not args.no_cold
    if needs_root and os.geteuid() != 0:
        parser.error("nftables and cold starts need root (else: --profiles dns,dns+rpz --no-cold)")
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
