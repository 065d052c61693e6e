"""kzgate itself feeding BIRD: restricts reach the border router as RTBH routes.

**Needs the routes enforcer (kzgate/enforce/routes/, branch i13-rnet).** Until
it is merged this module skips (and a strict run, scripts/test, fails on the
unlisted skip): it is written against the config keys of issue 13,
``routes: {enabled, table: 666, type: blackhole, protocol: 252, netns}``, with
kzgate's sockets opened in the kzgate host's namespace of tests/support/birdnet.py,
where BIRD runs configs/bird-rtbh.conf.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.register.store import Register
from tests.integration.daemon.test_nft import Client, child, kill_once_committed, session
from tests.support import birdnet, netns
from tests.support.kzfixtures import Regulator, write_config

pytest.importorskip(
    "kzgate.enforce.routes",
    reason="needs the routes enforcer kzgate/enforce/routes (issue 13, branch i13-rnet)",
)

pytestmark = netns.required

RTBH = frozenset({birdnet.BLACKHOLE, birdnet.NO_EXPORT})
REPAIR_DEADLINE = 3.0  # kzgate repairs within ~1 s; BIRD and BGP add milliseconds


def routes(net: birdnet.BirdNet) -> dict[str, Any]:
    return {
        "enabled": True,
        "table": birdnet.TABLE,
        "type": "blackhole",
        "protocol": birdnet.PROTO,
        "netns": net.host,
    }


@pytest.fixture(scope="module")
def bnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[birdnet.BirdNet]:
    with birdnet.birdnet(tmp_path_factory.mktemp("bird")) as made:
        yield made


@pytest.fixture
def net(bnet: birdnet.BirdNet) -> Iterator[birdnet.BirdNet]:
    """The module's topology; kzgate leaves its routes when it stops (fail closed): flushed here."""
    yield bnet
    bnet.flush()
    bnet.wait_imported(0, timeout=30)


@pytest.fixture
def mci(pki: Path) -> Regulator:
    return Regulator(pki)


@pytest.fixture
async def client(net: birdnet.BirdNet, tmp_path: Path, pki: Path) -> AsyncIterator[Client]:
    """An in-process daemon writing kzgate's table in the kzgate host's namespace."""
    daemon = Daemon(load_config(write_config(tmp_path, pki, routes=routes(net))))
    await daemon.start()
    try:
        async with session(pki) as made:
            yield Client(made, daemon.bound["api"][1], daemon.bound["metrics"][1])
    finally:
        await daemon.stop()


async def router(net: birdnet.BirdNet, wanted: dict[str, bool]) -> dict[str, birdnet.Route]:
    return await asyncio.to_thread(net.wait_router, wanted)


async def applied(client: Client, mci: Regulator, task: dict[str, Any]) -> None:
    status, receipt = await client.post(mci.sign(task))
    assert (status, receipt["status"]) == (200, "applied"), receipt


async def test_restrict_reaches_the_router_and_resume_withdraws_it(
    client: Client, net: birdnet.BirdNet, mci: Regulator
) -> None:
    v4, v6 = net.targets_v4[0], net.targets_v6[0]
    await applied(client, mci, mci.restrict("rt-1", f"ip:{v4}", f"ip:{v6}"))
    held = await router(net, {f"{v4}/32": True, f"{v6}/128": True})
    assert held[f"{v4}/32"] == birdnet.Route(f"{v4}/32", "blackhole", RTBH, "192.0.2.1")
    assert held[f"{v6}/128"] == birdnet.Route(f"{v6}/128", "blackhole", RTBH, "100::1")
    assert set(held) == {f"{v4}/32", f"{v6}/128"}
    assert await client.sample("kzgate_routes", family="ipv4") == 1
    assert await client.sample("kzgate_routes", family="ipv6") == 1

    await applied(client, mci, mci.resume("rt-1"))
    await router(net, {f"{v4}/32": False, f"{v6}/128": False})
    assert await asyncio.to_thread(net.host_table) == set()


