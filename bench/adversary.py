"""Adversary benchmark: hostile input at every listener, while enforcement must hold.

Workload model: a subscriber-side attacker and a broken or spoofing upstream,
all on loopback. Each batch sends

- hostile DNS queries over UDP (mutated valid queries, hand-made shapes that
  broke DNS parsers before, random bytes of every length UDP allows), at a
  paced rate, from several source ports; the upstream answers forwards with
  mutated replies, random bytes, wrong IDs or nothing;
- a TCP flood at the DNS port: many connections pipelining hostile messages of
  every length TCP allows, stalled lengths, one-octet dribbles;
- junk at the RPZ transfer listener (UDP and TCP, from inside and outside its ACL);
- junk and slow clients at the HTTPS API: raw bytes, TLS without a client
  certificate, slow headers, mutated task bodies, junk paths and parameters;

and then checks, with the attack's connections still open where it matters,
that a restricted name still gets NXDOMAIN (UDP and TCP), an allowed name
resolves, a new restrict is accepted and blocks its name at once, and an AXFR
from an allowed secondary succeeds. It reports counts, control-process crashes
(goal 0), DNS worker re-forks, answers seen, and RSS before and after.

    .venv/bin/python bench/adversary.py [--queries 1000000] [--batches 10] [--rate 40000] [--seed 1]

Bounded: --queries packets in all, --max-seconds overall; loopback only; seeded.
Exit status 1 when the control process died, a DNS worker crashed, or any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness
sys.path.insert(0, str(ROOT / "bench"))

import hostile  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.kzfixtures import Regulator, client_ssl, write_config  # noqa: E402

BLOCKED = "blocked.adversary.kz"
ALLOWED = "ok.adversary.kz"
ALLOWED_ADDRESS = "192.0.2.77"
RPZ_ORIGIN = "rpz.kzgate."
# The checks ask from 127.0.0.1 (the honest subscriber and secondary). The attack
# comes from elsewhere: one heavy address and fifty others (per-client caps
# cannot tell two clients on one address apart, nor should they), and, at the
# RPZ listener, a host inside allow_transfer turned hostile.
ATTACKERS = ["127.0.0.2", *(f"127.0.1.{i}" for i in range(1, 51))]
RPZ_PEER_ATTACKER = "127.0.0.3"


# -- the hostile upstream (a child process: it must not share our CPU time slice) --


def serve_upstream(seed: int) -> None:
    """Answer on UDP and TCP: the probe name correctly, everything else hostile."""
    import threading

    from dnslib import QTYPE, RR, A, DNSRecord

    rng = random.Random(seed)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(128)
    print(port, flush=True)

    def reply_to(data: bytes, local: random.Random) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ALLOWED_ADDRESS), ttl=5))
        answer = bytes(reply.pack())
        if name == ALLOWED:
            return answer
        return hostile.upstream_reply(local, answer)

    def tcp_client(conn: socket.socket, local: random.Random) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            while True:
                head = conn.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                data = conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
                out = reply_to(data, local)
                if out is not None:
                    conn.sendall(len(out[:65535]).to_bytes(2, "big") + out[:65535])

    def accept() -> None:
        n = 0
        while True:
            conn, _ = tcp.accept()
            n += 1
            threading.Thread(
                target=tcp_client, args=(conn, random.Random(seed * 1000 + n)), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()
    while True:
        data, addr = udp.recvfrom(65535)
        out = reply_to(data, rng)
        if out is not None:
            with contextlib.suppress(OSError):
                udp.sendto(out, addr)


# -- observing the daemon -----------------------------------------------------------


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def scrape(port: int) -> dict[str, float]:
    """Every sample of the metrics endpoint, keyed by name{labels}; {} when it does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, OSError):
        return {}  # the daemon is gone: the caller reports that
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(name + "{"))


# -- the attacks --------------------------------------------------------------------


def blast_udp(port: int, count: int, rate: float, rng: random.Random) -> dict[str, Any]:
    """Send ``count`` hostile datagrams at ``rate`` per second from 16 attacker sockets."""
    socks = []
    for k in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((ATTACKERS[k % len(ATTACKERS)], 0))
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    kinds: Counter[str] = Counter()
    sizes: list[int] = []
    replies = send_errors = 0
    started = time.monotonic()
    for i in range(count):
        kind, data = hostile.dns_query(rng)
        kinds[kind] += 1
        sizes.append(len(data))
        try:
            socks[i % 16].send(data)
        except OSError:
            send_errors += 1  # e.g. a datagram the local stack refuses; counted, not fatal
        if i % 256 == 255:
            replies += _drain(socks)
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    time.sleep(0.3)
    replies += _drain(socks)
    for s in socks:
        s.close()
    return {
        "sent": count,
        "kinds": dict(kinds),
        "max_size": max(sizes, default=0),
        "median_size": statistics.median(sizes) if sizes else 0,
        "replies": replies,
        "send_errors": send_errors,
        "seconds": round(time.monotonic() - started, 2),
    }


