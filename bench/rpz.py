"""RPZ primary benchmark: transfers of a 1,000,000-name zone, and a restrict's trip to Unbound.

Workload model: an operator's resolver fleet pulling kzgate's RPZ. The
register holds ``--names`` restricted domains (10 instructions of 100,000,
``b{i}.blocked-{i % 1000}.kz``), written straight into the SQLite register
before kzgate starts, so the zone holds 2 × names policy records (each name
and its ``*.`` subtree) plus the SOA and NS. kzgate runs as ``kzgate run``
(a child process) with DNS off unless ``--dns``: an RPZ-only primary.

Measured:

1. **AXFR** of the whole zone by ``kdig +noall +stats`` (C, so the client is
   not the bottleneck), ``--axfr-runs`` times: wall time, and kzgate's peak
   memory during the transfer — VmHWM from /proc after resetting it to the
   current RSS (``echo 5 > /proc/PID/clear_refs``) just before; also VmHWM
   since start (loading the register, rendering the zone).
Then, for each Unbound set-up in ``--unbound`` in turn — ``zonefile`` (the
RPZ kept on disk, which Unbound rewrites whole after every transfer, as a
restart-safe operator set-up has it) and ``memory`` (no zonefile) — steps 2-4:

2. **Unbound's first load**: Unbound (``rpz:`` clause, primary kzgate)
   started empty; time until it holds kzgate's serial, and its RSS.
3. **IXFR** after a 100-name restrict (``--change``) pushed through the API:
   ``kdig IXFR=<previous serial>`` wall time and record count, and the time
   from the receipt until Unbound holds the new serial.
4. **Restrict → Unbound NXDOMAIN**, ``--rounds`` times: a one-name restrict
   (a name the upstream answers NOERROR, so only the policy can make it
   NXDOMAIN) is pushed; kzgate's NOTIFY to Unbound passes through a UDP relay
   in this script that timestamps it; Unbound is asked every 5 ms. Reported:
   receipt → NOTIFY, NOTIFY → NXDOMAIN (goal ≤ 1 s), receipt → NXDOMAIN.

Traffic stays on 127.0.0.1; kzgate, Unbound and the relay are stopped at the
end (also on failure), and every wait has a time limit.

    .venv/bin/python bench/rpz.py [--names 1000000] [--change 100] [--rounds 20]
    .venv/bin/python bench/rpz.py --names 100000 --rounds 5      # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from dnslib import QTYPE, DNSRecord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from fill import fill_register  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.dnsfake import FakeDns  # noqa: E402
from tests.support.kzfixtures import Regulator, client_ssl, write_config  # noqa: E402
from tests.support.rpzpeers import KDIG, LOOPBACK, UnboundPeer, free_port, query, soa_serial  # noqa: E402

ORIGIN = "rpz.kzgate."
GOALS = {"notify_to_nxdomain_s_max": 1.0}


def probe_name(variant: str, k: int) -> str:
    return f"p{k}.{variant}.probe.test"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- kzgate's memory ------------------------------------------------------------------


def status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0; needs to own the process or root)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


# -- kdig --------------------------------------------------------------------------------


@dataclass
class Xfr:
    seconds: float  # wall time of the kdig process
    kdig_ms: float  # kdig's own "in N ms": from its query to the last message
    records: int
    messages: int
    bytes: int
    tail: str


async def kdig_stats(port: int, kind: str, out: Path, timeout: float) -> Xfr:
    """One ``kdig`` transfer (``AXFR`` or ``IXFR=N``): wall time and its counts.

    kdig prints every record of a transfer whatever the flags; it goes to
    ``out`` (a file, not a pipe this script would have to drain).
    """
    assert KDIG is not None, "kdig is not installed (Debian: knot-dnsutils)"
    cmd = [KDIG, f"@{LOOPBACK}", "-p", str(port), "+noall", "+stats", "+time=30", kind, ORIGIN]
    with out.open("wb") as sink:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=sink, stderr=asyncio.subprocess.STDOUT
        )
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        seconds = time.perf_counter() - started
    with out.open("rb") as f:
        f.seek(max(0, out.stat().st_size - 4000))
        tail = f.read().decode(errors="replace")
    out.unlink()
    # ";; Received 4986809 B (313 messages, 200003 records)" ... "in 574.2 ms"
    match = re.search(r"Received (\d+) B \((\d+) messages, (\d+) records\)", tail)
    took = re.search(r"\) in ([\d.]+) ms", tail)
    if proc.returncode != 0 or match is None or took is None or "ERROR" in tail:
        raise RuntimeError(f"kdig {kind} failed ({proc.returncode}):\n{tail[-2000:]}")
    size, messages, records = (int(g) for g in match.groups())
    return Xfr(round(seconds, 3), float(took.group(1)), records, messages, size, tail)


# -- a NOTIFY-timestamping relay between kzgate and Unbound ----------------------------


class NotifyRelay(asyncio.DatagramProtocol):
    """Forwards UDP from kzgate to Unbound and back, noting when each NOTIFY passed."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.notifies: list[tuple[float, int]] = []  # (monotonic time, serial)
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.clients: dict[int, tuple[str, int]] = {}  # DNS id -> kzgate's address

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.front, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(LOOPBACK, 0))
        self.back, _ = await loop.create_datagram_endpoint(
            lambda: _Back(self), local_addr=(LOOPBACK, 0)
        )
        return int(self.front.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or self.back is None:
            return
        if (data[2] >> 3) & 0xF == 4:  # opcode NOTIFY
            self.notifies.append((time.monotonic(), _notify_serial(data)))
        self.clients[int.from_bytes(data[:2], "big")] = addr
        self.back.sendto(data, self.target)

    def reply(self, data: bytes) -> None:
        addr = self.clients.pop(int.from_bytes(data[:2], "big"), None)
        if addr is not None and self.front is not None:
            self.front.sendto(data, addr)

    def close(self) -> None:
        for transport in (self.front, self.back):
            if transport is not None:
                transport.close()

    def first_notify_after(self, since: float, serial: int) -> float | None:
        return next((t for t, s in self.notifies if t >= since and s >= serial), None)


class _Back(asyncio.DatagramProtocol):
    def __init__(self, relay: NotifyRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.reply(data)


def _notify_serial(data: bytes) -> int:
    """The serial in a NOTIFY's answer-section SOA (RFC 1996 §3.7), or -1."""
    with contextlib.suppress(Exception):
        for rr in DNSRecord.parse(data).rr:
            if rr.rtype == QTYPE.SOA:
                return int(rr.rdata.times[0])
    return -1


# -- the run --------------------------------------------------------------------------------


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """POST a signed task; the monotonic time its receipt arrived."""
    async with session.post(url, data=body, headers={"Content-Type": "application/jose"}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
    return time.monotonic()


async def wait_serial(port: int, serial: int, timeout: float, interval: float = 0.005) -> float:
    """Wait until the server at ``port`` holds ``serial`` of ORIGIN; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await soa_serial(port, ORIGIN, timeout=0.5)
        if got is not None and got >= serial:
            return time.monotonic()
        await asyncio.sleep(interval)
    raise TimeoutError(f"127.0.0.1:{port} did not reach serial {serial} in {timeout} s")


async def wait_nxdomain(port: int, name: str, timeout: float, interval: float = 0.005) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = await query(port, name, timeout=0.5)
        if reply is not None and reply.rcode == "NXDOMAIN":
            return time.monotonic()
        await asyncio.sleep(interval)
    raise TimeoutError(f"{name} not NXDOMAIN at 127.0.0.1:{port} within {timeout} s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kzgate-rpzbench-"))
    pki = work / "pki"
    ensure_dev_material(pki)
    report: dict[str, Any] = {
        "workload": {
            "restricted_names": args.names,
            "zone_policy_records": 2 * args.names,
            "change_names": args.change,
            "rounds": args.rounds,
            "kzgate_dns": args.dns,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "unbound": _version(["unbound", "-V"]),
            "kdig": _version([KDIG or "kdig", "-V"]),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "goals": GOALS,
    }
    upstream = FakeDns(
        "\n".join(
            f"{probe_name(v, k)}. 60 IN A 192.0.2.1"
            for v in args.unbound
            for k in range(args.rounds)
        )
    )
    daemon: DaemonProcess | None = None
    unbound: UnboundPeer | None = None
    relay: NotifyRelay | None = None
    try:
        up = await upstream.start()
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.to_thread(fill_register, work / "kzgate.db", args.names), 900
        )
        report["register_fill_s"] = round(time.monotonic() - started, 1)

        relay = NotifyRelay((LOOPBACK, 0))  # pointed at each Unbound in turn
        relay_port = await relay.start()
        dns = {"enabled": True} if args.dns else {"enabled": False}
        config = write_config(
            work,
            pki,
            api={"rate_limit": {"per_second": 1e6, "burst": 1_000_000}},
            dns=dns,
            rpz={
                "enabled": True,
                "origin": ORIGIN,
                "listen": ["127.0.0.1:0"],
                "notify": [f"127.0.0.1:{relay_port}"],
                "allow_transfer": ["127.0.0.1/32"],
                "ixfr_history": 100,
            },
        )
        daemon = DaemonProcess(config)
        started = time.monotonic()
        await daemon.start(timeout=args.timeout)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        rpz_port = daemon.ports["rpz"]
        report["kzgate_start_to_ready_s"] = round(time.monotonic() - started, 2)
        serial0 = await soa_serial(rpz_port, ORIGIN)
        assert serial0 is not None, "kzgate does not answer its zone's SOA"
        report["kzgate_memory_after_start_mb"] = {
            "rss": mb(status_kb(pid, "VmRSS")),
            "peak_since_start": mb(status_kb(pid, "VmHWM")),
        }

        # 1. AXFR by kdig.
        axfrs: list[dict[str, Any]] = []
        for n in range(args.axfr_runs):
            rss_before = status_kb(pid, "VmRSS")
            reset = reset_peak(pid)
            xfr = await kdig_stats(rpz_port, "AXFR", work / "axfr.txt", args.timeout)
            if xfr.records != 2 * args.names + 3:  # SOA, NS, the policy records, SOA
                raise RuntimeError(f"AXFR has {xfr.records} records: {xfr.tail[-500:]}")
            axfrs.append(
                {
                    "seconds": xfr.seconds,
                    "kdig_ms": xfr.kdig_ms,
                    "records": xfr.records,
                    "messages": xfr.messages,
                    "mb": round(xfr.bytes / 2**20, 1),
                    "rss_before_mb": mb(rss_before),
                    "peak_during_mb": mb(status_kb(pid, "VmHWM")) if reset else None,
                }
            )
            print(f"[rpz bench] AXFR {n + 1}: {axfrs[-1]}", file=sys.stderr)
        median = statistics.median(a["seconds"] for a in axfrs)
        report["axfr"] = {
            "seconds_median": median,
            "records_per_second": round(axfrs[0]["records"] / median),
            "peak_rss_mb": max((a["peak_during_mb"] or 0.0) for a in axfrs),
            "runs": axfrs,
        }

        url = f"https://127.0.0.1:{daemon.ports['api']}/v1/tasks"
        sts = Regulator(pki, iss="sts", kid="sts-dev")  # "mci" has the pre-filled seqs
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
        async with aiohttp.ClientSession(connector=connector) as session:
            for variant in args.unbound:
                unbound = UnboundPeer(
                    work,
                    origin=ORIGIN,
                    primary=(LOOPBACK, rpz_port),
                    upstream=up,
                    verbosity=1,
                    zonefile=variant == "zonefile",
                    name=f"unbound-{variant}",
                )
                relay.target = (LOOPBACK, free_port())
                report[f"unbound_{variant}"] = await with_unbound(
                    unbound, variant, relay, session, url, sts, rpz_port, work, args
                )
                await unbound.stop()
                unbound = None

        report["kzgate_memory_at_end_mb"] = {
            "rss": mb(status_kb(pid, "VmRSS")),
            "peak_since_last_reset": mb(status_kb(pid, "VmHWM")),
        }
        report["kzgate_notify_total"] = await notify_counts(daemon)
        report["elapsed_s"] = round(time.monotonic() - begun, 1)
    finally:
        if unbound is not None:
            await unbound.stop()
        if daemon is not None and daemon.proc is not None and daemon.proc.returncode is None:
            daemon.kill()
            await daemon.wait()
        if relay is not None:
            relay.close()
        await upstream.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


async def with_unbound(
    unbound: UnboundPeer,
    variant: str,
    relay: NotifyRelay,
    session: aiohttp.ClientSession,
    url: str,
    sts: Regulator,
    rpz_port: int,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Steps 2-4 with one Unbound: its first load, a 100-name IXFR, the restrict rounds."""
    out: dict[str, Any] = {}
    serial0 = await soa_serial(rpz_port, ORIGIN)
    assert serial0 is not None
    # 2. Unbound's first load of the zone.
    started = time.monotonic()
    await unbound.start(port=relay.target[1], timeout=30)
    if unbound.port != relay.target[1]:
        raise RuntimeError("Unbound lost its port; kzgate's NOTIFY would miss it")
    loaded = await wait_serial(unbound.port, serial0, args.timeout, interval=0.1)
    out["first_load_s"] = round(loaded - started, 2)
    out["rss_mb"] = mb(status_kb(unbound.pid, "VmRSS"))

    # 3. IXFR of a 100-name change.
    before = serial0
    names = [f"c{i}.{variant}.change.kz" for i in range(args.change)]
    body = sts.sign(sts.restrict(f"CHANGE-{variant}", *(f"domain:{n}" for n in names)))
    received = await post(session, url, body)
    after = await soa_serial(rpz_port, ORIGIN)
    assert after is not None and after > before, (before, after)
    held = await wait_serial(unbound.port, after, 30)
    ixfr = await kdig_stats(rpz_port, f"IXFR={before}", work / "ixfr.txt", args.timeout)
    out["ixfr"] = {
        "kdig_seconds": ixfr.seconds,
        "kdig_ms": ixfr.kdig_ms,
        "records": ixfr.records,
        "incremental": ixfr.records < 2 * args.names,
        "serials": [before, after],
        "receipt_to_unbound_holding_it_s": round(held - received, 3),
    }

    # 4. Restrict → Unbound NXDOMAIN, one name at a time.
    rounds = []
    for k in range(args.rounds):
        name = probe_name(variant, k)
        reply = await query(unbound.port, name, timeout=2)
        if reply is None or reply.rcode != "NOERROR":
            raise RuntimeError(f"{name} should resolve before its restrict: {reply}")
        body = sts.sign(sts.restrict(f"PROBE-{variant}-{k}", f"domain:{name}"))
        sent = time.monotonic()
        received = await post(session, url, body)
        serial = await soa_serial(rpz_port, ORIGIN)
        assert serial is not None
        blocked = await wait_nxdomain(unbound.port, name, 10)
        notified = relay.first_notify_after(sent, serial)
        rounds.append(
            {
                "send_to_receipt_s": round(received - sent, 4),
                "receipt_to_nxdomain_s": round(blocked - received, 4),
                "notify_to_nxdomain_s": (
                    round(blocked - notified, 4) if notified is not None else None
                ),
                "receipt_to_notify_s": (
                    round(notified - received, 4) if notified is not None else None
                ),
            }
        )
        await asyncio.sleep(args.pause)
    out["restrict_to_nxdomain"] = summarize(rounds)
    return out


def summarize(rounds: list[dict[str, float | None]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rounds[0]:
        values = [float(v) for r in rounds if (v := r[key]) is not None]
        if values:
            out[key] = {
                "p50": round(statistics.median(values), 4),
                "max": round(max(values), 4),
                "n": len(values),
            }
    worst = out.get("notify_to_nxdomain_s", {}).get("max")
    out["goal_met"] = worst is not None and worst <= GOALS["notify_to_nxdomain_s_max"]
    out["rounds"] = rounds
    return out


async def notify_counts(daemon: DaemonProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    counts = {}
    for line in text.splitlines():
        match = re.match(r'kzgate_rpz_notify_total\{outcome="(\w+)"\} ([\d.e+]+)', line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


def _version(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0]
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--names", type=int, default=1_000_000, help="restricted names")
    parser.add_argument("--change", type=int, default=100, help="names in the IXFR change")
    parser.add_argument("--rounds", type=int, default=20, help="restrict → NXDOMAIN rounds")
    parser.add_argument("--axfr-runs", type=int, default=3, help="AXFRs timed")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds, per long step")
    parser.add_argument(
        "--unbound",
        type=lambda v: v.split(","),
        default=["zonefile", "memory"],
        help="Unbound set-ups to measure in turn: zonefile (rewritten after each\n"
        "transfer, as a restart-safe operator set-up has it), memory (none)",
    )
    parser.add_argument("--dns", action="store_true", help="keep kzgate's DNS resolver on")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