async def test_overlapping_instructions_keep_the_covered_prefix(
    client: Client, net: birdnet.BirdNet, mci: Regulator
) -> None:
    v4, v4_alt = net.targets_v4
    await applied(client, mci, mci.restrict("rt-wide", "cidr:10.66.0.0/24", "cidr:fd66::/64"))
    await applied(client, mci, mci.restrict("rt-narrow", f"ip:{v4}"))
    # The maximal prefixes only: the /32 is inside the /24.
    held = await router(net, {"10.66.0.0/24": True, "fd66::/64": True, f"{v4}/32": False})
    assert set(held) == {"10.66.0.0/24", "fd66::/64"}

    await applied(client, mci, mci.resume("rt-wide"))
    held = await router(net, {"10.66.0.0/24": False, "fd66::/64": False, f"{v4}/32": True})
    assert set(held) == {f"{v4}/32"}
    assert not await asyncio.to_thread(net.reachable_from_customer, v4)
    assert await asyncio.to_thread(net.reachable_from_customer, v4_alt)


async def test_an_external_delete_is_repaired_and_the_router_holds_it_again(
    client: Client, net: birdnet.BirdNet, mci: Regulator
) -> None:
    v4, v6 = net.targets_v4[0], net.targets_v6[0]
    await applied(client, mci, mci.restrict("rt-2", f"ip:{v4}", f"ip:{v6}"))
    await router(net, {f"{v4}/32": True, f"{v6}/128": True})

    await asyncio.to_thread(net.delete, f"{v4}/32")
    started = time.monotonic()
    while f"{v4}/32" not in await asyncio.to_thread(net.host_table):
        assert time.monotonic() - started < REPAIR_DEADLINE, "kzgate did not repair its table"
        await asyncio.sleep(0.02)
    # The router may have withdrawn it meanwhile; it must hold it again.
    await router(net, {f"{v4}/32": True, f"{v6}/128": True})


async def test_customer_packets_to_a_restricted_address_are_dropped(
    client: Client, net: birdnet.BirdNet, mci: Regulator
) -> None:
    v4, v4_alt = net.targets_v4
    v6, v6_alt = net.targets_v6
    await applied(client, mci, mci.restrict("rt-3", f"ip:{v4}", f"ip:{v6}"))
    await router(net, {f"{v4}/32": True, f"{v6}/128": True})
    answers = {
        a: await asyncio.to_thread(net.reachable_from_customer, a) for a in (v4, v4_alt, v6, v6_alt)
    }
    assert answers == {v4: False, v4_alt: True, v6: False, v6_alt: True}

    await applied(client, mci, mci.resume("rt-3"))
    await router(net, {f"{v4}/32": False, f"{v6}/128": False})
    assert await asyncio.to_thread(net.reachable_from_customer, v4)


def hundred_thousand(mci: Regulator, number: str) -> dict[str, Any]:
    """99,000 IPv4 /32s of 100.64.0.0/10 and 1,000 IPv6 /128s (the task limit is 100,000)."""
    rng = random.Random(13)
    v4 = int(ipaddress.IPv4Address("100.64.0.0"))
    v6 = int(ipaddress.IPv6Address("2001:db8::"))
    targets = [f"ip:{ipaddress.IPv4Address(v4 + i)}" for i in rng.sample(range(1 << 22), 99_000)]
    targets += [f"ip:{ipaddress.IPv6Address(v6 + (i << 64))}" for i in range(1_000)]
    return mci.restrict(number, *targets)


def register_prefixes(db: Path) -> set[str]:
    register = Register.open(db, create=False)
    try:
        return {str(p) for p in register.state.snapshot().prefixes}
    finally:
        register.close()


@pytest.mark.slow
async def test_sigkill_during_a_100k_batch_then_restart_the_router_matches_the_register(
    tmp_path: Path, pki: Path, net: birdnet.BirdNet, mci: Regulator
) -> None:
    config = write_config(tmp_path, pki, routes=routes(net))
    db = load_config(config).register.path
    async with child(config) as daemon:
        await kill_once_committed(daemon, pki, db, hundred_thousand(mci, "big"), 0.0, mci)
    async with child(config):
        wanted = await asyncio.to_thread(register_prefixes, db)
        assert len(wanted) == 100_000
        assert await asyncio.to_thread(net.host_table) == wanted
        await asyncio.to_thread(net.wait_imported, len(wanted), 60)
    # kzgate stopped: its routes stay, and so does BIRD's announcement of them.
    assert await asyncio.to_thread(net.router_bird.imported, birdnet.BGP_ON_ROUTER) == 100_000
    assert net.host_bird.dropped() == 0
