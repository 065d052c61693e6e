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
(``module-config: "iterator"``), a 4 MB socket buffer as kzgate's listeners
have, caches large enough for every allowed name, and ``local-zone: "test."
nodefault`` (else it answers the RFC 6761 ``test.`` itself); kzgate with
``dns.workers: 1`` and the names in its register; and, as a floor, a
do-nothing UDP reflector (it echoes the query with QR set), which shows what
the harness itself adds. All three run on CPU 0 and stay up to the end; the
third resolver, dnsperf and this script run on CPU 1.

Before anything is timed, kzgate and Unbound are asked the same queries,
``--check-per-kind`` of each kind in the file (allowed, blocked, subdomain,
each A and AAAA) and one name the upstream does not know, and must give the
same RCODE and answer records (TTLs, record order and the authority section
are normalized away: see same_answers.py); once on their first answers
(allowed names forwarded) and once after the warm-up pass (every answer from
the cache, as in the measured passes). A difference stops the run. After
the measured passes, the RCODE counts dnsperf saw from the two must agree too
(every pass sends the same file from its start; the counts may differ only by
lost queries and by how many each pass sent), or the run exits non-zero after
its report.

dnsperf sends at a fixed rate, open-loop (``-Q``, up to ``--outstanding``
queries in flight). After one warm-up pass through the file per server (every
allowed name is then cached), each round gives every server one measured pass
of ``--seconds`` per layout, in turn, so that noise from the host falls on all
of them alike:

* ``cross_core``: dnsperf on CPU 1, out of the server's way;
* ``same_core``: dnsperf on CPU 0, beside the server. On a VM whose idle vCPUs
  halt, the cross-core layout also makes the server's vCPU wake up for each
  burst of queries; this one does not, at the price of sharing the core.

Reported per server, layout and round: CPU per query (utime + stime of the
server's processes, all threads and children, from /proc, divided by completed
queries); latency p50/p99 over every query, from dnsperf's per-query output
(``-v``), a lost query counting as the timeout (``-t``); lost queries; the
datagrams the kernel dropped for a full socket buffer; the CPU that other
processes on the machine used meanwhile. The machine is shared: each pass waits
for a quiet moment first, and a pass during which other processes kept more
than 0.15 of a core busy is run again (``--retries``). The headline is the
median over rounds, so one round disturbed by the host does not decide it.
Per server: RSS (VmRSS, summed over the process tree) once loaded and after the
runs; load time (median of ``--loads`` starts), from process start until it
answers a blocked name (Unbound) or until the "kzgate ready" log line (kzgate
logs it once DNS is bound). And the kzgate/Unbound ratio of each.

Traffic stays on 127.0.0.1; every process this script starts is killed at the
end (the reflector also stops by itself when idle), and every step has a time
limit.

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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from fill import fill_register, restricted_name  # noqa: E402
from same_answers import ask, differences, samples_by_kind  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.kzfixtures import write_config  # noqa: E402

SERVER_CPU = 0  # the server under test
LOAD_CPU = 1  # dnsperf and the third resolver
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.15  # other work allowed on the machine during a measured pass
GOALS = {
    "cpu_ratio_max": 1.0,
    "p99_ms_max": 0.2,
    "rss_ratio_max": 0.5,
    "load_s_max": 3.0,
}


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
        # The same socket buffer as kzgate's listeners (and the reflector's).
        "  so-rcvbuf: 4m",
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


def write_zones(work: Path, names: int) -> Path:
    """The restricted names as Unbound always_nxdomain zones."""
    zones = work / "restricted-zones.conf"
    with zones.open("w", encoding="ascii") as out:
        out.write("server:\n")
        out.writelines(
            f'  local-zone: "{restricted_name(i)}." always_nxdomain\n' for i in range(names)
        )
    return zones


def write_unbound_conf(work: Path, port: int, upstream: int, zones: Path) -> Path:
    """Unbound under test: one thread, the restricted zones, everything else forwarded."""
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
    path = work / f"unbound-{port}.conf"
    path.write_text("\n".join(lines), encoding="ascii")
    return path


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


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (line for line in lines if line[0] == "Udp:")
    return int(values[names.index("RcvbufErrors")])


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used since boot (user, nice, system)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system = fields[:3]
    return (user + nice + system) / CLK_TCK


