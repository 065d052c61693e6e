"""DNS runs only in worker processes: a crashed worker costs milliseconds, never the control.

Each test runs `kzgate run` as a real process with the default single worker
and kills that worker as a bug would (SIGSEGV). The control process keeps the
DNS sockets open, so a query sent while no worker is alive waits in the
kernel's queue and is answered by the replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dnslib import RCODE, DNSRecord
from prometheus_client.parser import text_string_to_metric_families

from kzgate.dns.fastpath import FAST
from tests.support.daemon_proc import DaemonProcess
from tests.support.dnsfake import FakeDns
from tests.support.kzfixtures import Regulator, push_task, write_config

ZONE = """
www.allowed.kz. 300 IN A 198.51.100.20
www.blocked.kz. 300 IN A 198.51.100.30
www.late.kz. 300 IN A 198.51.100.40
"""
# bench/worker_crash.py measures the time from a worker's crash to answers again
# (p99 in bench/README.md, tens of milliseconds); this bound leaves room for a slow CI.
ANSWERING_AGAIN_WITHIN = 1.0
NOERROR, NXDOMAIN = RCODE.NOERROR, RCODE.NXDOMAIN


def ask(port: int, name: str, timeout: float = 5.0) -> tuple[int, float, list[str]]:
    """One UDP query: its rcode, how long the answer took, and the A records."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        started = time.monotonic()
        sock.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", port))
        answer = DNSRecord.parse(sock.recv(4096))
        return answer.header.rcode, time.monotonic() - started, [str(r.rdata) for r in answer.rr]


async def ask_async(port: int, name: str, timeout: float = 5.0) -> tuple[int, float, list[str]]:
    return await asyncio.get_running_loop().run_in_executor(None, ask, port, name, timeout)


