"""kzgate's resolver against Unbound, both enforcing the same 1,000,000 restricted names.

Workload model: an operator's resolver for subscribers. The register holds
1,000,000 restricted domains (10 instructions of 100,000 names,
``b{i}.blocked-{i % 1000}.kz``). Subscribers ask for a mix of names, in one
shuffled dnsperf file used for both servers:

* 50% allowed names (``w{i}.allowed.test``, a pool of 20,000), forwarded to a
  third local resolver (an Unbound answering them from local data), so after
  the warm-up pass they are cache hits;
* 40% restricted names themselves, 10% subdomains of restricted names
  (``www.b{i}...``): answered locally with NXDOMAIN;
* query types 90% A, 10% AAAA.

Servers under test: Unbound from Debian with one thread, the names as
``local-zone: "<name>." always_nxdomain``, validation off
(``module-config: "iterator"``); kzgate with ``dns.workers: 1`` and the names in
its register. Each server is pinned to CPU 0, the third resolver to CPU 1.
dnsperf sends at a fixed rate, open-loop (``-Q``, up to ``--outstanding``
queries in flight): one pass through the file to fill the caches, then two
measured passes of ``--seconds``: ``cross_core`` with dnsperf on CPU 1 (its CPU
stays out of the server's way) and ``same_core`` with dnsperf on CPU 0. Both
are reported because on a VM whose idle vCPUs halt, each query in the
cross-core layout also pays for waking the server's vCPU; a do-nothing UDP
reflector measured the same way (``harness_floor``) shows that cost. Reported
per server and pass:

* CPU per query: utime + stime of the server's processes (all threads, all
  children) from /proc, over the measured pass, divided by completed queries;
* latency p50/p99/p99.9 from dnsperf's per-query output (``-v``); lost queries;
* how busy the whole machine was (to tell a disturbed run);

and per server: RSS (VmRSS, summed over the process tree) after loading and
after the runs; load time: process start until it answers a blocked name
(Unbound), or until the "kzgate ready" log line (kzgate logs it once DNS is bound);
and the kzgate/Unbound ratio of each. Traffic stays on 127.0.0.1; every
process this script starts is killed at the end, and every step has a time limit.

    .venv/bin/python bench/dns_vs_unbound.py [--names 1000000] [--seconds 20] [--rate 20000]
    .venv/bin/python bench/dns_vs_unbound.py --names 100000 --seconds 5      # quick check
    .venv/bin/python bench/dns_vs_unbound.py --names 100000 --seconds 5 --only unbound
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dnslib import QTYPE, RCODE, DNSRecord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from daemon_proc import DaemonProcess  # noqa: E402
from kzfixtures import write_config  # noqa: E402
from register_fixtures import restrict  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from kzgate.register.store import Register  # noqa: E402

SERVER_CPU = 0  # the server under test
LOAD_CPU = 1  # dnsperf and the third resolver
PER_INSTRUCTION = 100_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOALS = {
    "cpu_ratio_max": 1.0,
    "p99_ms_max": 0.2,
    "rss_ratio_max": 0.5,
    "load_s_max": 3.0,
}


def restricted_name(i: int) -> str:
    return f"b{i}.blocked-{i % 1000}.kz"


def allowed_name(i: int) -> str:
    return f"w{i}.allowed.test"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (Unbound needs it in its config)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


# -- inputs ---------------------------------------------------------------------


def write_query_file(path: Path, args: argparse.Namespace, rng: random.Random) -> dict[str, int]:
    """One dnsperf file for both servers: 50% allowed, 40% blocked, 10% subdomains."""
    lines: list[str] = []
    mix: Counter[str] = Counter()
    for _ in range(args.queries):
        roll = rng.random()
        if roll < 0.5:
            kind, name = "allowed", allowed_name(rng.randrange(args.allowed))
        elif roll < 0.9:
            kind, name = "blocked", restricted_name(rng.randrange(args.names))
        else:
            kind, name = "subdomain", "www." + restricted_name(rng.randrange(args.names))
        qtype = "AAAA" if rng.random() < 0.1 else "A"
        mix[kind] += 1
        mix[qtype] += 1
        lines.append(f"{name} {qtype}\n")
    rng.shuffle(lines)
    path.write_text("".join(lines), encoding="ascii")
    return dict(mix)


def unbound_server_lines(work: Path, port: int) -> list[str]:
    return [
        "server:",
        "  num-threads: 1",
        "  interface: 127.0.0.1",
        f"  port: {port}",
        "  do-ip6: no",
        "  access-control: 127.0.0.0/8 allow",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{work}"',
        f'  logfile: "{work}/unbound-{port}.log"',
        '  pidfile: ""',
        "  use-syslog: no",
        "  verbosity: 1",
        '  module-config: "iterator"',
        "  do-not-query-localhost: no",
        # Room for every allowed name, so the measured pass is all cache hits.
        "  msg-cache-size: 32m",
        "  rrset-cache-size: 64m",
    ]


def write_upstream_conf(work: Path, port: int, allowed: int) -> Path:
    """The third resolver: answers every allowed name (A and AAAA) from local data."""
    soa = "allowed.test. 3600 IN SOA ns.allowed.test. h.allowed.test. 1 3600 600 86400 3600"
    lines = [
        *unbound_server_lines(work, port),
        '  local-zone: "allowed.test." static',
        f'  local-data: "{soa}"',
    ]
    for i in range(allowed):
        name, a = allowed_name(i), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        lines.append(f'  local-data: "{name}. 3600 IN A {a}"')
        lines.append(f'  local-data: "{name}. 3600 IN AAAA 2001:db8::{i:x}"')
    lines += ["remote-control:", "  control-enable: no", ""]
    path = work / "upstream.conf"
    path.write_text("\n".join(lines), encoding="ascii")
    return path


def write_unbound_conf(work: Path, port: int, upstream: int, names: int) -> Path:
    """Unbound under test: one thread, the restricted names as always_nxdomain zones."""
    zones = work / "restricted-zones.conf"
    with zones.open("w", encoding="ascii") as out:
        out.write("server:\n")
        out.writelines(
            f'  local-zone: "{restricted_name(i)}." always_nxdomain\n' for i in range(names)
        )
    lines = [
        *unbound_server_lines(work, port),
        f'  include: "{zones}"',
        # Unbound answers "test." itself (RFC 6761); the allowed names live there.
        '  local-zone: "test." nodefault',
        "forward-zone:",
        '  name: "."',
        f"  forward-addr: 127.0.0.1@{upstream}",
        "remote-control:",
        "  control-enable: no",
        "",
    ]
    path = work / "unbound.conf"
    path.write_text("\n".join(lines), encoding="ascii")
    return path


def fill_register(db: Path, names: int) -> None:
    """The same names in kzgate's register: restricts of 100,000 domain targets each."""
    register = Register.open(db)
    try:
        for k, start in enumerate(range(0, names, PER_INSTRUCTION)):
            targets = [
                ("domain", restricted_name(i))
                for i in range(start, min(names, start + PER_INSTRUCTION))
            ]
            register.record(restrict(f"bench-{k}", k + 1, f"BENCH-{k}", targets), datetime.now(UTC))
    finally:
        register.close()