def process_seconds() -> dict[int, float]:
    """CPU time (utime + stime) of every process, by pid."""
    seconds = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


def others_seconds(before: dict[int, float], after: dict[int, float], ours: set[int]) -> float:
    """CPU time processes other than ``ours`` used between two snapshots.

    A lower bound: a process that starts and ends in between is not seen (its
    parent's cutime would count all of its life, however long before).
    """
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in ours)


async def wait_quiet(limit: float) -> float:
    """Wait, at most ``limit`` seconds, until the machine has been all but idle for 2 s."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = machine_busy_seconds()
        await asyncio.sleep(2)
        if (machine_busy_seconds() - before) / 2 < QUIET_CORES:
            break
    return round(time.monotonic() - started, 1)


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


async def wait_answering(port: int, name: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if await asyncio.to_thread(ask, port, name, "A", 0.05) is not None:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}")


def kind_of(name: str) -> str:
    """Which kind of query of the file (see write_query_file) asks for ``name``."""
    if name.endswith(".allowed.test"):
        return "allowed"
    return "subdomain" if name.startswith("www.") else "blocked"


async def check_same_answers(
    servers: list[Server], qfile: Path, args: argparse.Namespace, when: str
) -> dict[str, object]:
    """Ask kzgate and Unbound the same queries of every kind in the file; stop on a difference.

    Run on the first answers (allowed names forwarded) and again after the
    warm-up (every answer from the cache, as in the measured passes). What is
    compared and what is normalized: bench/same_answers.py.
    """
    ports = {s.name: s.port for s in servers if s.name in ("kzgate", "unbound")}
    if len(ports) < 2:
        return {"checked": False, "why": "--only: one server, nothing to compare"}
    samples = samples_by_kind(
        qfile.read_text(encoding="ascii").splitlines(), kind_of, args.check_per_kind
    )
    samples["unknown A"] = [("nowhere.allowed.test", "A")]  # the upstream's NXDOMAIN
    asked, diffs = await asyncio.to_thread(differences, samples, ports)
    print(f"[answers, {when}] {asked} queries, {len(diffs)} differences", file=sys.stderr)
    if diffs:
        shown = "\n".join(diffs[:20])
        raise SystemExit(
            f"kzgate and Unbound answer differently ({when}: {len(diffs)} of {asked} queries);"
            f" timing them would compare different work:\n{shown}"
        )
    return {"checked": True, "queries": asked, "kinds": {k: len(v) for k, v in samples.items()}}


# -- the servers ------------------------------------------------------------------


@dataclass
class Server:
    """A DNS server on 127.0.0.1 whose processes are measured."""

    name: str
    port: int
    root_pid: int
    loads_s: list[float] = field(default_factory=list)
    rss_mb_loaded: float | None = None

    def pids(self) -> list[int]:
        return process_tree(self.root_pid)


def start_unbound(conf: Path, cpu: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), "unbound", "-d", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def killer(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def kill() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    return kill


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Children started inside inherit this thread's CPU affinity."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# The least any server can do: echo the query back with QR set. It shows what
# the harness itself (dnsperf, loopback, this VM's scheduling) adds to latency.
REFLECTOR = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.settimeout(float(sys.argv[2]))
while True:
    try:
        data, peer = sock.recvfrom(4096)
    except TimeoutError:
        break  # idle for too long: stop by itself
    reply = bytearray(data)
    reply[2] |= 0x80
    sock.sendto(reply, peer)
"""


async def start_reflector(stack: contextlib.AsyncExitStack, idle: float) -> Server:
    port = free_port()
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, "-c", REFLECTOR, str(port), str(idle)]
    proc = subprocess.Popen(cmd)
    stack.callback(killer(proc))
    await wait_answering(port, allowed_name(0), time.monotonic() + 10)
    return Server("reflector", port, proc.pid)


