"""What proof of enforcement costs (issue 14): a round's CPU, subscribers' latency, the sweep.

Three measurements, on one register of ``--names`` restricted domains (bench/fill.py):

* ``round``: kzgate (``kzgate run``, a child process) with
  ``probes: {enabled: true, interval: 1, sample: 50}`` and no resolvers: each
  round probes 50 restricted names and 50 ``kzgate-probe-<hex>`` subdomains at
  kzgate's own listener, 100 probes. The control process's CPU time (utime +
  stime from /proc, its DNS workers separately) over ``--seconds``, divided by
  the rounds that ended in it (``kzgate_probe_checks_total`` / 100), is the
  CPU ms of a round; the same window with probes off is the idle cost, and the
  ratio of the two is reported.
* ``latency``: dnsperf at ``--rate`` q/s (20k) of restricted names (answered
  from the policy by the C fast path) against kzgate, ``--passes`` passes
  alternating between a daemon with probes off and one with rounds every
  second, on the same register in the same run; p50/p99/p99.9 per pass and
  the median per mode.
* ``sweep``: ``kzgate verify --all --rate R`` over ``--sweep-names`` restricted
  domains (1,000,000) against the running daemon's listener: checks and
  targets a second from the wall time and the report's summary.

Traffic stays on 127.0.0.1; every process started here is killed at the end.

    .venv/bin/python bench/probes.py                       # all three (1M sweep: minutes)
    .venv/bin/python bench/probes.py --only round,latency --names 100000 --seconds 10
    .venv/bin/python bench/probes.py --only sweep --sweep-names 100000   # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from dns_vs_unbound import CLK_TCK, cpu_seconds, pct, process_tree  # noqa: E402
from fill import fill_register, restricted_name  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.kzfixtures import write_config  # noqa: E402
from tests.support.rpzpeers import free_port  # noqa: E402

PROBES_PER_ROUND = 100  # sample 50: 50 names + 50 subdomain probes, at one place


def config(work: Path, *, probes: bool, names_db: Path) -> Path:
    pki = work / "pki"
    ensure_dev_material(pki)
    sections: dict[str, Any] = {
        # a fixed port: `kzgate verify` reads it from the config
        "dns": {"listen": [f"127.0.0.1:{free_port()}"], "upstreams": [], "workers": 1},
        "register": {"path": str(names_db)},
    }
    if probes:
        sections["probes"] = {"enabled": True, "resolvers": [], "interval": 1, "sample": 50}
    directory = work / ("on" if probes else "off")
    directory.mkdir(exist_ok=True)
    return write_config(directory, pki, **sections)


@contextlib.asynccontextmanager
async def daemon(path: Path):  # type: ignore[no-untyped-def]
    kzgate = DaemonProcess(path)
    await kzgate.start(timeout=300)
    try:
        yield kzgate
    finally:
        assert kzgate.proc is not None
        if kzgate.proc.returncode is None:
            kzgate.kill()
            await kzgate.wait()


async def metric(kzgate: DaemonProcess, name: str, **labels: str) -> float:
    url = f"http://127.0.0.1:{kzgate.ports['metrics']}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def cpu(kzgate: DaemonProcess) -> tuple[float, float]:
    """CPU seconds of the control process, and of its DNS workers."""
    assert kzgate.proc is not None
    pid = kzgate.proc.pid
    workers = [p for p in process_tree(pid) if p != pid]
    return cpu_seconds([pid]), cpu_seconds(workers)


async def window(kzgate: DaemonProcess, seconds: float) -> dict[str, float]:
    checks0 = await metric(kzgate, "kzgate_probe_checks_total")
    control0, workers0 = cpu(kzgate)
    await asyncio.sleep(seconds)
    control1, workers1 = cpu(kzgate)
    checks = await metric(kzgate, "kzgate_probe_checks_total") - checks0
    return {
        "control_cpu_s": round(control1 - control0, 3),
        "workers_cpu_s": round(workers1 - workers0, 3),
        "checks": checks,
        "rounds": checks / PROBES_PER_ROUND,
    }


async def bench_round(work: Path, db: Path, seconds: float) -> dict[str, Any]:
    async with daemon(config(work, probes=False, names_db=db)) as kzgate:
        await asyncio.sleep(2)  # past the start-up work
        idle = await window(kzgate, seconds)
    async with daemon(config(work, probes=True, names_db=db)) as kzgate:
        await asyncio.sleep(2)
        probing = await window(kzgate, seconds)
    rounds = max(probing["rounds"], 1e-9)
    extra = probing["control_cpu_s"] - idle["control_cpu_s"]
    return {
        "idle": idle,
        "probing": probing,
        "cpu_ms_per_round": round(extra / rounds * 1000, 2),
        "workers_cpu_ms_per_round": round(
            (probing["workers_cpu_s"] - idle["workers_cpu_s"]) / rounds * 1000, 2
        ),
        "control_cpu_ratio_probing_to_idle": round(
            probing["control_cpu_s"] / max(idle["control_cpu_s"], 1 / CLK_TCK), 2
        ),
        "clock_tick_s": 1 / CLK_TCK,
    }


async def dnsperf(port: int, qfile: Path, rate: int, seconds: int) -> dict[str, float]:
    cmd = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-Q", str(rate),
        "-c", "4", "-T", "1", "-q", "2000", "-t", "1", "-l", str(seconds), "-v", "-b", "4096",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed: {out.decode()[-2000:]}")
    latencies, lost = [], 0
    for line in out.decode().splitlines():
        if line.startswith("> "):
            parts = line.split()
            if parts[1] in ("T", "I"):
                lost += 1
            else:
                latencies.append(float(parts[-1]) * 1000)
    ms = latencies + [1000.0] * lost or [float("nan")]
    return {
        "answered": len(latencies),
        "lost": lost,
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "p999_ms": round(pct(ms, 0.999), 3),
    }


async def bench_latency(
    work: Path, db: Path, names: int, rate: int, seconds: int, passes: int
) -> dict[str, Any]:
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is not installed (Debian: dnsperf; scripts/test installs it)")
    qfile = work / "queries.txt"
    step = max(1, names // 50_000)
    qfile.write_text(
        "".join(f"{restricted_name(i)} A\n" for i in range(0, names, step)), encoding="ascii"
    )
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for n in range(passes * 2):
        mode = ("off", "on")[n % 2]  # interleaved, so host drift hits both alike
        async with daemon(config(work, probes=mode == "on", names_db=db)) as kzgate:
            await asyncio.sleep(2)
            result = await dnsperf(kzgate.ports["dns"], qfile, rate, seconds)
            result["rounds"] = await metric(kzgate, "kzgate_probe_checks_total") / 100
        print(f"[latency probes {mode}] {result}", file=sys.stderr)
        runs[mode].append(result)
    return {
        "rate": rate,
        "passes": runs,
        "median": {
            mode: {k: statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms", "p999_ms")}
            for mode, rs in runs.items()
        },
    }


async def bench_sweep(work: Path, names: int, rate: int) -> dict[str, Any]:
    db = work / "sweep.db"
    started = time.monotonic()
    fill_register(db, names)
    filled = time.monotonic() - started
    path = config(work, probes=False, names_db=db)
    async with daemon(path):
        report = work / "sweep-report.json"
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kzgate", "verify", "--config", str(path), "--all",
            "--rate", str(rate), "--report", str(report),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        elapsed = time.monotonic() - started
    if proc.returncode not in (0, 1) or not report.exists():
        raise RuntimeError(f"kzgate verify --all: exit {proc.returncode}: {err.decode()[-2000:]}")
    summary = json.loads(report.read_text(encoding="utf-8"))["summary"]
    return {
        "names": names,
        "fill_s": round(filled, 1),
        "elapsed_s": round(elapsed, 1),
        "exit": proc.returncode,
        "summary": summary,
        "targets_per_s": round(names / elapsed, 1),
        "checks_per_s": round(summary["checks"] / elapsed, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="round,latency,sweep")
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--sweep-names", type=int, default=1_000_000)
    parser.add_argument("--sweep-rate", type=int, default=1_000_000)
    args = parser.parse_args()
    only = set(args.only.split(","))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kzgate-bench-probes-") as tmp:
        work = Path(tmp)
        db = work / "kzgate.db"
        if only & {"round", "latency"}:
            fill_register(db, args.names)
        if "round" in only:
            out["round"] = await bench_round(work, db, args.seconds)
        if "latency" in only:
            out["latency"] = await bench_latency(
                work, db, args.names, args.rate, args.seconds, args.passes
            )
        if "sweep" in only:
            out["sweep"] = await bench_sweep(work, args.sweep_names, args.sweep_rate)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