# -- observing processes --------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (kzgate may fork DNS workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of every thread of ``pids``."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def ask(port: int, name: str, qtype: str = "A", timeout: float = 0.2) -> str | None:
    """The RCODE name of one UDP query's answer, or None on timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(DNSRecord.question(name, qtype).pack(), ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(4096)
        except TimeoutError:
            return None
    reply = DNSRecord.parse(data)
    answers = ",".join(str(QTYPE[rr.rtype]) for rr in reply.rr)
    return f"{RCODE[reply.header.rcode]} {answers}".strip()


async def wait_answering(port: int, name: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if await asyncio.to_thread(ask, port, name, "A", 0.05) is not None:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}")


def behaviour(port: int) -> dict[str, str | None]:
    """What a server answers for each kind of name: both must agree."""
    return {
        "allowed A": ask(port, allowed_name(1), "A", 2.0),
        "allowed AAAA": ask(port, allowed_name(1), "AAAA", 2.0),
        "blocked A": ask(port, restricted_name(1), "A", 2.0),
        "subdomain A": ask(port, "www." + restricted_name(1), "A", 2.0),
        "unknown name": ask(port, "nowhere.allowed.test", "A", 2.0),
    }


# -- driving --------------------------------------------------------------------


@dataclass
class Perf:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    rcodes: Counter[str] = field(default_factory=Counter)


async def dnsperf(
    port: int, qfile: Path, args: argparse.Namespace, *, cpu: int, seconds: int, once: bool
) -> Perf:
    """One open-loop dnsperf run pinned to ``cpu``; per-query RCODE and latency from ``-v``."""
    cmd = [
        "taskset", "-c", str(cpu),
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
        "-Q", str(args.rate), "-c", str(args.clients), "-T", "1",
        "-q", str(args.outstanding), "-t", str(args.timeout), "-l", str(seconds), "-v",
    ]  # fmt: skip
    if once:
        cmd += ["-n", "1"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=seconds + args.timeout + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {out.decode()[-2000:]}")
    perf = Perf()
    for line in out.decode().splitlines():
        if line.startswith("> "):  # "> NOERROR name type 0.000123", or "> T name type"
            parts = line.split()
            perf.rcodes[parts[1]] += 1
            if parts[1] not in ("T", "I"):
                perf.latencies.append(float(parts[-1]))
        elif match := re.match(r"\s+Queries (sent|completed|lost):\s+(\d+)", line):
            setattr(perf, match.group(1), int(match.group(2)))
    return perf


def latency_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds] or [float("nan")]
    return {
        "p50": round(statistics.median(ms), 3),
        "p99": round(pct(ms, 0.99), 3),
        "p999": round(pct(ms, 0.999), 3),
        "max": round(max(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
    }


async def measured_pass(
    port: int, pids: list[int], qfile: Path, args: argparse.Namespace, *, cpu: int, seconds: int
) -> dict[str, object]:
    """One measured dnsperf pass, with the server's CPU time read around it."""
    cpu_before, machine_before = cpu_seconds(pids), machine_ticks()
    started = time.monotonic()
    perf = await dnsperf(port, qfile, args, cpu=cpu, seconds=seconds, once=False)
    elapsed = time.monotonic() - started
    used = cpu_seconds(pids) - cpu_before
    busy, steal = (b - a for a, b in zip(machine_before, machine_ticks(), strict=True))
    return {
        "dnsperf_cpu": cpu,
        "queries_sent": perf.sent,
        "queries_completed": perf.completed,
        "queries_lost": perf.lost,
        "rcodes": dict(perf.rcodes),
        "achieved_qps": round(perf.completed / elapsed, 1),
        "cpu_seconds": round(used, 2),
        "cpu_us_per_query": round(used / max(1, perf.completed) * 1e6, 2),
        "cpu_utilisation": round(used / elapsed, 3),
        "latency_ms": latency_ms(perf.latencies),
        # Whole machine, to tell a quiet run from a disturbed one: everything here
        # (server, dnsperf, this script) should stay well under 2 cores busy.
        "machine_busy_cores": round(busy / CLK_TCK / elapsed, 2),
        "machine_steal_cores": round(steal / CLK_TCK / elapsed, 3),
    }


