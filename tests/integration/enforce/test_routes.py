"""The routes enforcer alone, in a network namespace, with the table read back independently.

pyroute2 (and ``ip``) read the table: never kzgate's own decoder. Foreign
routes are made the way an operator would make them, with ``ip route``
run by another process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from pyroute2 import NetNS

from kzgate.config import RoutesConfig
from kzgate.enforce.routes import RoutesEnforcer
from kzgate.model import Diff, InstructionRef, State, Target
from kzgate.names import IPNetwork
from kzgate.register.state import EffectiveState
from tests.support import netns

pytestmark = netns.required

DRIFT_DEADLINE = 1.0
TABLE, PROTO = 666, 252
A = InstructionRef("mci", "77-A", "2026-11-01")
B = InstructionRef("mci", "77-B", "2026-11-02")


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def prefixes(*cidrs: str) -> dict[IPNetwork, InstructionRef]:
    return {net(c): A for c in cidrs}


def read_table(ns: str, number: int = TABLE) -> set[tuple[IPNetwork, int, int]]:
    """(prefix, protocol, type) of every route in ``number``, read by pyroute2."""
    out = set()
    with NetNS(ns) as ipr:
        for family in (2, 10):
            for r in ipr.get_routes(family=family, table=number):
                dst = r.get("dst") or ("0.0.0.0" if family == 2 else "::")
                out.add((net(f"{dst}/{r['dst_len']}"), r["proto"], r["type"]))
    return out


async def table(ns: str, number: int = TABLE) -> set[tuple[IPNetwork, int, int]]:
    # pyroute2's synchronous API runs its own event loop: not on ours
    return await asyncio.to_thread(read_table, ns, number)


async def ours(ns: str, rtype: int = 6) -> set[IPNetwork]:
    got = await table(ns)
    assert all(t == rtype for _, p, t in got if p == PROTO), got
    return {n for n, p, _ in got if p == PROTO}


def ip(ns: str, command: str) -> None:
    netns.run(ns, "ip", *command.split())


class Running:
    def __init__(self, ns: str, **cfg: object) -> None:
        loop = asyncio.get_running_loop()
        self.drift = asyncio.Event()
        self.calls = 0

        def on_drift() -> None:
            self.calls += 1
            loop.call_soon_threadsafe(self.drift.set)

        config = RoutesConfig(**{"enabled": True, "netns": ns, **cfg})  # type: ignore[arg-type]
        self.enforcer = RoutesEnforcer(config, on_drift=on_drift)

    async def wait_drift(self) -> None:
        try:
            await asyncio.wait_for(self.drift.wait(), DRIFT_DEADLINE)
        except TimeoutError:
            pytest.fail(f"on_drift was not called within {DRIFT_DEADLINE} s")
        self.drift.clear()


@pytest.fixture
def ns() -> Iterator[str]:
    with netns.namespace() as made:
        yield made


@pytest.fixture
async def routes(ns: str) -> AsyncIterator[Running]:
    run = Running(ns)
    await run.enforcer.start()
    try:
        yield run
    finally:
        await run.enforcer.close()


async def test_reconcile_and_apply_keep_the_table_equal_to_the_state(
    ns: str, routes: Running
) -> None:
    e = routes.enforcer
    first = prefixes("192.0.2.7/32", "10.1.0.0/16", "2001:db8::/48", "2001:db8:1::1/128")
    fixed = await e.reconcile(State({}, first))
    assert set(fixed.prefixes_added) == set(first) and not fixed.prefixes_removed
    assert await ours(ns) == set(first)
    assert e.route_counts() == {"ipv4": 2, "ipv6": 2}
    # a second reconcile finds nothing to do
    assert (await e.reconcile(State({}, first))).is_empty()
    gone = frozenset({net("10.1.0.0/16"), net("2001:db8::/48")})
    await e.apply(Diff(prefixes_added=prefixes("198.51.100.0/24"), prefixes_removed=gone))
    assert await ours(ns) == {net("192.0.2.7/32"), net("2001:db8:1::1/128"), net("198.51.100.0/24")}
    # close leaves the routes (fail closed)
    await e.close()
    assert len(await ours(ns)) == 3


@pytest.mark.parametrize(("name", "number"), [("unreachable", 7), ("prohibit", 8)])
async def test_the_configured_type(ns: str, name: str, number: int) -> None:
    run = Running(ns, type=name)
    await run.enforcer.start()
    try:
        await run.enforcer.reconcile(State({}, prefixes("192.0.2.7/32", "2001:db8::/48")))
        assert await ours(ns, number) == {net("192.0.2.7/32"), net("2001:db8::/48")}
    finally:
        await run.enforcer.close()


async def test_routes_not_ours_are_never_touched(ns: str, routes: Running) -> None:
    ip(ns, "route add table 666 proto static blackhole 10.9.0.0/16")
    ip(ns, "-6 route add table 666 proto static unreachable 2001:db8:9::/48")
    ip(ns, "route add table 667 proto 252 blackhole 10.8.0.0/16")
    ip(ns, "route add proto 252 blackhole 10.7.0.0/16")  # main
    foreign = {(net("10.9.0.0/16"), 4, 6), (net("2001:db8:9::/48"), 4, 7)}
    others = (await table(ns, 667), await table(ns, 254))
    e = routes.enforcer
    await e.reconcile(State({}, prefixes("192.0.2.7/32")))
    await e.apply(Diff(prefixes_removed=frozenset({net("192.0.2.7/32")})))
    await e.reconcile(State({}, {}))  # an empty register deletes only ours
    # A removal of a prefix someone else routes in our table: the delete names our
    # protocol and type, so the kernel finds no route of ours (ESRCH, not an error).
    await e.apply(Diff(prefixes_removed=frozenset({net("10.9.0.0/16"), net("2001:db8:9::/48")})))
    assert await table(ns) == foreign
    assert (await table(ns, 667), await table(ns, 254)) == others


async def test_a_prefix_another_protocol_routes_is_left_to_it_and_shown(
    ns: str, routes: Running
) -> None:
    """Restrict and resume of a prefix a `proto static` route holds in our table: never touched."""
    ip(ns, "route add table 666 proto static unreachable 10.9.0.0/16")
    ip(ns, "-6 route add table 666 proto static prohibit 2001:db8:9::/48")
    foreign = {(net("10.9.0.0/16"), 4, 7), (net("2001:db8:9::/48"), 4, 8)}
    e = routes.enforcer
    both = prefixes("10.9.0.0/16", "2001:db8:9::/48")
    state = State({}, both | prefixes("192.0.2.7/32"))
    fixed = await e.reconcile(state)  # no RoutesError: a repair would meet the same route again
    assert await table(ns) == foreign | {(net("192.0.2.7/32"), PROTO, 6)}
    assert set(fixed.prefixes_added) == {net("192.0.2.7/32")}
    status = e.status()["routes"]
    assert status["foreign_held"] == {  # type: ignore[index]
        "count": 2,
        "prefixes": ["10.9.0.0/16", "2001:db8:9::/48"],
    }
    assert e.route_counts() == {"ipv4": 1, "ipv6": 0}
    assert (await e.reconcile(state)).is_empty()
    # a restrict by diff, then the resume: the foreign routes stay as they were
    await e.apply(Diff(prefixes_removed=frozenset(both)))
    assert e.status()["routes"]["foreign_held"]["count"] == 0  # type: ignore[index]
    await e.apply(Diff(prefixes_added=both))
    assert e.status()["routes"]["foreign_held"]["count"] == 2  # type: ignore[index]
    assert await table(ns) == foreign | {(net("192.0.2.7/32"), PROTO, 6)}
    await e.apply(Diff(prefixes_removed=frozenset(both)))
    assert await table(ns) == foreign | {(net("192.0.2.7/32"), PROTO, 6)}
    assert e.status()["routes"]["foreign_held"] == {"count": 0, "prefixes": []}  # type: ignore[index]
    # once the other route is gone, the next reconcile writes ours
    ip(ns, "route del table 666 proto static unreachable 10.9.0.0/16")
    await e.reconcile(state)
    assert (net("10.9.0.0/16"), PROTO, 6) in await table(ns)
    assert e.status()["routes"]["foreign_held"]["prefixes"] == ["2001:db8:9::/48"]  # type: ignore[index]


async def test_a_new_type_replaces_ours_of_the_old_type(ns: str, routes: Running) -> None:
    state = State({}, prefixes("192.0.2.7/32", "2001:db8::/48"))
    await routes.enforcer.reconcile(state)
    run = Running(ns, type="prohibit")
    await run.enforcer.start()
    try:
        fixed = await run.enforcer.reconcile(state)
        assert not fixed.prefixes_removed
        assert await ours(ns, 8) == set(state.prefixes)
        assert run.enforcer.status()["routes"]["foreign_held"]["count"] == 0  # type: ignore[index]
    finally:
        await run.enforcer.close()


async def test_a_foreign_delete_of_ours_is_drift_and_reconcile_repairs_it(
    ns: str, routes: Running
) -> None:
    e = routes.enforcer
    state = State({}, prefixes("192.0.2.7/32", "2001:db8::/48"))
    await e.reconcile(state)
    ip(ns, "route del table 666 proto 252 blackhole 192.0.2.7/32")
    await routes.wait_drift()
    ip(ns, "-6 route del table 666 proto 252 blackhole 2001:db8::/48")
    await routes.wait_drift()
    fixed = await e.reconcile(state)
    assert set(fixed.prefixes_added) == set(state.prefixes)
    assert await ours(ns) == set(state.prefixes)
    assert e.status()["routes"]["last_drift"] is not None  # type: ignore[index]


async def test_a_foreign_add_with_our_protocol_is_drift_and_reconcile_removes_it(
    ns: str, routes: Running
) -> None:
    e = routes.enforcer
    state = State({}, prefixes("192.0.2.7/32"))
    await e.reconcile(state)
    ip(ns, "route add table 666 proto static blackhole 10.9.0.0/16")  # not ours: no drift
    ip(ns, "route add table 667 proto 252 blackhole 10.9.0.0/16")  # another table: no drift
    await asyncio.sleep(0.3)
    assert routes.calls == 0
    ip(ns, "-6 route add table 666 proto 252 blackhole 2001:db8:5::/48")
    await routes.wait_drift()
    fixed = await e.reconcile(state)
    assert fixed.prefixes_removed == {net("2001:db8:5::/48")}
    assert await ours(ns) == {net("192.0.2.7/32")}
    assert (net("10.9.0.0/16"), 4, 6) in await table(ns)


async def test_our_own_changes_are_not_drift(ns: str, routes: Running) -> None:
    e = routes.enforcer
    many = {ipaddress.IPv4Network((0x0A000000 + (i << 8), 24)): A for i in range(20_000)}
    await e.reconcile(State({}, many))
    await e.apply(Diff(prefixes_removed=frozenset(list(many)[:5000])))
    await asyncio.sleep(0.3)
    assert routes.calls == 0


async def test_overlapping_instructions_keep_the_covered_prefix(ns: str, routes: Running) -> None:
    """Diffs from the register's EffectiveState (maximal prefixes), applied in order."""
    e = routes.enforcer
    state = EffectiveState()
    wide = [Target("cidr", "10.77.0.0/24"), Target("cidr", "fd77::/64")]
    narrow = [Target("ip", "10.77.0.2"), Target("ip", "fd77::2")]

    async def step(diff: Diff) -> None:
        await e.apply(diff)
        assert await ours(ns) == set(state.snapshot().prefixes)

    await step(state.add(A, wide))
    assert state.add(B, narrow).is_empty()  # covered: nothing new
    await step(state.remove(A, wide))  # B's host routes come out of hiding
    assert await ours(ns) == {net("10.77.0.2/32"), net("fd77::2/128")}
    await step(state.remove(B, narrow))
    assert await ours(ns) == set()