def _drain(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        while True:
            try:
                s.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            n += 1
    return n


async def tcp_flood(
    port: int, rng: random.Random, conns: int, seconds: float, sources: list[str]
) -> dict[str, Any]:
    """Many connections, each pipelining hostile messages, stalling or dribbling; the
    k-th connection comes from ``sources[k % len(sources)]``."""
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def one(seed: int, source: str) -> None:
        local = random.Random(seed)
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0)
                )
            except OSError:
                stats["connect_refused"] += 1
                await asyncio.sleep(0.1)
                continue
            stats["connections"] += 1
            drain = asyncio.create_task(_discard(reader, stats))
            try:
                while time.monotonic() < deadline:
                    mode = local.random()
                    if mode < 0.6:
                        for _ in range(local.randint(1, 20)):
                            _, data = hostile.dns_query(local, hostile.TCP_MAX)
                            writer.write(len(data).to_bytes(2, "big") + data)
                            stats["messages"] += 1
                    elif mode < 0.75:  # a length, then less than it promised, then silence
                        writer.write(b"\xff\xff" + local.randbytes(local.randint(0, 100)))
                        stats["stalls"] += 1
                        await asyncio.sleep(min(2.0, deadline - time.monotonic()))
                    elif mode < 0.9:  # one octet at a time
                        _, data = hostile.dns_query(local, 512)
                        for b in len(data).to_bytes(2, "big") + data[:20]:
                            writer.write(bytes([b]))
                            await asyncio.sleep(0.05)
                        stats["dribbles"] += 1
                    else:  # lengths below a header, then random bytes
                        writer.write(local.randrange(12).to_bytes(2, "big") + local.randbytes(30))
                        stats["short"] += 1
                    await asyncio.wait_for(writer.drain(), 2.0)
                    if drain.done():
                        break  # the server closed this one
            except (OSError, TimeoutError):
                stats["closed_by_server"] += 1
            finally:
                drain.cancel()
                writer.transport.abort()

    await asyncio.gather(
        *(one(rng.randrange(2**32), sources[k % len(sources)]) for k in range(conns))
    )
    return dict(stats)


async def _discard(reader: asyncio.StreamReader, stats: Counter[str]) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            stats["bytes_back"] += len(data)


async def api_attack(
    port: int, pki: Path, rng: random.Random, valid_body: bytes, seconds: float
) -> dict[str, Any]:
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def raw_junk() -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(hostile.random_bytes(rng, 20_000))
                await asyncio.wait_for(writer.drain(), 1.0)
                writer.transport.abort()
                stats["raw_junk"] += 1

    async def no_cert() -> None:
        ctx = client_ssl(pki, with_cert=False)
        while time.monotonic() < deadline:
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
                    s.get(f"https://127.0.0.1:{port}/v1/instructions") as r,
                ):
                    stats[f"no_cert_status_{r.status}"] += 1
            except (aiohttp.ClientError, OSError, ssl.SSLError):
                stats["no_cert_refused"] += 1

    async def slow_headers() -> None:
        ctx = client_ssl(pki)
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            writer.write(b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < deadline and not reader.at_eof():
                writer.write(b"X")
                await asyncio.wait_for(writer.drain(), 1.0)
                await asyncio.sleep(0.5)
            stats["slow_headers_done"] += 1
            writer.transport.abort()

    async def junk_requests() -> None:
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki), limit=8)
        async with aiohttp.ClientSession(connector=connector) as s:
            while time.monotonic() < deadline:
                roll = rng.random()
                try:
                    if roll < 0.6:
                        ctype = rng.choice(
                            ("application/jose", "application/jose", "text/plain", "")
                        )
                        async with s.post(
                            f"https://127.0.0.1:{port}/v1/tasks",
                            data=hostile.jws_junk(rng, valid_body),
                            headers={"Content-Type": ctype} if ctype else {},
                        ) as r:
                            await r.read()
                            stats[f"status_{r.status}"] += 1
                    else:
                        junk = rng.randbytes(rng.randint(0, 40)).hex()
                        path = rng.choice(
                            (
                                f"/v1/tasks/{junk}/{junk}",
                                f"/v1/lookup?name={junk}",
                                f"/v1/lookup?ip={junk}",
                                f"/v1/instructions?limit={junk}&offset=-1",
                                f"/v1/{junk}",
                            )
                        )
                        async with s.get(f"https://127.0.0.1:{port}{path}") as r:
                            await r.read()
                            stats[f"status_{r.status}"] += 1
                except (aiohttp.ClientError, OSError) as exc:
                    stats[f"client_error_{type(exc).__name__}"] += 1

    await asyncio.gather(
        raw_junk(), no_cert(), *(slow_headers() for _ in range(20)), junk_requests()
    )
    return dict(stats)