async def start_unbound_under_test(
    stack: contextlib.AsyncExitStack, work: Path, upstream: int, args: argparse.Namespace
) -> Server:
    """Start Unbound ``--loads`` times, timing each load; keep the last one running."""
    zones = write_zones(work, args.names)
    loads: list[float] = []
    for attempt in range(args.loads):
        port = free_port()
        conf = write_unbound_conf(work, port, upstream, zones)
        started = time.monotonic()
        proc = start_unbound(conf, SERVER_CPU, work / "unbound-under-test.out")
        stop = killer(proc)
        stack.callback(stop)
        await wait_answering(port, restricted_name(0), started + args.load_timeout)
        loads.append(round(time.monotonic() - started, 2))
        if attempt < args.loads - 1:
            stop()
    server = Server("unbound", port, proc.pid, loads_s=loads)
    server.rss_mb_loaded = round(rss_bytes(server.pids()) / 2**20, 1)
    return server


async def start_kzgate(
    stack: contextlib.AsyncExitStack, work: Path, upstream: int, args: argparse.Namespace
) -> Server:
    """Fill a register, then start kzgate ``--loads`` times on it; keep the last one running."""
    pki = work / "pki"
    ensure_dev_material(pki)
    config = write_config(
        work,
        pki,
        dns={
            "listen": ["127.0.0.1:0"],
            "upstreams": [f"127.0.0.1:{upstream}"],
            "workers": 1,
            "block_mode": args.block_mode,
        },
    )
    started = time.monotonic()
    fill_register(work / "kzgate.db", args.names)
    print(f"[kzgate] register filled in {time.monotonic() - started:.1f} s", file=sys.stderr)
    loads: list[float] = []
    for attempt in range(args.loads):
        daemon = DaemonProcess(config)
        stop = stopper(daemon)
        stack.push_async_callback(stop)
        started = time.monotonic()
        with pinned(SERVER_CPU):
            await daemon.start(timeout=args.load_timeout)
        loads.append(round(time.monotonic() - started, 2))
        if attempt < args.loads - 1:
            await stop()
    assert daemon.proc is not None
    if "dns" not in daemon.ports:
        raise RuntimeError(f"kzgate is not serving DNS: {daemon.ports}")
    server = Server("kzgate", daemon.ports["dns"], daemon.proc.pid, loads_s=loads)
    server.rss_mb_loaded = round(rss_bytes(server.pids()) / 2**20, 1)
    return server


def stopper(daemon: DaemonProcess) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        if daemon.proc is None or daemon.proc.returncode is not None:
            return
        if daemon.ports:  # started: wait() also collects the rest of its log
            daemon.kill()
            await daemon.wait()
        else:
            daemon.proc.kill()
            await daemon.proc.wait()

    return stop


# -- driving --------------------------------------------------------------------