# -- SIGKILL in the middle of a large batch ------------------------------------------

_CHILD = """
import asyncio, ipaddress, sys
from kzgate.config import RoutesConfig
from kzgate.enforce.routes import RoutesEnforcer
from kzgate.model import InstructionRef, State
ns, n = sys.argv[1], int(sys.argv[2])
ref = InstructionRef("mci", "big", "2026-11-01")
wanted = {ipaddress.IPv4Network((0x0A000000 + (i << 8), 24)): ref for i in range(n)}
async def main():
    e = RoutesEnforcer(RoutesConfig(enabled=True, netns=ns))
    await e.start()
    print("started", flush=True)
    await e.reconcile(State({}, wanted))
    print("done", flush=True)
asyncio.run(main())
"""


def count_ours(ns: str) -> int:
    done = netns.run(ns, "ip", "-j", "route", "show", "table", "666", "proto", "252", check=False)
    if "table does not exist" in done.stderr:  # nothing written yet
        return 0
    assert done.returncode == 0, done.stderr
    return len(json.loads(done.stdout or "[]"))


def dump_ours(ns: str) -> set[IPNetwork]:
    out: set[IPNetwork] = set()
    for family in ("-4", "-6"):
        done = netns.run(ns, "ip", "-j", family, "route", "show", "table", "666", "proto", "252")
        for r in json.loads(done.stdout or "[]"):
            dst = r["dst"]
            if dst == "default":
                dst = "0.0.0.0/0" if family == "-4" else "::/0"
            out.add(net(dst if "/" in dst else f"{dst}/{32 if family == '-4' else 128}"))
    return out


async def test_sigkill_during_a_100k_batch_then_a_restart_makes_the_table_the_register(
    ns: str,
) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, ns, "100000"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while (held := await asyncio.to_thread(count_ours, ns)) < 5000:
        assert time.monotonic() < deadline, "the child wrote nothing"
        await asyncio.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    held = await asyncio.to_thread(count_ours, ns)
    assert 0 < held < 100_000, f"the kill did not land mid-batch ({held} routes)"
    # The register moved on meanwhile: the first 50k stay, 1,000 others are new.
    register = {ipaddress.IPv4Network((0x0A000000 + (i << 8), 24)): A for i in range(50_000)}
    register |= {ipaddress.IPv6Network((0x20010DB8 << 96 | i << 64, 64)): A for i in range(1000)}
    run = Running(ns)
    await run.enforcer.start()
    try:
        await run.enforcer.reconcile(State({}, register))
    finally:
        await run.enforcer.close()
    assert await asyncio.to_thread(dump_ours, ns) == set(register)