# Where dnsperf runs in each measured pass; the server is always on SERVER_CPU.
# cross_core is the layout that keeps dnsperf's CPU out of the server's way; on a
# VM whose idle vCPUs halt, every query then also pays a cross-vCPU wake-up,
# which same_core avoids (at the price of sharing the core with dnsperf).
LAYOUTS = {"cross_core": LOAD_CPU, "same_core": SERVER_CPU}


async def measure(
    label: str, port: int, root_pid: int, qfile: Path, args: argparse.Namespace
) -> dict[str, object]:
    """Warm the caches with one pass through the file, then one measured pass per layout."""
    warm = int(args.queries / args.rate * 2) + 10
    await dnsperf(port, qfile, args, cpu=LOAD_CPU, seconds=warm, once=True)
    pids = process_tree(root_pid)
    result: dict[str, object] = {"processes": len(pids)}
    for layout, cpu in LAYOUTS.items():
        run = await measured_pass(port, pids, qfile, args, cpu=cpu, seconds=args.seconds)
        print(
            f"[{label} {layout}] {run['queries_completed']} answers, {run['queries_lost']} lost,"
            f" {run['cpu_us_per_query']} µs CPU/query, latency {run['latency_ms']}",
            file=sys.stderr,
        )
        result[layout] = run
    result["rss_mb_after_run"] = round(rss_bytes(pids) / 2**20, 1)
    return result


# The least any server can do: echo the query back with QR set. Stops by itself
# when idle for the time given on its command line.
REFLECTOR = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.settimeout(float(sys.argv[2]))
while True:
    try:
        data, peer = sock.recvfrom(4096)
    except TimeoutError:
        break
    reply = bytearray(data)
    reply[2] |= 0x80
    sock.sendto(reply, peer)
