"""The whole daemon with nftables enforcement, driven over its API, proven with real packets.

The daemon's nft enforcer works in the client namespace of a veth pair, on the
``output`` hook; the tests ping the server from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.names import IPNetwork
from kzgate.register.store import Register
from tests.support import netns
from tests.support.daemon_proc import DaemonProcess
from tests.support.kzfixtures import Regulator, client_ssl, write_config

pytestmark = netns.required

REPAIR_DEADLINE = 2.0  # drift is repaired within 1 s; a second more for scheduling
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


def nftables(pair: netns.Pair) -> dict[str, Any]:
    return {"enabled": True, "netns": pair.client, "hooks": ["output"]}


class Client:
    """The regulator's side of the API and a Prometheus scraper."""

    def __init__(self, session: aiohttp.ClientSession, api: int, metrics: int) -> None:
        self.session = session
        self.api = f"https://127.0.0.1:{api}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"

    async def post(self, body: bytes) -> tuple[int, Any]:
        async with self.session.post(
            self.api + "/v1/tasks", data=body, headers={"Content-Type": "application/jose"}
        ) as resp:
            return resp.status, await resp.json()

    async def sample(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0 when it is not exported yet)."""
        async with self.session.get(self.metrics_url) as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0


@contextlib.asynccontextmanager
async def session(pki: Path) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    async with aiohttp.ClientSession(connector=connector, timeout=HTTP_TIMEOUT) as made:
        yield made


@pytest.fixture
def pair() -> Iterator[netns.Pair]:
    with netns.namespace_pair() as made:
        yield made


@pytest.fixture
def mci(pki: Path) -> Regulator:
    return Regulator(pki)


@pytest.fixture
async def client(pair: netns.Pair, tmp_path: Path, pki: Path) -> AsyncIterator[Client]:
    """An in-process daemon enforcing in the pair's client namespace."""
    daemon = Daemon(load_config(write_config(tmp_path, pki, nftables=nftables(pair))))
    await daemon.start()
    try:
        async with session(pki) as made:
            yield Client(made, daemon.bound["api"][1], daemon.bound["metrics"][1])
    finally:
        await daemon.stop()


def everything_reachable(pair: netns.Pair) -> dict[str, bool]:
    return dict.fromkeys(pair.server_addresses, True)


def peer(pair: netns.Pair) -> set[IPNetwork]:
    return {ipaddress.ip_network(pair.server_v4), ipaddress.ip_network(pair.server_v6)}


# -- in-process daemon ----------------------------------------------------------


async def test_restrict_blocks_the_peer_and_resume_lifts_it(
    client: Client, pair: netns.Pair, mci: Regulator
) -> None:
    assert await netns.reachable_off_loop(pair) == everything_reachable(pair)
    task = mci.restrict("nft-1", f"ip:{pair.server_v4}", f"ip:{pair.server_v6}")
    status, receipt = await client.post(mci.sign(task))
    assert (status, receipt["status"]) == (200, "applied"), receipt
    assert await netns.read_sets_off_loop(pair) == peer(pair)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
    assert await client.sample("kzgate_nft_elements", family="ipv4") == 1
    assert await client.sample("kzgate_nft_elements", family="ipv6") == 1
    assert await client.sample("kzgate_nft_dropped_packets_total", family="ipv4") >= 1
    assert await client.sample("kzgate_nft_dropped_packets_total", family="ipv6") >= 1

    status, receipt = await client.post(mci.sign(mci.resume("nft-1")))
    assert (status, receipt["status"]) == (200, "applied"), receipt
    assert await netns.read_sets_off_loop(pair) == set()
    assert await netns.reachable_off_loop(pair) == everything_reachable(pair)
    assert await client.sample("kzgate_nft_elements", family="ipv4") == 0


@pytest.mark.parametrize(
    "drift",
    [
        "nft delete table inet kzgate",
        "nft flush set inet kzgate blocked_v6",
        "nft flush set inet kzgate blocked_hosts_v4",
    ],
)
async def test_external_changes_are_repaired_by_the_daemon(
    client: Client, pair: netns.Pair, mci: Regulator, drift: str
) -> None:
    task = mci.restrict("nft-2", f"ip:{pair.server_v4}", f"ip:{pair.server_v6}", "cidr:fd88::/64")
    assert (await client.post(mci.sign(task)))[1]["status"] == "applied"
    wanted = peer(pair) | {ipaddress.ip_network("fd88::/64")}
    assert await netns.read_sets_off_loop(pair) == wanted
    repairs = await client.sample("kzgate_enforcer_drift_repairs_total", enforcer="nft")

    await asyncio.to_thread(netns.run, pair.client, *drift.split())
    started = time.monotonic()
    # (The repair can beat a read of the sets; the counter below shows the drift was seen.)
    while (found := await netns.read_sets_off_loop(pair)) != wanted:
        assert time.monotonic() - started < REPAIR_DEADLINE, f"not repaired; the sets: {found}"
        await asyncio.sleep(0.05)
    while await client.sample("kzgate_enforcer_drift_repairs_total", enforcer="nft") <= repairs:
        assert time.monotonic() - started < REPAIR_DEADLINE + 1, "the repair was not counted"
        await asyncio.sleep(0.05)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)