def udp_junk(port: int, rng: random.Random, count: int, source: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for _ in range(count):
            with contextlib.suppress(OSError):
                s.sendto(hostile.dns_query(rng)[1], ("127.0.0.1", port))
    return count


# -- the checks -----------------------------------------------------------------------


async def dns_checks(port: int, blocked: list[str]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for via in ("udp", "tcp"):
        for name in blocked:
            out[f"{via}:{name}:nxdomain"] = await _rcode(port, name, via) == dns.rcode.NXDOMAIN
        q = dns.message.make_query(ALLOWED, "A")
        try:
            r = await _ask(q, port, via)
            out[f"{via}:{ALLOWED}:resolves"] = any(
                ALLOWED_ADDRESS in rrset.to_text() for rrset in r.answer
            )
        except Exception:
            out[f"{via}:{ALLOWED}:resolves"] = False
    return out


async def _ask(q: dns.message.Message, port: int, via: str) -> dns.message.Message:
    for _ in range(3):  # a UDP answer can be lost under load: ask again
        try:
            if via == "udp":
                return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
            return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=5)
        except TimeoutError:
            continue
    raise TimeoutError(f"no {via} answer")


async def _rcode(port: int, name: str, via: str) -> int:
    try:
        return (await _ask(dns.message.make_query(name, "A"), port, via)).rcode()
    except Exception:
        return -1


def axfr_ok(port: int, expect: str) -> bool:
    try:
        names = set()
        for message in dns.query.xfr("127.0.0.1", RPZ_ORIGIN, port=port, lifetime=15):
            names.update(str(rrset.name) for rrset in message.answer)
        return any(expect in n for n in names)
    except Exception:
        return False


async def push(port: int, pki: Path, body: bytes) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.post(
                f"https://127.0.0.1:{port}/v1/tasks",
                data=body,
                headers={"Content-Type": "application/jose"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as r,
        ):
            return r.status, str((await r.json()).get("status"))
    except Exception as exc:
        return -1, type(exc).__name__


# -- the run ------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kzgate-adversary-"))
    pki = work / "pki"
    ensure_dev_material(pki)
    upstream = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream", str(args.seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None
    upstream_port = int(upstream.stdout.readline())
    config = write_config(
        work,
        pki,
        api={"rate_limit": {"per_second": 1e6, "burst": 1_000_000}},
        dns={"listen": ["127.0.0.1:0"], "upstreams": [f"127.0.0.1:{upstream_port}"]},
        rpz={
            "enabled": True,
            "listen": ["127.0.0.1:0"],
            "notify": [],
            "allow_transfer": ["127.0.0.1/32", f"{RPZ_PEER_ATTACKER}/32"],
        },
    )
    daemon = DaemonProcess(config)
    try:
        await daemon.start(timeout=60)
    except BaseException:
        upstream.kill()
        raise
    assert daemon.proc is not None
    control = daemon.proc.pid
    ports = daemon.ports
    mci = Regulator(pki)
    report: dict[str, Any] = {"seed": args.seed, "config": str(config), "batches": []}
    failures: list[str] = []
    started = time.monotonic()
    try:
        status, outcome = await push(
            ports["api"], pki, mci.sign(mci.restrict("ADV-0", f"domain:{BLOCKED}"))
        )
        if status != 200:
            raise RuntimeError(f"the first restrict was not accepted: {status} {outcome}")
        blocked = [BLOCKED, "deep.www." + BLOCKED]
        workers_seen = children(control)
        first_metrics = await scrape(ports["metrics"])
        report["rss_mb_before"] = {
            "control": round(rss_mb(control), 1),
            "workers": [round(rss_mb(p), 1) for p in sorted(workers_seen)],
        }
        per_batch = args.queries // args.batches
        for b in range(args.batches):
            if time.monotonic() - started > args.max_seconds:
                failures.append(f"stopped at batch {b}: --max-seconds reached")
                break
            batch: dict[str, Any] = {"batch": b}
            before = await scrape(ports["metrics"])
            batch["udp"] = await asyncio.to_thread(
                blast_udp, ports["dns"], per_batch, args.rate, random.Random(rng.randrange(2**32))
            )
            after = await scrape(ports["metrics"])
            batch["udp"]["counted_by_server"] = int(
                total(after, "kzgate_dns_queries_total") - total(before, "kzgate_dns_queries_total")
            )
            # TCP flood, with the honest checks made while it is running.
            flood = asyncio.create_task(
                tcp_flood(ports["dns"], rng, args.tcp_conns, args.phase_seconds, ATTACKERS)
            )
            await asyncio.sleep(args.phase_seconds / 2)
            batch["checks_during_tcp_flood"] = await dns_checks(ports["dns"], blocked)
            batch["tcp"] = await flood
            # RPZ: junk over UDP and TCP, from inside and outside the ACL, then a transfer.
            rpz_flood = asyncio.gather(
                tcp_flood(ports["rpz"], rng, 40, args.phase_seconds / 2, [RPZ_PEER_ATTACKER]),
                tcp_flood(ports["rpz"], rng, 40, args.phase_seconds / 2, ATTACKERS),
            )
            junk = await asyncio.to_thread(udp_junk, ports["rpz"], rng, 2000, ATTACKERS[0])
            junk += await asyncio.to_thread(udp_junk, ports["rpz"], rng, 2000, RPZ_PEER_ATTACKER)
            await asyncio.sleep(args.phase_seconds / 4)
            batch["axfr_during_rpz_flood"] = await asyncio.to_thread(axfr_ok, ports["rpz"], BLOCKED)
            inside, outside = await rpz_flood
            batch["rpz"] = {"udp_junk": junk, "tcp_inside_acl": inside, "tcp_outside_acl": outside}
            # The API: junk and slow clients, then an honest task while they are still there.
            valid = mci.sign(mci.restrict(f"ADV-J{b}", f"domain:junk{b}.adversary.kz"))
            attack = asyncio.create_task(
                api_attack(ports["api"], pki, rng, valid, args.phase_seconds)
            )
            await asyncio.sleep(args.phase_seconds / 2)
            name = f"new{b}.adversary.kz"
            status, outcome = await push(
                ports["api"], pki, mci.sign(mci.restrict(f"ADV-{b + 1}", f"domain:{name}"))
            )
            batch["task_during_api_attack"] = {"status": status, "outcome": outcome}
            batch["api"] = await attack
            blocked.append(name)
            batch["checks_after"] = await dns_checks(ports["dns"], [BLOCKED, name])
            now_workers = children(control)
            batch["new_worker_pids"] = len(now_workers - workers_seen)
            workers_seen |= now_workers
            batch["control_alive"] = daemon.proc.returncode is None
            report["batches"].append(batch)
            for key in ("checks_during_tcp_flood", "checks_after"):
                failures += [f"batch {b} {key} {k}" for k, ok in batch[key].items() if not ok]
            if status != 200 or outcome != "applied":
                failures.append(f"batch {b}: honest task got {status} {outcome}")
            if not batch["axfr_during_rpz_flood"]:
                failures.append(f"batch {b}: AXFR failed during the RPZ flood")
            five_xx = {k: v for k, v in batch["api"].items() if k.startswith("status_5")}
            if five_xx:
                failures.append(f"batch {b}: API answered {five_xx}")
            if not batch["control_alive"]:
                failures.append(f"batch {b}: the control process died")
                break
            print(
                json.dumps({"batch": b, "udp_sent": batch["udp"]["sent"], "ok": not failures}),
                file=sys.stderr,
                flush=True,
            )
        last = await scrape(ports["metrics"]) if daemon.proc.returncode is None else {}
        report["rss_mb_after"] = {
            "control": round(rss_mb(control), 1),
            "workers": [round(rss_mb(p), 1) for p in sorted(children(control))],
        }
        report["totals"] = {
            "udp_sent": sum(b["udp"]["sent"] for b in report["batches"]),
            "udp_counted_by_server": sum(b["udp"]["counted_by_server"] for b in report["batches"]),
            "tcp_messages": sum(b["tcp"].get("messages", 0) for b in report["batches"]),
            "api_requests": sum(
                v for b in report["batches"] for k, v in b["api"].items() if k.startswith("status_")
            ),
            "worker_pids_replaced": sum(b["new_worker_pids"] for b in report["batches"]),
            "worker_crashes_metric": total(last, "kzgate_dns_worker_crashes_total")
            - total(first_metrics, "kzgate_dns_worker_crashes_total"),
            "control_process_crashes": 0 if daemon.proc.returncode is None else 1,
            "seconds": round(time.monotonic() - started, 1),
        }
        crashed = (
            report["totals"]["worker_crashes_metric"] + report["totals"]["worker_pids_replaced"]
        )
        if crashed:
            failures.append(f"DNS workers crashed or were replaced: {crashed}")
    finally:
        report["failures"] = failures
        if daemon.proc.returncode is None:
            daemon.kill()
        await daemon.wait()
        upstream.kill()
        upstream.wait()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=1_000_000, help="hostile UDP queries in all")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rate", type=float, default=40_000, help="UDP queries per second")
    parser.add_argument("--tcp-conns", type=int, default=200)
    parser.add_argument("--phase-seconds", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--serve-upstream", type=int, metavar="SEED", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream is not None:
        serve_upstream(args.serve_upstream)
        return
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
