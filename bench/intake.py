"""Intake benchmark: what a regulator pushing tasks over loopback with mutual TLS sees.

Workload model: one issuer pushes 10-target restricts (8 domains, 1 address,
1 /24), first one at a time (receipt latency: verify + fsync'd commit + apply
to every enforcer + signed receipt), then from 8 concurrent clients; then one
100,000-target restrict; then the register is filled to 1,000,000 active
targets, the daemon is killed, and the time from process start to "ready" is
measured, warm (the register and the code in the page cache, as after a
crash) and cold (page cache dropped first: ``sync; echo 3 >
/proc/sys/vm/drop_caches``, as after a reboot; needs root).

All of it runs once per enforcer profile (``--profiles``):

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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from daemon_proc import DaemonProcess  # noqa: E402
from kzfixtures import Regulator, client_ssl, write_config  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402

NETNS = f"kzg-{os.getpid()}-intake"  # tests/netns.py's prefix: its clean-up knows it
PROFILES = ("dns", "dns+nft+rpz")
START_TIMEOUT = 300.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ten_targets(n: int) -> list[str]:
    return [f"domain:s{n}-{i}.bench.kz" for i in range(8)] + [
        f"ip:10.{n // 250 % 250}.{n % 250}.1",
        f"cidr:10.200.{n % 250}.0/24",
    ]


def sections(profile: str) -> dict[str, Any]:
    """Config sections that switch the profile's enforcers on."""
    if profile == "dns":
        return {}
    return {
        "nftables": {"enabled": True, "netns": NETNS, "mode": "full", "hooks": ["forward"]},
        "rpz": {"enabled": True, "listen": ["127.0.0.1:0"], "notify": []},
    }


@contextlib.contextmanager
def namespace(needed: bool) -> Iterator[None]:
    """The network namespace nftables runs in, for the length of the run."""
    if not needed:
        yield
        return
    subprocess.run(["ip", "netns", "add", NETNS], check=True, capture_output=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, timeout=30)


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