# -- a child process, killed -----------------------------------------------------


def big_restrict(mci: Regulator, number: str, seed: int) -> dict[str, Any]:
    """About 50,000 disjoint prefixes: /28s of 100.64.0.0/10 and /64s of 2001:db8::/32."""
    rng = random.Random(seed)
    v4 = int(ipaddress.IPv4Address("100.64.0.0"))
    v6 = int(ipaddress.IPv6Address("2001:db8::"))
    targets = [
        f"cidr:{ipaddress.IPv4Address(v4 + (i << 4))}/28"
        for i in rng.sample(range(1 << 18), 49_000)
    ]
    targets += [
        f"cidr:{ipaddress.IPv6Address(v6 + (i << 64))}/64"
        for i in rng.sample(range(1 << 32), 1_000)
    ]
    return mci.restrict(number, *targets)


def committed(db: Path, iss: str, task_id: str) -> bool:
    """Whether the register holds the task (read-only, beside the running daemon)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT 1 FROM tasks WHERE iss = ? AND id = ?", (iss, task_id))
        return row.fetchone() is not None
    finally:
        con.close()


@contextlib.asynccontextmanager
async def child(config: Path) -> AsyncIterator[DaemonProcess]:
    """`kzgate run` as a child process, started; never left running, whatever happens."""
    daemon = DaemonProcess(config)
    try:
        await daemon.start(timeout=120)  # READY comes after the start-up reconcile
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


async def kill_once_committed(
    daemon: DaemonProcess, pki: Path, db: Path, task: dict[str, Any], delay: float, mci: Regulator
) -> None:
    """Post ``task`` and SIGKILL the daemon ``delay`` seconds after the register has it."""
    async with session(pki) as made:
        client = Client(made, daemon.ports["api"], daemon.ports["metrics"])
        post = asyncio.create_task(client.post(mci.sign(task)))
        try:
            async with asyncio.timeout(60):
                while not await asyncio.to_thread(committed, db, task["iss"], task["id"]):
                    assert not post.done(), f"answered before it was seen stored: {post.result()}"
                    await asyncio.sleep(0.002)
            await asyncio.sleep(delay)
        finally:
            daemon.kill()
            await daemon.wait()
            outcome = (await asyncio.gather(post, return_exceptions=True))[0]
    if delay == 0:
        # Killed at once, it never answered: the kill landed while the diff was applied.
        assert isinstance(outcome, aiohttp.ClientError), outcome


async def restart_and_compare(config: Path, db: Path, pair: netns.Pair) -> set[IPNetwork]:
    """Start the daemon again, read the kernel's sets, stop it; they must equal the register."""
    async with child(config):
        kernel = await netns.read_sets_off_loop(pair)
    register = await asyncio.to_thread(Register.open, db, create=False)
    try:
        enforced = set(register.state.snapshot().prefixes)
    finally:
        register.close()
    assert kernel is not None, "the daemon did not re-create its table"
    # Counts and a sample first, for a readable failure; then the whole sets.
    assert len(kernel) == len(enforced)
    sample = random.Random(7).sample(sorted(enforced, key=str), min(500, len(enforced)))
    assert [p for p in sample if p not in kernel] == []
    assert kernel == enforced
    return kernel


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05])
async def test_sigkill_during_a_large_batch_then_restart_equals_the_register(
    tmp_path: Path, pki: Path, pair: netns.Pair, mci: Regulator, delay: float
) -> None:
    config = write_config(tmp_path, pki, nftables=nftables(pair))
    db = load_config(config).register.path
    async with child(config) as daemon:
        async with session(pki) as made:
            client = Client(made, daemon.ports["api"], daemon.ports["metrics"])
            task = mci.restrict("small", f"ip:{pair.server_v4}", f"ip:{pair.server_v6}")
            assert (await client.post(mci.sign(task)))[1]["status"] == "applied"
        # A 50,000-prefix restrict, killed between its commit and its receipt.
        big = big_restrict(mci, "big", seed=int(delay * 1000))
        await kill_once_committed(daemon, pki, db, big, delay, mci)
    kernel = await restart_and_compare(config, db, pair)
    assert len(kernel) == 2 + 50_000  # the committed task is in force after the restart
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)

    # Its resume: 50,000 deletions in one batch, killed the same way.
    async with child(config) as daemon:
        await kill_once_committed(daemon, pki, db, mci.resume("big"), delay, mci)
    assert await restart_and_compare(config, db, pair) == peer(pair)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