@dataclass
class Pass:
    """One dnsperf run against one server, and what the server's processes spent."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    rcodes: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    others_busy_cores: float = 0.0
    waited_for_quiet_s: float = 0.0
    attempt: int = 1  # which try was kept (see measured_pass)
    rcvbuf_drops: int = 0


async def dnsperf(
    port: int, qfile: Path, args: argparse.Namespace, *, cpu: int, seconds: int, once: bool
) -> Pass:
    """One open-loop dnsperf run pinned to ``cpu``; per-query RCODE and latency from ``-v``."""
    cmd = [
        "taskset", "-c", str(cpu),
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
        "-Q", str(args.rate), "-c", str(args.clients), "-T", "1",
        "-q", str(args.outstanding), "-t", str(args.timeout), "-l", str(seconds), "-v",
        "-b", "4096",  # 4 MB socket buffers, as the servers have: dnsperf must not drop
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
    result = Pass()
    for line in out.decode().splitlines():
        if line.startswith("> "):  # "> NOERROR name type 0.000123", or "> T name type"
            parts = line.split()
            result.rcodes[parts[1]] += 1
            if parts[1] not in ("T", "I"):
                result.latencies.append(float(parts[-1]))
        elif match := re.match(r"\s+Queries (sent|completed|lost):\s+(\d+)", line):
            setattr(result, match.group(1), int(match.group(2)))
    return result


async def measured_pass(
    server: Server, qfile: Path, args: argparse.Namespace, *, cpu: int, upstream: int
) -> Pass:
    """One measured dnsperf pass, with the server's CPU time read around it.

    A pass during which other work on the machine (neither the server, nor
    dnsperf, this script or the third resolver) kept more than QUIET_CORES busy
    is run again, up to ``--retries`` times, after waiting for a quiet moment;
    the least disturbed attempt is kept.
    """
    pids = server.pids()
    # This script, the third resolver and the server (dnsperf has exited, and
    # is not seen, by the second snapshot).
    ours = {os.getpid(), upstream, *pids}
    attempts: list[Pass] = []
    for attempt in range(1, args.retries + 2):
        waited = await wait_quiet(args.quiet_wait)
        cpu_before, everyone_before = cpu_seconds(pids), process_seconds()
        drops_before = udp_rcvbuf_errors()
        started = time.monotonic()
        result = await dnsperf(server.port, qfile, args, cpu=cpu, seconds=args.seconds, once=False)
        result.elapsed_s = time.monotonic() - started
        result.cpu_s = cpu_seconds(pids) - cpu_before
        others = others_seconds(everyone_before, process_seconds(), ours)
        result.others_busy_cores = others / result.elapsed_s
        result.rcvbuf_drops = udp_rcvbuf_errors() - drops_before
        result.waited_for_quiet_s = waited
        result.attempt = attempt
        print(
            f"[{server.name} dnsperf on CPU {cpu}] {result.completed} answers,"
            f" {result.lost} lost, {result.cpu_s / max(1, result.completed) * 1e6:.2f} µs"
            f" CPU/query, p99 {latency_ms(result, args.timeout)['p99']} ms,"
            f" other work {result.others_busy_cores:.2f} cores",
            file=sys.stderr,
        )
        attempts.append(result)
        if result.others_busy_cores <= QUIET_CORES:
            break
    return min(attempts, key=lambda a: a.others_busy_cores)


def summarize(passes: list[Pass], timeout: float) -> dict[str, object]:
    """Each round on its own, their medians (robust to one disturbed round), and totals."""
    rounds = [
        {
            "cpu_us_per_query": round(p.cpu_s / max(1, p.completed) * 1e6, 2),
            "p50_ms": latency_ms(p, timeout)["p50"],
            "p99_ms": latency_ms(p, timeout)["p99"],
            "lost": p.lost,
            "rcvbuf_drops": p.rcvbuf_drops,
            "achieved_qps": round(p.completed / p.elapsed_s, 1),
            "others_busy_cores": round(p.others_busy_cores, 2),
            "attempt": p.attempt,
            "waited_for_quiet_s": p.waited_for_quiet_s,
        }
        for p in passes
    ]
    rcodes: Counter[str] = Counter()
    for p in passes:
        rcodes.update(p.rcodes)
    pooled = Pass(
        lost=sum(p.lost for p in passes), latencies=[x for p in passes for x in p.latencies]
    )
    return {
        "median_of_rounds": {
            key: round(statistics.median(r[key] for r in rounds), 3)
            for key in ("cpu_us_per_query", "p50_ms", "p99_ms", "lost")
        },
        "per_round": rounds,
        "queries_sent": sum(p.sent for p in passes),
        "queries_completed": sum(p.completed for p in passes),
        "queries_lost": pooled.lost,
        "rcodes": dict(rcodes),
        "latency_ms_all_rounds": latency_ms(pooled, timeout),
    }


def latency_ms(run: Pass, timeout: float) -> dict[str, float]:
    """Percentiles of every query sent: a lost one counts as the timeout (dnsperf -t)."""
    ms = [s * 1000 for s in run.latencies] + [timeout * 1000.0] * run.lost or [float("nan")]
    return {
        "p50": round(statistics.median(ms), 3),
        "p99": round(pct(ms, 0.99), 3),
        "p999": round(pct(ms, 0.999), 3),
        "max": round(max(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
    }


# Where dnsperf runs in each measured pass; servers always run on SERVER_CPU.
# cross_core keeps dnsperf's CPU out of the server's way; on a VM whose idle
# vCPUs halt, it also makes each burst of queries wake the server's vCPU, which
# same_core avoids at the price of sharing the core with dnsperf.
LAYOUTS = {"cross_core": LOAD_CPU, "same_core": SERVER_CPU}


# -- the report -----------------------------------------------------------------

# (key, title, goal) of each headline measure, in table order.
HEADLINE = [
    ("cpu_us_per_query_cross_core", "CPU per query, µs — dnsperf on the other core", "≤ 1.0×"),
    ("cpu_us_per_query_same_core", "CPU per query, µs — dnsperf on the same core", "≤ 1.0×"),
    ("p50_ms_cross_core", "latency p50, ms — dnsperf on the other core", ""),
    ("p99_ms_cross_core", "latency p99, ms — dnsperf on the other core", "≤ 0.2 ms"),
    ("p50_ms_same_core", "latency p50, ms — dnsperf on the same core", ""),
    ("p99_ms_same_core", "latency p99, ms — dnsperf on the same core", "≤ 0.2 ms"),
    ("lost", "queries lost, all passes", ""),
    ("rss_mb_loaded", "RSS once loaded, MB", "≤ 0.5×"),
    ("rss_mb_after_run", "RSS after the runs, MB", ""),
    ("load_s", "load time, s (median of the starts)", "≤ 3 s"),
]


def headline(result: dict[str, object]) -> dict[str, float]:
    """The flat numbers the comparison is about, from one server's result."""
    flat: dict[str, float] = {}
    for layout in LAYOUTS:
        run = result.get(layout)
        if isinstance(run, dict):
            median = run["median_of_rounds"]
            flat[f"cpu_us_per_query_{layout}"] = median["cpu_us_per_query"]
            flat[f"p50_ms_{layout}"] = median["p50_ms"]
            flat[f"p99_ms_{layout}"] = median["p99_ms"]
            flat["lost"] = flat.get("lost", 0) + run["queries_lost"]
    for key in ("rss_mb_loaded", "rss_mb_after_run", "load_s"):
        value = result.get(key)
        if isinstance(value, int | float):
            flat[key] = value
    return flat