async def live_status(daemon: DaemonProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/status"
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        r.raise_for_status()
        status: dict[str, Any] = await r.json()
        return status


async def timed_start(config: Path, *, cold: bool) -> tuple[float, DaemonProcess]:
    if cold:
        drop_page_cache()
    daemon = DaemonProcess(config)
    started = time.perf_counter()
    await daemon.start(timeout=START_TIMEOUT)
    return time.perf_counter() - started, daemon


async def stop(daemon: DaemonProcess) -> None:
    daemon.kill()
    await daemon.wait()


async def push_tasks(
    session: aiohttp.ClientSession, url: str, mci: Regulator, args: argparse.Namespace
) -> dict[str, object]:
    results: dict[str, object] = {}
    bodies = [mci.sign(mci.restrict(f"S{n}", *ten_targets(n))) for n in range(args.tasks)]
    for body in bodies[:20]:  # warm-up: TLS session, code paths
        await post(session, url, body)
    started = time.perf_counter()
    latencies = [await post(session, url, body) for body in bodies[20:]]
    seq_elapsed = time.perf_counter() - started
    results["receipt_latency_ms"] = {
        "p50": round(statistics.median(latencies) * 1000, 2),
        "p99": round(pct(latencies, 0.99) * 1000, 2),
        "n": len(latencies),
    }
    results["tasks_per_second_sequential"] = round(len(latencies) / seq_elapsed, 1)

    concurrent = [mci.sign(mci.restrict(f"C{n}", *ten_targets(n))) for n in range(args.tasks)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in concurrent:
        queue.put_nowait(body)
    lat8: list[float] = []

    async def client() -> None:
        while not queue.empty():
            lat8.append(await post(session, url, queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(8)))
    elapsed = time.perf_counter() - started
    results["tasks_per_second_8_clients"] = round(len(concurrent) / elapsed, 1)
    results["latency_8_clients_ms"] = {
        "p50": round(statistics.median(lat8) * 1000, 2),
        "p99": round(pct(lat8, 0.99) * 1000, 2),
    }

    big = mci.sign(mci.restrict("BIG", *[f"domain:b{i}.big.kz" for i in range(args.big)]))
    results["big_task_bytes"] = len(big)
    results[f"accept_{args.big}_targets_s"] = round(await post(session, url, big), 3)

    # Fill the register up to the stored-target count with 100k-target restricts.
    per = 100_000
    for k in range(max(0, (args.stored - args.big) // per)):
        body = mci.sign(mci.restrict(f"FILL{k}", *[f"domain:f{i}.fill{k}.kz" for i in range(per)]))
        await post(session, url, body)
    return results


async def startups(config: Path, args: argparse.Namespace) -> dict[str, object]:
    """Warm starts, then cold ones, each killed once ready; seconds from exec to "ready"."""
    out: dict[str, object] = {}
    for kind in ("warm", "cold"):
        if kind == "cold" and args.no_cold:
            continue
        seconds = []
        for _ in range(args.starts):
            elapsed, daemon = await timed_start(config, cold=kind == "cold")
            seconds.append(round(elapsed, 2))
            await stop(daemon)
        out[f"startup_{kind}_s"] = {"median": statistics.median(seconds), "each": seconds}
    return out


async def run_profile(profile: str, args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix=f"kzgate-bench-{profile.replace('+', '-')}-"))
    pki = work / "pki"
    ensure_dev_material(pki)
    config = write_config(
        work,
        pki,
        api={"rate_limit": {"per_second": 1e6, "burst": 1_000_000}},
        **sections(profile),
    )
    mci = Regulator(pki)
    daemon = DaemonProcess(config)
    await daemon.start(timeout=START_TIMEOUT)
    try:
        status = await live_status(daemon)
        results: dict[str, object] = {
            "enforcers": status["enforcers"],
            "listening": sorted(status["listening"]),
        }
        url = f"https://127.0.0.1:{daemon.ports['api']}/v1/tasks"
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki), limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:
            results |= await push_tasks(session, url, mci, args)
        status = await live_status(daemon)
        results["enforcers_at_end"] = status["enforcers"]
        if "nft" in status:
            results["nft_elements"] = status["nft"]["elements"]
    finally:
        await stop(daemon)
    results["stored_targets"] = args.stored
    results["register_mb"] = round(
        sum(p.stat().st_size for p in work.glob("kzgate.db*")) / 2**20, 1
    )
    results |= await startups(config, args)
    return results


def markdown(report: dict[str, dict[str, Any]]) -> str:
    """Both profiles side by side, and the ratio of the second to the first."""
    rows = [
        ("receipt latency p50, ms", lambda r: r["receipt_latency_ms"]["p50"]),
        ("receipt latency p99, ms", lambda r: r["receipt_latency_ms"]["p99"]),
        ("tasks/s sequential", lambda r: r["tasks_per_second_sequential"]),
        ("tasks/s 8 clients", lambda r: r["tasks_per_second_8_clients"]),
        ("8 clients p99, ms", lambda r: r["latency_8_clients_ms"]["p99"]),
        ("accept the big restrict, s", lambda r: next(v for k, v in r.items() if "targets_s" in k)),
        ("start-up warm, s (median)", lambda r: r["startup_warm_s"]["median"]),
        ("start-up cold, s (median)", lambda r: r.get("startup_cold_s", {}).get("median")),
    ]
    names = list(report)
    out = [
        "| measure | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |"),
        "| --- |" + " --- |" * (len(names) + (len(names) == 2)),
    ]
    for title, get in rows:
        values = [get(report[n]) for n in names]
        cells = ["" if v is None else str(v) for v in values]
        if len(values) == 2:
            a, b = values
            cells.append(f"{b / a:.2f}" if a and b else "")
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    for n in names:
        out.append(f"\n{n}: enforcers {report[n]['enforcers']}")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    for profile in args.profiles:
        print(f"[intake] profile {profile}", file=sys.stderr)
        with namespace(profile != "dns"):
            report[profile] = await run_profile(profile, args)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--starts", type=int, default=3, help="timed starts, warm and cold each")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold starts (not root)")
    parser.add_argument(
        "--profiles",
        type=lambda s: s.split(","),
        default=list(PROFILES),
        help=f"comma-separated, of {', '.join(PROFILES)}",
    )
    args = parser.parse_args()
    if unknown := set(args.profiles) - set(PROFILES):
        parser.error(f"unknown profiles: {', '.join(sorted(unknown))}")
    needs_root = "dns+nft+rpz" in args.profiles or not args.no_cold
    if needs_root and os.geteuid() != 0:
        parser.error("dns+nft+rpz and cold starts need root (else: --profiles dns --no-cold)")
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