"""


async def harness_floor(qfile: Path, args: argparse.Namespace) -> dict[str, object]:
    """Latency of a do-nothing UDP reflector on SERVER_CPU, in each layout: the harness's floor."""
    port = free_port()
    seconds = min(args.seconds, 5)
    reflector = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), sys.executable, "-c", REFLECTOR, str(port), "10"]
    )
    try:
        await asyncio.sleep(0.5)
        result: dict[str, object] = {"seconds": seconds}
        for layout, cpu in LAYOUTS.items():
            run = await measured_pass(port, [reflector.pid], qfile, args, cpu=cpu, seconds=seconds)
            result[layout] = {k: run[k] for k in ("queries_lost", "cpu_us_per_query", "latency_ms")}
        return result
    finally:
        stop(reflector)


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Children started inside inherit this thread's CPU affinity."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def start_unbound(conf: Path, cpu: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), "unbound", "-d", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


async def bench_unbound(
    work: Path, upstream: int, qfile: Path, args: argparse.Namespace
) -> dict[str, object]:
    port = free_port()
    conf = write_unbound_conf(work, port, upstream, args.names)
    started = time.monotonic()
    proc = start_unbound(conf, SERVER_CPU, work / "unbound-under-test.out")
    try:
        await wait_answering(port, restricted_name(0), started + args.load_timeout)
        load = time.monotonic() - started
        result: dict[str, object] = {
            "load_s": round(load, 2),
            "rss_mb_loaded": round(rss_bytes([proc.pid]) / 2**20, 1),
            "answers": await asyncio.to_thread(behaviour, port),
        }
        result |= await measure("unbound", port, proc.pid, qfile, args)
        return result
    finally:
        stop(proc)


async def bench_kzgate(
    work: Path, upstream: int, qfile: Path, args: argparse.Namespace
) -> dict[str, object]:
    pki = work / "pki"
    ensure_dev_material(pki)
    config = write_config(
        work,
        pki,
        dns={"listen": ["127.0.0.1:0"], "upstreams": [f"127.0.0.1:{upstream}"], "workers": 1},
    )
    started = time.monotonic()
    fill_register(work / "kzgate.db", args.names)
    print(f"[kzgate] register filled in {time.monotonic() - started:.1f} s", file=sys.stderr)
    daemon = DaemonProcess(config)
    started = time.monotonic()
    try:
        with pinned(SERVER_CPU):
            await daemon.start(timeout=args.load_timeout)
    except BaseException:
        if daemon.proc is not None and daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
        raise
    try:
        load = time.monotonic() - started
        assert daemon.proc is not None
        if "dns" not in daemon.ports:
            raise RuntimeError(f"kzgate is not serving DNS: {daemon.ports}")
        port = daemon.ports["dns"]
        result: dict[str, object] = {
            "load_s": round(load, 2),
            "rss_mb_loaded": round(rss_bytes(process_tree(daemon.proc.pid)) / 2**20, 1),
            "answers": await asyncio.to_thread(behaviour, port),
        }
        result |= await measure("kzgate", port, daemon.proc.pid, qfile, args)
        return result
    finally:
        daemon.kill()
        await daemon.wait()


# (key, title, goal) of each headline measure, in table order.
HEADLINE = [
    ("cpu_us_per_query_cross_core", "CPU per query, µs, dnsperf on the other core", "≤ 1.0×"),
    ("cpu_us_per_query_same_core", "CPU per query, µs, dnsperf on the same core", "≤ 1.0×"),
    ("p50_ms_cross_core", "latency p50, ms, dnsperf on the other core", ""),
    ("p99_ms_cross_core", "latency p99, ms, dnsperf on the other core", "≤ 0.2 ms"),
    ("p50_ms_same_core", "latency p50, ms, dnsperf on the same core", ""),
    ("p99_ms_same_core", "latency p99, ms, dnsperf on the same core", "≤ 0.2 ms"),
    ("lost", "queries lost (both passes)", ""),
    ("rss_mb_loaded", "RSS loaded, MB", "≤ 0.5× Unbound"),
    ("rss_mb_after_run", "RSS after the runs, MB", ""),
    ("load_s", "load time, s", "≤ 3 s"),
]