def rcode_mix_differences(servers: dict[str, dict[str, Any]]) -> list[str]:
    """Where the RCODE counts of kzgate and Unbound over the measured passes differ beyond chance.

    Every pass sends the same file from its start, so both servers get the
    same queries; the counts may differ only by the queries one of them lost
    or one pass sent more of (dnsperf stops on time, not on a count).
    """
    if not ("kzgate" in servers and "unbound" in servers):
        return []
    out = []
    for layout in LAYOUTS:
        k, u = servers["kzgate"][layout], servers["unbound"][layout]
        slack = abs(k["queries_sent"] - u["queries_sent"]) + k["queries_lost"] + u["queries_lost"]
        for rcode in sorted((set(k["rcodes"]) | set(u["rcodes"])) - {"T", "I"}):
            a, b = k["rcodes"].get(rcode, 0), u["rcodes"].get(rcode, 0)
            if abs(a - b) > slack:
                out.append(
                    f"{layout} {rcode}: kzgate {a}, unbound {b} (allowed difference {slack})"
                )
    return out


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
    names = [s for s in ("kzgate", "unbound", "reflector") if s in servers]
    flat = {s: headline(servers[s]) for s in names}
    titles = {"reflector": "reflector (floor)"}
    out = [
        "CPU and latency: median over the rounds; a lost query counts as the timeout.",
        "",
        "| measure | " + " | ".join(titles.get(s, s) for s in names) + " | kzgate/Unbound | goal |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- | --- |",
    ]
    for key, title, goal in HEADLINE:
        cells = [str(flat[s].get(key, "")) for s in names]
        ratio = ratios.get(key)
        cells += ["" if ratio is None else str(ratio), goal]
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def unbound_version() -> str:
    out = subprocess.run(["unbound", "-V"], capture_output=True, text=True, timeout=10).stdout
    return out.splitlines()[0] if out else "?"


