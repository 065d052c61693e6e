"""dns.workers: several forked resolvers on one port; every policy change reaches all of them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dnslib import DNSRecord

from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.dns.fastpath import FAST
from kzgate.dns.workers import WorkerPool
from kzgate.dns.workers.child import Setup, resolver_for
from kzgate.model import InstructionRef
from kzgate.nametable import DictNameTable
from kzgate.policy import PolicyIndex
from tests.support.kzfixtures import Regulator, push_task, write_config

WORKERS = 3
SOCKETS = 60  # distinct source ports, so SO_REUSEPORT spreads them over every worker


def rcodes(port: int, name: str) -> list[int]:
    """Ask ``name`` once from each of many fresh sockets; the rcode of each answer."""
    out = []
    for i in range(SOCKETS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            query = DNSRecord.question(name)
            query.header.id = i
            sock.sendto(query.pack(), ("127.0.0.1", port))
            out.append(DNSRecord.parse(sock.recv(4096)).header.rcode)
    return out


@pytest.fixture
async def daemon(tmp_path: Path, pki: Path) -> AsyncIterator[Daemon]:
    cfg = load_config(
        write_config(
            tmp_path, pki, dns={"listen": ["127.0.0.1:0"], "upstreams": [], "workers": WORKERS}
        )
    )
    daemon = Daemon(cfg)
    await daemon.start()
    yield daemon
    await daemon.stop()


async def push(daemon: Daemon, pki: Path, body: bytes) -> dict[str, object]:
    status, answer = await push_task(daemon.bound["api"][1], pki, body)
    assert status == 200, answer
    return answer


async def test_a_block_reaches_every_worker_before_the_receipt(daemon: Daemon, pki: Path) -> None:
    assert daemon.enforcers is not None
    pool = daemon.enforcers["dns-workers"]
    assert isinstance(pool, WorkerPool) and len(pool.workers) == WORKERS
    assert len({w.pid for w in pool.workers.values()}) == WORKERS
    port = daemon.bound["dns"][1]
    loop = asyncio.get_running_loop()
    # No upstreams: an allowed name gets SERVFAIL, a blocked one NXDOMAIN.
    assert set(await loop.run_in_executor(None, rcodes, port, "x.target.kz")) == {2}

    mci = Regulator(pki)
    receipt = await push(daemon, pki, mci.sign(mci.restrict("1", "domain:target.kz")))
    # received → applied on the daemon's side: every worker acknowledged within it.
    elapsed = (
        dt.datetime.fromisoformat(str(receipt["applied_at"]))
        - dt.datetime.fromisoformat(str(receipt["received_at"]))
    ).total_seconds()
    blocked_before = {s: w.snapshot.verdicts["blocked"] for s, w in pool.workers.items()}
    assert set(await loop.run_in_executor(None, rcodes, port, "x.target.kz")) == {3}
    await asyncio.sleep(1.0)  # workers report their counters twice a second
    for slot, worker in pool.workers.items():
        assert worker.snapshot.verdicts["blocked"] > blocked_before[slot], f"worker {slot} idle"
    assert elapsed < 0.1, elapsed

    await push(daemon, pki, mci.sign(mci.resume("1")))
    assert set(await loop.run_in_executor(None, rcodes, port, "x.target.kz")) == {2}


async def test_a_killed_worker_is_replaced_with_the_current_policy(
    daemon: Daemon, pki: Path
) -> None:
    assert daemon.enforcers is not None
    pool = daemon.enforcers["dns-workers"]
    assert isinstance(pool, WorkerPool)
    port = daemon.bound["dns"][1]
    mci = Regulator(pki)
    await push(daemon, pki, mci.sign(mci.restrict("1", "domain:kept.kz")))
    victim = pool.workers[0].pid
    os.kill(victim, signal.SIGKILL)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if pool.workers[0].pid != victim and pool.workers[0].ready.done():
            break
    assert pool.workers[0].pid != victim
    loop = asyncio.get_running_loop()
    assert set(await loop.run_in_executor(None, rcodes, port, "a.kept.kz")) == {3}
    # And it keeps receiving changes.
    await push(daemon, pki, mci.sign(mci.restrict("2", "domain:new.kz")))
    assert set(await loop.run_in_executor(None, rcodes, port, "new.kz")) == {3}


def test_workers_that_cannot_listen_stop_the_start_with_one_clear_line(
    tmp_path: Path, pki: Path
) -> None:
    import subprocess
    import sys

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:  # no SO_REUSEPORT
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        dns = {"listen": [f"127.0.0.1:{port}"], "upstreams": [], "workers": WORKERS}
        config = write_config(tmp_path, pki, dns=dns)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "kzgate", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert time.monotonic() - started < 20  # no fork storm, no 30 s hang
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kzgate: dns: cannot listen on 127.0.0.1:{port}"), last


def test_a_pure_python_worker_runs_no_c_on_queries(tmp_path: Path, pki: Path) -> None:
    cfg = load_config(write_config(tmp_path, pki)).dns
    index = PolicyIndex()
    ref = InstructionRef("mci", "77-1", "2026-11-01")
    index.set_domain("blocked.kz", ref)
    setup = Setup(index, cfg, cfg.listen, (), None, "python", core=True)
    pure, resolver = resolver_for(setup)
    assert resolver.fast is None and isinstance(pure.name_table, DictNameTable)
    assert pure.lookup_name("www.blocked.kz") == ref and pure.lookup_name("x.kz") is None
    pure.remove_domain("blocked.kz")  # a diff to the copy leaves the forked original alone
    assert index.lookup_name("blocked.kz") == ref
    same, resolver = resolver_for(dataclasses.replace(setup, engine="c"))
    assert resolver.fast is FAST and same is index
