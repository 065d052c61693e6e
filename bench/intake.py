"""Intake benchmark: what a regulator pushing tasks over loopback with mutual TLS sees.

Workload model: one issuer pushes 10-target restricts (domains and addresses),
first one at a time (receipt latency: verify + fsync'd commit + apply + signed
receipt), then from 8 concurrent clients; then one 100,000-target restrict;
then the daemon is restarted on a register holding 1,000,000 active targets
and the time from process start to "ready" is measured.

    .venv/bin/python bench/intake.py [--tasks 500] [--big 100000] [--stored 1000000]

Absolute numbers are noisy on a shared 2-core machine: read medians and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from daemon_proc import DaemonProcess  # noqa: E402
from kzfixtures import Regulator, client_ssl, write_config  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ten_targets(n: int) -> list[str]:
    return [f"domain:s{n}-{i}.bench.kz" for i in range(8)] + [
        f"ip:10.{n // 250 % 250}.{n % 250}.1",
        f"cidr:10.200.{n % 250}.0/24",
    ]


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/jose"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="kzgate-bench-"))
    pki = work / "pki"
    ensure_dev_material(pki)
    config = write_config(
        work,
        pki,
        api={"rate_limit": {"per_second": 1e6, "burst": 1_000_000}},
    )
    mci = Regulator(pki)
    results: dict[str, object] = {}
    daemon = DaemonProcess(config)
    await daemon.start()
    url = f"https://127.0.0.1:{daemon.ports['api']}/v1/tasks"
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki), limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
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
            body = mci.sign(
                mci.restrict(f"FILL{k}", *[f"domain:f{i}.fill{k}.kz" for i in range(per)])
            )
            await post(session, url, body)
    daemon.kill()
    await daemon.wait()

    restart = DaemonProcess(config)
    started = time.perf_counter()
    await restart.start(timeout=120)
    results["startup_to_ready_s"] = round(time.perf_counter() - started, 2)
    results["stored_targets"] = args.stored
    restart.kill()
    await restart.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--stored", type=int, default=1_000_000)
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