async def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="kzgate-dnsbench-"))
    # This script, dnsperf and the third resolver share one core; the servers
    # under test get the other (see pinned() and start_unbound()).
    os.sched_setaffinity(0, {LOAD_CPU})
    qfile = work / "queries.txt"
    report: dict[str, object] = {
        "workload": {
            "restricted_names": args.names,
            "allowed_pool": args.allowed,
            "query_file_lines": args.queries,
            "mix": write_query_file(qfile, args, random.Random(20261123)),
            "rate_qps": args.rate,
            "seconds_per_pass": args.seconds,
            "rounds": args.rounds,
            "dnsperf_clients": args.clients,
            "max_outstanding": args.outstanding,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "unbound": unbound_version(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        },
    }
    # The reflector stops by itself after this long without a query: more than
    # the whole run can take.
    one_pass = (args.retries + 1) * (args.quiet_wait + args.seconds + args.timeout + 5)
    idle_limit = 3 * args.rounds * len(LAYOUTS) * one_pass + 2 * args.loads * args.load_timeout
    results: dict[str, dict[str, object]] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            upstream_port = free_port()
            conf = write_upstream_conf(work, upstream_port, args.allowed)
            upstream = start_unbound(conf, LOAD_CPU, work / "upstream.out")
            stack.callback(killer(upstream))
            await wait_answering(upstream_port, allowed_name(0), time.monotonic() + 30)
            # All servers stay up to the end, idle while another is measured, and
            # are measured in turn within each round, so noise from the host
            # falls on all of them alike.
            servers = [await start_reflector(stack, idle_limit)]
            if args.only in (None, "unbound"):
                servers.append(await start_unbound_under_test(stack, work, upstream_port, args))
            if args.only in (None, "kzgate"):
                servers.append(await start_kzgate(stack, work, upstream_port, args))
            warm = int(args.queries / args.rate * 2) + 10
            checks = {"first": await check_same_answers(servers, qfile, args, "first answers")}
            for server in servers[1:]:
                await dnsperf(server.port, qfile, args, cpu=LOAD_CPU, seconds=warm, once=True)
            checks["cached"] = await check_same_answers(servers, qfile, args, "cached answers")
            report["same_answers"] = checks
            passes: dict[tuple[str, str], list[Pass]] = {}
            for _ in range(args.rounds):
                for layout, cpu in LAYOUTS.items():
                    for server in servers:
                        result = await measured_pass(
                            server, qfile, args, cpu=cpu, upstream=upstream.pid
                        )
                        passes.setdefault((server.name, layout), []).append(result)
            for server in servers:
                loaded = {
                    "load_s": statistics.median(server.loads_s or [0.0]),
                    "load_s_each": server.loads_s,
                    "rss_mb_loaded": server.rss_mb_loaded,
                }
                results[server.name] = (
                    (loaded if server.loads_s else {})  # the reflector loads nothing
                    | {
                        "rss_mb_after_run": round(rss_bytes(server.pids()) / 2**20, 1),
                        "processes": len(server.pids()),
                    }
                    | {
                        layout: summarize(passes[server.name, layout], args.timeout)
                        for layout in LAYOUTS
                    }
                )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["servers"] = results
    report["kzgate_over_unbound"] = compare(results)
    report["rcode_mix_differences"] = rcode_mix_differences(results)
    report["goals"] = GOALS
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--names", type=int, default=1_000_000, help="restricted names")
    parser.add_argument("--allowed", type=int, default=20_000, help="allowed-name pool")
    parser.add_argument("--queries", type=int, default=200_000, help="lines in the query file")
    parser.add_argument("--rate", type=int, default=20_000, help="queries per second (-Q)")
    parser.add_argument("--seconds", type=int, default=20, help="each measured pass (-l)")
    parser.add_argument("--rounds", type=int, default=3, help="measured passes per layout")
    parser.add_argument("--clients", type=int, default=8, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=10_000, help="dnsperf -q")
    parser.add_argument("--timeout", type=int, default=2, help="dnsperf -t, seconds")
    parser.add_argument("--retries", type=int, default=2, help="for passes others disturbed")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="seconds, before a pass")
    parser.add_argument("--loads", type=int, default=3, help="starts timed per server")
    parser.add_argument("--load-timeout", type=float, default=180.0, help="seconds")
    parser.add_argument("--only", choices=("kzgate", "unbound"), help="leave the other out")
    parser.add_argument(
        "--check-per-kind", type=int, default=50, help="queries per kind compared before timing"
    )
    parser.add_argument(
        "--block-mode",
        choices=("nxdomain", "sinkhole", "refused"),
        default="nxdomain",
        help="kzgate's dns.block_mode; any other than nxdomain differs from Unbound's"
        " always_nxdomain, so the run stops at the answer check (the check's own test)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    report = asyncio.run(run(parser.parse_args()))
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))
    if report["rcode_mix_differences"]:
        raise SystemExit(
            "kzgate and Unbound answered the measured traffic with different RCODEs:\n"
            + "\n".join(report["rcode_mix_differences"])  # type: ignore[arg-type]
        )


if __name__ == "__main__":
    main()