def headline(result: dict[str, object]) -> dict[str, float]:
    """The flat numbers the comparison is about, from one server's (or the floor's) result."""
    flat: dict[str, float] = {}
    for layout in LAYOUTS:
        run = result.get(layout)
        if isinstance(run, dict):
            flat[f"cpu_us_per_query_{layout}"] = run["cpu_us_per_query"]
            flat[f"p50_ms_{layout}"] = run["latency_ms"]["p50"]
            flat[f"p99_ms_{layout}"] = run["latency_ms"]["p99"]
            flat["lost"] = flat.get("lost", 0) + run["queries_lost"]
    for key in ("rss_mb_loaded", "rss_mb_after_run", "load_s"):
        value = result.get(key)
        if isinstance(value, int | float):
            flat[key] = value
    return flat


def compare(servers: dict[str, dict[str, object]]) -> dict[str, float | None]:
    if not ("kzgate" in servers and "unbound" in servers):
        return {}
    k, u = headline(servers["kzgate"]), headline(servers["unbound"])
    return {
        key: round(k[key] / u[key], 2) if u.get(key) and key in k else None
        for key, _, _ in HEADLINE
        if key != "lost"
    }


def markdown(report: dict[str, object]) -> str:
    servers: dict[str, dict[str, object]] = report["servers"]  # type: ignore[assignment]
    ratios: dict[str, float | None] = report["kzgate_over_unbound"]  # type: ignore[assignment]
    floor = headline(report["harness_floor"])  # type: ignore[arg-type]
    names = [s for s in ("kzgate", "unbound") if s in servers]
    flat = {s: headline(servers[s]) for s in names}
    out = [
        "| measure | " + " | ".join(names) + " | kzgate/Unbound | reflector floor | goal |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- |",
    ]
    for key, title, goal in HEADLINE:
        cells = [str(flat[s].get(key, "")) for s in names]
        ratio = ratios.get(key)
        extra = ["" if ratio is None else str(ratio), str(floor.get(key, "")), goal]
        out.append(f"| {title} | " + " | ".join(cells + extra) + " |")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="kzgate-dnsbench-"))
    # This script, dnsperf and the third resolver share one core; the server
    # under test gets the other (see pinned() and start_unbound()).
    os.sched_setaffinity(0, {LOAD_CPU})
    rng = random.Random(20261123)
    qfile = work / "queries.txt"
    report: dict[str, object] = {
        "workload": {
            "restricted_names": args.names,
            "allowed_pool": args.allowed,
            "query_file_lines": args.queries,
            "mix": write_query_file(qfile, args, rng),
            "rate_qps": args.rate,
            "seconds": args.seconds,
            "dnsperf_clients": args.clients,
            "max_outstanding": args.outstanding,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "unbound": unbound_version(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        },
    }
    upstream_port = free_port()
    upstream = start_unbound(
        write_upstream_conf(work, upstream_port, args.allowed), LOAD_CPU, work / "upstream.out"
    )
    servers: dict[str, dict[str, object]] = {}
    try:
        await wait_answering(upstream_port, allowed_name(0), time.monotonic() + 30)
        report["harness_floor"] = await harness_floor(qfile, args)
        if args.only in (None, "unbound"):
            servers["unbound"] = await bench_unbound(work, upstream_port, qfile, args)
        if args.only in (None, "kzgate"):
            servers["kzgate"] = await bench_kzgate(work, upstream_port, qfile, args)
    finally:
        stop(upstream)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["servers"] = servers
    report["kzgate_over_unbound"] = compare(servers)
    report["goals"] = GOALS
    return report


def unbound_version() -> str:
    out = subprocess.run(["unbound", "-V"], capture_output=True, text=True, timeout=10).stdout
    return out.splitlines()[0] if out else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--names", type=int, default=1_000_000, help="restricted names")
    parser.add_argument("--allowed", type=int, default=20_000, help="allowed-name pool")
    parser.add_argument("--queries", type=int, default=200_000, help="lines in the query file")
    parser.add_argument("--rate", type=int, default=20_000, help="queries per second (-Q)")
    parser.add_argument("--seconds", type=int, default=20, help="measured pass (-l)")
    parser.add_argument("--clients", type=int, default=8, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=10_000, help="dnsperf -q")
    parser.add_argument("--timeout", type=int, default=2, help="dnsperf -t, seconds")
    parser.add_argument("--load-timeout", type=float, default=180.0, help="seconds")
    parser.add_argument("--only", choices=("kzgate", "unbound"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    report = asyncio.run(run(parser.parse_args()))
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
