"""How long a crashed DNS worker leaves its port unanswered, and what a client loses meanwhile.

Starts `kzgate run` on loopback (``dns.workers: 1``, the default) with
``--names`` restricted domains in its register. A client sends one query for a
restricted name every ``--interval`` ms from one UDP socket, all through each
trial; 0.2 s in, the worker is killed with SIGSEGV (its pid from GET /status),
as a bug in the C fast path would kill it. Per trial:

* answering again: from the kill to the first answer to a query sent after it;
* longest wait: the slowest answer to a query sent after the kill;
* lost: queries sent in the trial that were never answered (2 s allowed).

Between trials it waits out ``dns.crash_window`` (set to 1 s here), so every
crash is the first of its streak and is forked again at once (the back-off
only slows a worker that crashes again soon); ``crash_limit`` is set out of
reach so the worker stays on its engine. ``--engine python`` sets
``crash_limit: 1`` instead: the first crash moves the worker to pure Python
and every trial measures a pure-Python replacement, which first copies the
policy into a dict table.

    .venv/bin/python bench/worker_crash.py [--trials 30] [--names 100000] [--interval 1]
    .venv/bin/python bench/worker_crash.py --names 1000000 --trials 20
    .venv/bin/python bench/worker_crash.py --engine python --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dnslib import DNSRecord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from fill import fill_register, restricted_name  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.kzfixtures import write_config  # noqa: E402

KILL_AFTER = 0.2  # seconds of steady answers before the kill
KEEP_SENDING = 1.0  # seconds of queries after the kill
LATE = 2.0  # an answer later than this after its query counts as lost


@dataclass
class Trial:
    answering_again_ms: float
    longest_wait_ms: float
    sent: int
    lost: int


def status(metrics: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/status", timeout=5) as r:
        return dict(json.loads(r.read()))


def worker(metrics: int) -> dict[str, object]:
    dns = status(metrics)["dns"]
    assert isinstance(dns, dict)
    [only] = dns["workers"]
    return dict(only)


def wait_up(metrics: int, not_pid: int, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = worker(metrics)
        if w["pid"] != not_pid and w["state"] == "up":
            return w
        time.sleep(0.01)
    raise RuntimeError("the worker was not replaced")


def trial(dns: int, metrics: int, interval: float, names: int) -> Trial:
    victim = worker(metrics)
    assert victim["state"] == "up", victim
    queries = [DNSRecord.question(restricted_name(i % max(names, 1))).pack() for i in range(65536)]
    sent: dict[int, float] = {}
    answered: dict[int, float] = {}
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", dns))
        sock.settimeout(0.05)

        def receive() -> None:
            while not stop.is_set():
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except ConnectionRefusedError:  # ICMP port unreachable: nobody listened
                    continue
                answered.setdefault(int.from_bytes(data[:2], "big"), time.monotonic())

        reader = threading.Thread(target=receive)
        reader.start()
        started = time.monotonic()
        killed_at = None
        n = 0
        while True:
            now = time.monotonic()
            if killed_at is None and now - started >= KILL_AFTER:
                os.kill(int(str(victim["pid"])), signal.SIGSEGV)
                killed_at = now = time.monotonic()
            if killed_at is not None and now - killed_at >= KEEP_SENDING:
                break
            query = bytearray(queries[n % 65536])
            query[:2] = n.to_bytes(2, "big")
            sent[n] = time.monotonic()
            # ConnectionRefusedError: an earlier query's ICMP error, reported on this send
            with contextlib.suppress(ConnectionRefusedError):
                sock.send(query)
            n += 1
            time.sleep(interval)
        time.sleep(LATE)
        stop.set()
        reader.join()
    assert killed_at is not None
    after = [i for i, t in sent.items() if t >= killed_at]
    waits = [answered[i] - sent[i] for i in after if i in answered]
    first = min(answered[i] for i in after if i in answered)
    lost = sum(1 for i, t in sent.items() if answered.get(i, t + LATE + 1) - t > LATE)
    wait_up(metrics, int(str(victim["pid"])))
    return Trial(round((first - killed_at) * 1000, 2), round(max(waits) * 1000, 2), len(sent), lost)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="kzgate-crash-") as tmp:
        work = Path(tmp)
        pki = work / "pki"
        ensure_dev_material(pki)
        limit = 1 if args.engine == "python" else 1_000_000
        config = write_config(
            work,
            pki,
            dns={
                "listen": ["127.0.0.1:0"],
                "upstreams": [],
                "workers": 1,
                "crash_limit": limit,
                "crash_window": 1,
            },
        )
        if args.names:
            fill_register(work / "kzgate.db", args.names)
        daemon = DaemonProcess(config)
        await daemon.start(timeout=300)
        try:
            dns, metrics = daemon.ports["dns"], daemon.ports["metrics"]
            loop = asyncio.get_running_loop()
            first = worker(metrics)
            trials = []
            for i in range(args.trials):
                await asyncio.sleep(1.2)  # longer than crash_window: a fresh streak
                t = await loop.run_in_executor(None, trial, dns, metrics, args.interval, args.names)
                trials.append(t)
                print(f"trial {i + 1}: {t}", file=sys.stderr)
            last = worker(metrics)
        finally:
            daemon.kill()
            await daemon.wait()
    again = [t.answering_again_ms for t in trials]
    longest = [t.longest_wait_ms for t in trials]
    report = {
        "names": args.names,
        "engine": {"first": first["engine"], "measured": last["engine"]},
        "trials": len(trials),
        "interval_ms": args.interval * 1000,
        "answering_again_ms": {
            "p50": statistics.median(again),
            "p99": pct(again, 0.99),
            "max": max(again),
        },
        "longest_wait_ms": {"p50": statistics.median(longest), "max": max(longest)},
        "sent": sum(t.sent for t in trials),
        "lost": sum(t.lost for t in trials),
        "crashes": last["crashes"],
        # the machine's load: other work on it stretches every fork and start
        "loadavg_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=1.0, help="ms between queries")
    parser.add_argument("--engine", choices=("c", "python"), default="c")
    ns = parser.parse_args()
    ns.interval /= 1000
    asyncio.run(main(ns))