class Kzgate:
    """A `kzgate run` child process, and what its metrics listener says."""

    def __init__(self, daemon: DaemonProcess, pki: Path) -> None:
        self.daemon = daemon
        self.pki = pki
        self.mci = Regulator(pki)
        self.dns = daemon.ports["dns"]
        self.api = daemon.ports["api"]
        self.metrics = daemon.ports["metrics"]

    async def get(self, path: str) -> str:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{self.metrics}{path}") as r,
        ):
            assert r.status == 200
            return await r.text()

    async def workers(self) -> list[dict[str, Any]]:
        import json

        return list(json.loads(await self.get("/status"))["dns"]["workers"])

    async def metric(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(await self.get("/metrics")):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise AssertionError(f"no sample {name}{labels}")

    async def replaced(self, pid: int, timeout: float = 10.0) -> dict[str, Any]:
        """Worker 0 once a process other than ``pid`` serves in its place."""
        async with asyncio.timeout(timeout):
            while True:
                [worker] = await self.workers()
                if worker["pid"] != pid and worker["state"] == "up":
                    return worker
                await asyncio.sleep(0.01)

    async def push(self, task: dict[str, Any]) -> dict[str, Any]:
        status, receipt = await push_task(self.api, self.pki, self.mci.sign(task))
        assert status == 200, receipt
        return receipt

    async def crash(self) -> int:
        """SIGSEGV worker 0; its pid."""
        [worker] = await self.workers()
        assert worker["state"] == "up", worker
        os.kill(worker["pid"], signal.SIGSEGV)
        return int(worker["pid"])


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    fake = FakeDns(ZONE)
    _, port = await fake.start()
    yield port
    await fake.close()


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def started(tmp_path: Path, pki: Path, upstream: int, **dns: Any) -> Kzgate:
    config = write_config(
        tmp_path,
        pki,
        metrics_port=free_tcp_port(),  # `kzgate status` finds the daemon by its config
        dns={"listen": ["127.0.0.1:0"], "upstreams": [f"127.0.0.1:{upstream}"], **dns},
    )
    daemon = DaemonProcess(config)
    await daemon.start()
    return Kzgate(daemon, pki)


async def stopped(kz: Kzgate) -> int:
    if kz.daemon.proc is not None and kz.daemon.proc.returncode is None:
        kz.daemon.signal(signal.SIGTERM)
    return await asyncio.wait_for(kz.daemon.wait(), 30)


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def listening_inode(port: int) -> str:
    """The inode of the TCP socket listening on 127.0.0.1:``port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if local == f"0100007F:{port:04X}" and state == "0A":
            return inode
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def files(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


async def test_a_segfaulted_worker_costs_milliseconds_and_the_api_never_stops(
    tmp_path: Path, pki: Path, upstream: int
) -> None:
    kz = await started(tmp_path, pki, upstream)
    try:
        assert kz.daemon.proc is not None
        control = kz.daemon.proc.pid
        [first] = await kz.workers()
        assert first["state"] == "up" and first["pid"] != control  # DNS is not in this process
        assert first["engine"] == ("c" if FAST is not None else "python")

        victim = await kz.crash()
        # Sent at once: the worker is dead or dying, its replacement not yet forked.
        answered = asyncio.ensure_future(ask_async(kz.dns, "www.allowed.kz"))
        receipt = await kz.push(kz.mci.restrict("1", "domain:blocked.kz"))  # the API answers
        assert receipt["status"] == "applied", receipt
        rcode, took, records = await answered
        print(f"\nworker crash -> answer: {took * 1000:.1f} ms")
        assert (rcode, records) == (NOERROR, ["198.51.100.20"])
        assert took < ANSWERING_AGAIN_WITHIN, took

        worker = await kz.replaced(victim)
        assert worker["crashes"] == 1 and worker["engine"] == first["engine"]
        # The restrict pushed around the crash is in force in the replacement.
        assert (await ask_async(kz.dns, "www.blocked.kz"))[0] == NXDOMAIN
        line = await kz.daemon.wait_log(f"DNS worker 0 (pid {victim},")
        assert "was killed by SIGSEGV: crash 1 of this worker" in line, line
        # Its fault handler's report: the Python stack where it was when it died.
        report = await kz.daemon.wait_log(f"DNS worker 0 (pid {victim}) crash report:")
        assert "ERROR" in report
        assert "Fatal Python error: Segmentation fault" in "".join(kz.daemon.log)
        assert await kz.metric("kzgate_dns_worker_crashes_total") == 1

        # The replacement was forked after the API and metrics listeners were bound, and
        # holds neither them nor the register's files; the control process holds all.
        api, metrics = listening_inode(kz.api), listening_inode(kz.metrics)
        assert {api, metrics} <= socket_inodes(control)
        assert not {api, metrics} & socket_inodes(worker["pid"])
        register = str(tmp_path / "kzgate.db")
        assert register in files(control)
        assert not [f for f in files(worker["pid"]) if f.startswith(register)]
    finally:
        code = await stopped(kz)
    assert code == 0
    # Stopping is not a crash: no second crash line, and the worker is gone with it.
    assert not [x for x in kz.daemon.log if "crash 2 of this worker" in x], kz.daemon.log
    with pytest.raises(ProcessLookupError):
        os.kill(worker["pid"], 0)


async def test_a_crash_never_resets_the_back_off_and_what_is_pushed_meanwhile_is_in_force(
    tmp_path: Path, pki: Path, upstream: int
) -> None:
    kz = await started(tmp_path, pki, upstream, crash_limit=100, crash_window=60)
    try:
        waits = []
        for n in range(1, 6):
            victim = await kz.crash()
            await kz.replaced(victim)  # each one served before it was killed
            line = await kz.daemon.wait_log(f"DNS worker 0 (pid {victim},")
            assert f"crash {n} of this worker" in line, line
            found = re.search(r"re-fork (?:at once|after ([\d.]+) s)$", line.strip())
            assert found, line
            waits.append(float(found.group(1) or 0))
        assert waits == [0.0, 0.05, 0.1, 0.2, 0.4]

        # The sixth crash waits 0.8 s: no worker at all meanwhile. A query sent now is
        # queued, not refused; a restrict sent now is applied once the replacement is up.
        victim = await kz.crash()
        answered = asyncio.ensure_future(ask_async(kz.dns, "www.allowed.kz"))
        receipt = await kz.push(kz.mci.restrict("7", "domain:late.kz"))
        assert receipt["status"] == "applied", receipt
        took = dt.datetime.fromisoformat(receipt["applied_at"]) - dt.datetime.fromisoformat(
            receipt["received_at"]
        )
        assert took.total_seconds() > 0.5, took  # it waited for the replacement
        rcode, waited, records = await answered
        assert (rcode, records) == (NOERROR, ["198.51.100.20"]) and waited > 0.5, waited
        await kz.replaced(victim)
        assert (await ask_async(kz.dns, "www.late.kz"))[0] == NXDOMAIN

        # The seventh waits 1.6 s; a resume sent meanwhile is in force afterwards.
        victim = await kz.crash()
        receipt = await kz.push(kz.mci.resume("7"))
        assert receipt["status"] == "applied", receipt
        await kz.replaced(victim)
        rcode, _, records = await ask_async(kz.dns, "www.late.kz")
        assert (rcode, records) == (NOERROR, ["198.51.100.40"])
        assert "after 1.6 s" in await kz.daemon.wait_log(f"DNS worker 0 (pid {victim},")
        assert await kz.metric("kzgate_dns_worker_crashes_total") == 7
    finally:
        assert await stopped(kz) == 0


async def test_repeated_crashes_move_the_worker_to_pure_python_which_still_enforces(
    tmp_path: Path, pki: Path, upstream: int
) -> None:
    kz = await started(tmp_path, pki, upstream, crash_limit=3, crash_window=60)
    try:
        await kz.push(kz.mci.restrict("1", "domain:blocked.kz"))
        for _ in range(3):
            worker = await kz.replaced(await kz.crash())
        assert worker["engine"] == "python" and worker["crashes"] == 3
        if FAST is not None:
            line = await kz.daemon.wait_log("now runs the pure-Python engine")
            assert "ERROR" in line and "DNS worker 0 crashed 3 times within 60 s" in line
        assert await kz.metric("kzgate_dns_workers", engine="python") == 1
        assert await kz.metric("kzgate_dns_workers", engine="c") == 0
        assert await kz.metric("kzgate_dns_worker_crashes_total") == 3
        status = subprocess.run(
            [sys.executable, "-m", "kzgate", "status", "--config", str(kz.daemon.config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        [dns] = [x for x in status.splitlines() if x.startswith("dns ")]
        assert "3 crashes" in dns and ("OFF on 1" in dns or FAST is None), dns

        # It answers as the engine always did: blocked NXDOMAIN, allowed forwarded.
        assert (await ask_async(kz.dns, "www.blocked.kz"))[0] == NXDOMAIN
        assert (await ask_async(kz.dns, "blocked.kz"))[0] == NXDOMAIN
        rcode, _, records = await ask_async(kz.dns, "www.allowed.kz")
        assert (rcode, records) == (NOERROR, ["198.51.100.20"])
        # And takes every change: the resume reaches it.
        await kz.push(kz.mci.resume("1"))
        rcode, _, records = await ask_async(kz.dns, "www.blocked.kz")
        assert (rcode, records) == (NOERROR, ["198.51.100.30"])
    finally:
        assert await stopped(kz) == 0
