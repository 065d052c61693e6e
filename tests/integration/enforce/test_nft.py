"""The nftables enforcer alone, proven with real packets between two network namespaces.

The enforcer runs in the client namespace on the ``output`` hook (the traffic
starts there); the server answers on two addresses per family, so a test can
tell "the peer is blocked" from "everything is blocked".
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kzgate.config import NftConfig, load_config
from kzgate.enforce.nft import NftDrift, NftEnforcer
from kzgate.model import Diff, InstructionRef, State, Target
from kzgate.names import IPNetwork
from kzgate.register.state import EffectiveState
from tests.support import netns
from tests.support.kzfixtures import write_config

pytestmark = netns.required

SETS4 = netns.SET_NAMES
DRIFT_DEADLINE = 1.0  # the issue: drift is noticed (and repaired) within 1 s
QUIET = 0.5  # how long "nothing happens" is watched for

A = InstructionRef("mci", "77-A", "2026-11-01")
B = InstructionRef("mci", "77-B", "2026-11-02")


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def prefixes(*cidrs: str, ref: InstructionRef = A) -> dict[IPNetwork, InstructionRef]:
    return {net(c): ref for c in cidrs}


class Running:
    """A started enforcer and the record of its drift callbacks."""

    def __init__(self, cfg: NftConfig) -> None:
        loop = asyncio.get_running_loop()
        self.drift = asyncio.Event()
        self.drift_calls: list[float] = []

        def on_drift() -> None:  # may be called from another thread
            self.drift_calls.append(time.monotonic())
            loop.call_soon_threadsafe(self.drift.set)

        self.enforcer = NftEnforcer(cfg, on_drift=on_drift)

    async def wait_drift(self, since: float) -> None:
        """Return once on_drift has been called; fail DRIFT_DEADLINE after ``since``."""
        try:
            await asyncio.wait_for(self.drift.wait(), since + DRIFT_DEADLINE - time.monotonic())
        except TimeoutError:
            pytest.fail(f"on_drift was not called within {DRIFT_DEADLINE} s")
        self.drift.clear()


class Enforcers:
    """Starts enforcers on the pair's client namespace; the fixture closes them all."""

    def __init__(self, pair: netns.Pair, tmp_path: Path, pki: Path) -> None:
        self.pair = pair
        self.tmp_path = tmp_path
        self.pki = pki
        self.running: list[Running] = []

    async def start(self, state: State | None = None, **nftables: Any) -> Running:
        """Start one and reconcile it to ``state`` (empty by default), as the daemon does."""
        section = {"enabled": True, "netns": self.pair.client, "hooks": ["output"], **nftables}
        cfg = load_config(write_config(self.tmp_path, self.pki, nftables=section)).nftables
        run = Running(cfg)
        self.running.append(run)
        await run.enforcer.start()
        await run.enforcer.reconcile(state or State({}, {}))
        return run

    async def close(self) -> None:
        for run in self.running:
            await run.enforcer.close()
        self.running.clear()


@pytest.fixture
def pair() -> Iterator[netns.Pair]:
    with netns.namespace_pair() as made:
        yield made


@pytest.fixture
async def enforcers(pair: netns.Pair, tmp_path: Path, pki: Path) -> AsyncIterator[Enforcers]:
    made = Enforcers(pair, tmp_path, pki)
    try:
        yield made
    finally:
        await made.close()


def everything(pair: netns.Pair, ok: bool) -> dict[str, bool]:
    return dict.fromkeys(pair.server_addresses, ok)


# -- blocking and lifting -----------------------------------------------------------


async def test_restrict_drops_the_peer_and_counts_it_then_resume_lets_it_through(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    nft = (await enforcers.start()).enforcer
    assert await netns.reachable_off_loop(pair) == everything(pair, True)
    peer = prefixes(f"{pair.server_v4}/32", f"{pair.server_v6}/128")
    before = nft.drop_counters()

    await nft.apply(Diff(prefixes_added=peer))
    assert await netns.read_sets_off_loop(pair) == set(peer)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
    after = nft.drop_counters()
    assert after["ipv4"] > before["ipv4"], (before, after)
    assert after["ipv6"] > before["ipv6"], (before, after)
    counts = nft.element_counts()
    assert (counts["ipv4"], counts["ipv6"]) == (1, 1)

    await nft.apply(Diff(prefixes_removed=frozenset(peer)))
    assert await netns.read_sets_off_loop(pair) == set()
    assert await netns.reachable_off_loop(pair) == everything(pair, True)
    counts = nft.element_counts()
    assert (counts["ipv4"], counts["ipv6"]) == (0, 0)


async def test_hosts_go_to_the_hash_sets_and_prefixes_to_the_interval_sets(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    nft = (await enforcers.start()).enforcer
    hosts = prefixes(f"{pair.server_v4}/32", f"{pair.server_v6}/128")
    await nft.apply(Diff(prefixes_added=hosts))
    found = {name: await asyncio.to_thread(netns.read_set, pair.client, name) for name in SETS4}
    assert found == {
        "blocked_hosts_v4": {net(f"{pair.server_v4}/32")},
        "blocked_v4": set(),
        "blocked_hosts_v6": {net(f"{pair.server_v6}/128")},
        "blocked_v6": set(),
    }
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
    # hash-set elements carry the instruction's label as interval elements do
    comments = await asyncio.to_thread(netns.set_comments, pair.client, "blocked_hosts_v4")
    assert comments == {net(f"{pair.server_v4}/32"): A.label()}

    # Both server addresses of each family sit in one /31 (/127): the prefix drops both.
    wide = prefixes("10.77.0.2/31", "fd77::2/127", ref=B)
    await nft.apply(Diff(prefixes_added=wide, prefixes_removed=frozenset(hosts)))
    found = {name: await asyncio.to_thread(netns.read_set, pair.client, name) for name in SETS4}
    assert found == {
        "blocked_hosts_v4": set(),
        "blocked_v4": {net("10.77.0.2/31")},
        "blocked_hosts_v6": set(),
        "blocked_v6": {net("fd77::2/127")},
    }
    assert await netns.reachable_off_loop(pair) == everything(pair, False)
    assert nft.status()["nft"]["sets"] == {  # type: ignore[index]
        "blocked_hosts_v4": 0,
        "blocked_v4": 1,
        "blocked_hosts_v6": 0,
        "blocked_v6": 1,
    }


@pytest.mark.parametrize("first", ["prefix", "host"])
async def test_lifting_either_of_two_overlapping_instructions_keeps_the_packet_dropped(
    pair: netns.Pair, enforcers: Enforcers, first: str
) -> None:
    """A prefix (interval set) and a host inside it (hash set) from two instructions.

    Diffs computed by the register's EffectiveState, applied in order, as the daemon does.
    """
    nft = (await enforcers.start()).enforcer
    state = EffectiveState()
    wide = [Target("cidr", "10.77.0.0/24"), Target("cidr", "fd77::/64")]
    narrow = [Target("ip", pair.server_v4), Target("ip", pair.server_v6)]

    async def step(diff: Diff, expect: dict[str, bool]) -> None:
        await nft.apply(diff)
        assert await netns.read_sets_off_loop(pair) == set(state.snapshot().prefixes)
        assert await netns.reachable_off_loop(pair) == expect

    await step(state.add(A, wide), everything(pair, False))
    covered = state.add(B, narrow)
    assert covered.is_empty()  # inside A's prefixes: nothing new is enforced
    await step(covered, everything(pair, False))
    if first == "prefix":
        # Resuming A moves B's hosts into the hash sets in the diff that removes A's prefixes.
        lift_a = state.remove(A, wide)
        assert lift_a.prefixes_removed and lift_a.prefixes_added
        await step(lift_a, netns.only_peer_blocked(pair))
        hosts = await asyncio.to_thread(netns.read_set, pair.client, "blocked_hosts_v4")
        assert hosts == {net(f"{pair.server_v4}/32")}
        await step(state.remove(B, narrow), everything(pair, True))
    else:
        await step(state.remove(B, narrow), everything(pair, False))  # A still covers them
        await step(state.remove(A, wide), everything(pair, True))


async def test_a_parent_replaces_its_child_in_one_diff(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    nft = (await enforcers.start()).enforcer
    state = EffectiveState()
    narrow = [Target("ip", pair.server_v4), Target("ip", pair.server_v6)]
    wide = [Target("cidr", "10.77.0.0/24"), Target("cidr", "fd77::/64")]

    await nft.apply(state.add(B, narrow))
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
    grow = state.add(A, wide)
    assert set(grow.prefixes_removed) == {net(f"{pair.server_v4}/32"), net(f"{pair.server_v6}/128")}
    assert set(grow.prefixes_added) == {net("10.77.0.0/24"), net("fd77::/64")}
    await nft.apply(grow)  # an interval set refuses the /24 while the /32 is still in it
    assert await netns.read_sets_off_loop(pair) == {net("10.77.0.0/24"), net("fd77::/64")}
    assert await netns.reachable_off_loop(pair) == everything(pair, False)

    await nft.apply(state.remove(B, narrow))  # still inside A: no change at all
    assert await netns.reachable_off_loop(pair) == everything(pair, False)
    await nft.apply(state.remove(A, wide))
    assert await netns.read_sets_off_loop(pair) == set()
    assert await netns.reachable_off_loop(pair) == everything(pair, True)


# -- reconciling -------------------------------------------------------------------


def random_hosts(rng: random.Random, n: int, base: str) -> dict[IPNetwork, InstructionRef]:
    """``n`` distinct /32s (or /128s) inside ``base``."""
    network = net(base)
    hosts = rng.sample(range(network.num_addresses), n)
    length = network.max_prefixlen
    return {net(f"{network[h]}/{length}"): A for h in hosts}


def make_state(pair: netns.Pair, seed: int, extra: Mapping[IPNetwork, InstructionRef]) -> State:
    rng = random.Random(seed)
    found: dict[IPNetwork, InstructionRef] = {
        net(f"{pair.server_v4}/32"): A,
        net(f"{pair.server_v6}/128"): B,
    }
    found |= random_hosts(rng, 5000, "198.18.0.0/15")
    found |= random_hosts(rng, 2000, "2001:db8:77::/112")
    found |= extra
    return State({}, found)


async def test_reconcile_replaces_the_sets_atomically(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    """Both states block the peer: a stream to it must not get one datagram through,
    however the sets are swapped; the sets read back equal each state."""
    first = make_state(
        pair, 1, prefixes("10.80.0.0/25", "10.80.0.128/25", "2001:db8:1::/64", "2001:db8:2::/64")
    )  # neighbours that must never be merged into one interval
    second = make_state(pair, 2, prefixes("10.80.0.0/24", "2001:db8:1::/48"))  # parents now
    nft = (await enforcers.start(first)).enforcer
    assert await netns.read_sets_off_loop(pair) == set(first.prefixes)

    stream = netns.Stream(pair, [pair.server_v4, pair.server_v6], seconds=2.0)
    deadline = time.monotonic() + 1.5
    swaps = 0
    while time.monotonic() < deadline:
        await nft.reconcile(second if swaps % 2 == 0 else first)
        swaps += 1
    sent, received = await asyncio.to_thread(stream.finish)
    assert sent > 10_000 and swaps >= 2, (sent, swaps)
    assert received == 0, f"{received} datagrams reached the peer during {swaps} reconciles"

    await nft.reconcile(second)
    assert await netns.read_sets_off_loop(pair) == set(second.prefixes)
    counts = nft.element_counts()
    v4 = sum(1 for p in second.prefixes if p.version == 4)
    assert (counts["ipv4"], counts["ipv6"]) == (v4, len(second.prefixes) - v4)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)


async def test_the_stream_probe_sees_an_open_path(pair: netns.Pair) -> None:
    """The probe of the atomicity test can fail: unblocked, the datagrams arrive."""
    stream = netns.Stream(pair, [pair.server_v4, pair.server_v6], seconds=0.3)
    sent, received = await asyncio.to_thread(stream.finish)
    assert sent > 0 and received > 0


# -- drift ------------------------------------------------------------------------


DRIFTS = {
    "delete table": lambda p: netns.delete_table(p.client),
    "flush set v4": lambda p: netns.flush_set(p.client, "blocked_v4"),
    "flush set v6": lambda p: netns.flush_set(p.client, "blocked_v6"),
    "flush hosts v4": lambda p: netns.flush_set(p.client, "blocked_hosts_v4"),
    "flush hosts v6": lambda p: netns.flush_set(p.client, "blocked_hosts_v6"),
    "delete host": lambda p: netns.delete_element(p.client, p.server_v4, "blocked_hosts_v4"),
    "delete prefix": lambda p: netns.delete_element(p.client, "10.81.0.0/16", "blocked_v4"),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
async def test_external_changes_are_noticed_and_repaired(
    pair: netns.Pair, enforcers: Enforcers, drift: str
) -> None:
    # a host and a prefix of each family: every set holds one
    state = State(
        {},
        prefixes(f"{pair.server_v4}/32", f"{pair.server_v6}/128", "10.81.0.0/16", "fd81::/64"),
    )
    run = await enforcers.start(state)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)

    await asyncio.to_thread(DRIFTS[drift], pair)
    drifted = time.monotonic()  # (nft has returned: the change is in the kernel)
    assert await netns.read_sets_off_loop(pair) != set(state.prefixes)  # the drift is real
    await run.wait_drift(drifted)

    await run.enforcer.reconcile(state)
    assert await netns.read_sets_off_loop(pair) == set(state.prefixes)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)


async def test_its_own_changes_are_not_drift(pair: netns.Pair, enforcers: Enforcers) -> None:
    """Otherwise every apply would be followed by a full reload of the sets."""
    run = await enforcers.start(State({}, prefixes("10.82.0.0/16")))
    await run.enforcer.apply(Diff(prefixes_added=prefixes(f"{pair.server_v4}/32", "fd82::/64")))
    await run.enforcer.apply(Diff(prefixes_removed=frozenset(prefixes("fd82::/64"))))
    await run.enforcer.reconcile(State({}, prefixes("10.83.0.0/16")))
    await asyncio.sleep(QUIET)
    assert run.drift_calls == []


async def test_other_tables_are_never_touched(pair: netns.Pair, enforcers: Enforcers) -> None:
    theirs = (
        "table inet operator {\n"
        "  set mine { type ipv4_addr; flags interval; elements = { 10.99.0.0/16 }; }\n"
        "  chain out { type filter hook output priority 10; ip daddr @mine counter accept; }\n"
        "}\n"
    )
    netns.nft(pair.client, theirs)
    before = netns.table_objects(pair.client, "operator")
    run = await enforcers.start(State({}, prefixes(f"{pair.server_v4}/32")))
    netns.delete_table(pair.client)
    await run.wait_drift(time.monotonic())
    await run.enforcer.reconcile(State({}, prefixes(f"{pair.server_v4}/32")))
    assert netns.table_objects(pair.client, "operator") == before


async def test_deleting_a_missing_element_raises_drift_and_changes_nothing(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    state = State({}, prefixes("10.84.0.0/16"))
    nft = (await enforcers.start(state)).enforcer
    bad = Diff(
        prefixes_added=prefixes(f"{pair.server_v4}/32"),
        prefixes_removed=frozenset(prefixes("10.85.0.0/16")),  # not in the set
    )
    with pytest.raises(NftDrift):
        await nft.apply(bad)
    # One batch: the addition in it was rolled back with the failed deletion.
    assert await netns.read_sets_off_loop(pair) == set(state.prefixes)
    assert await netns.reachable_off_loop(pair) == everything(pair, True)
    await nft.reconcile(state)  # what the pipeline does next
    await nft.apply(Diff(prefixes_added=prefixes(f"{pair.server_v4}/32")))
    assert await netns.read_sets_off_loop(pair) == set(state.prefixes) | {
        net(f"{pair.server_v4}/32")
    }


# -- modes ------------------------------------------------------------------------


async def test_set_only_mode_makes_sets_for_the_operators_own_chains(
    pair: netns.Pair, enforcers: Enforcers, caplog: pytest.LogCaptureFixture
) -> None:
    nft = (await enforcers.start(mode="set-only")).enforcer
    # no chain of the operator's yet: the start says what nothing drops, and how to fix it
    assert "looks up blocked_hosts_v4, blocked_hosts_v6, blocked_v4, blocked_v6" in caplog.text
    assert "ip daddr @blocked_hosts_v4 counter drop" in caplog.text
    objects = netns.table_objects(pair.client)
    assert objects is not None
    assert {s["name"] for s in objects.get("set", [])} == set(SETS4)
    assert objects.get("chain", []) == []
    assert await netns.reachable_off_loop(pair) == everything(pair, True)

    # The operator's own chain, in our table (a rule can only name sets of its own table),
    # written as before hosts had sets of their own: it matches the interval sets only.
    netns.nft(
        pair.client,
        "table inet kzgate {\n"
        "  chain operator { type filter hook output priority 0;\n"
        "    ip daddr @blocked_v4 drop; ip6 daddr @blocked_v6 drop; }\n"
        "}\n",
    )
    peer = prefixes(f"{pair.server_v4}/32", f"{pair.server_v6}/128")
    await nft.apply(Diff(prefixes_added=peer))
    # The hosts are in the hash sets, which that chain does not look up: status says so.
    assert await netns.reachable_off_loop(pair) == everything(pair, True)
    status: Any = nft.status()["nft"]
    assert status["unmatched_sets"] == ["blocked_hosts_v4", "blocked_hosts_v6"]
    assert len(status["operator_rules"]) == 4

    # The rules status prints, added to the operator's chain, drop exactly the peer.
    rules = "".join(f"    {rule};\n" for rule in status["operator_rules"])
    netns.nft(pair.client, f"table inet kzgate {{\n  chain operator {{\n{rules}  }}\n}}\n")
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
    assert nft.status()["nft"]["unmatched_sets"] == []  # type: ignore[index]
    await nft.reconcile(State({}, peer))  # a reload keeps the operator's chain working
    objects = netns.table_objects(pair.client)
    assert objects is not None and [c["name"] for c in objects["chain"]] == ["operator"]
    assert not await asyncio.to_thread(netns.ping, pair.client, pair.server_v4)
    await nft.apply(Diff(prefixes_removed=frozenset(peer)))
    assert await netns.reachable_off_loop(pair) == everything(pair, True)


async def test_reject_mode_answers_with_an_error_at_once(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    nft = (await enforcers.start(action="reject")).enforcer
    await nft.apply(Diff(prefixes_added=prefixes(f"{pair.server_v4}/32", f"{pair.server_v6}/128")))
    wait = 3.0  # a dropped echo request would take all of it
    v4 = await asyncio.to_thread(netns.ping_result, pair.client, pair.server_v4, timeout=wait)
    v6 = await asyncio.to_thread(netns.ping_result, pair.client, pair.server_v6, timeout=wait)
    assert not v4.ok and "Packet filtered" in v4.output, v4
    assert v4.seconds < wait / 2, v4
    # iputils waits out -W after an ICMPv6 error, so only the error itself is checked.
    assert not v6.ok and "Administratively prohibited" in v6.output, v6
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)


async def test_drop_mode_stays_silent(pair: netns.Pair, enforcers: Enforcers) -> None:
    """The reject test's counterpart: a dropped request gets no error, just no answer."""
    nft = (await enforcers.start()).enforcer
    await nft.apply(Diff(prefixes_added=prefixes(f"{pair.server_v4}/32")))
    v4 = await asyncio.to_thread(netns.ping_result, pair.client, pair.server_v4, timeout=0.5)
    assert not v4.ok and "Packet filtered" not in v4.output, v4


# -- failing closed ---------------------------------------------------------------


async def test_close_leaves_the_blocks_in_place(pair: netns.Pair, enforcers: Enforcers) -> None:
    peer = prefixes(f"{pair.server_v4}/32", f"{pair.server_v6}/128", "10.86.0.0/16")
    run = await enforcers.start(State({}, peer))
    await run.enforcer.close()
    enforcers.running.remove(run)
    assert await netns.read_sets_off_loop(pair) == set(peer)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)

    # The next start reconciles what it finds to the register: here, one block lifted.
    later = State({}, prefixes(f"{pair.server_v4}/32", "10.87.0.0/16"))
    await enforcers.start(later)
    assert await netns.read_sets_off_loop(pair) == set(later.prefixes)
    assert await netns.reachable_off_loop(pair) == {
        pair.server_v4: False,
        pair.server_v4_alt: True,
        pair.server_v6: True,
        pair.server_v6_alt: True,
    }


# -- migration from one interval set per family -----------------------------------


def old_layout(pair: netns.Pair, state: State) -> str:
    """The table as kzgate wrote it before hosts had hash sets: everything in interval sets."""
    v4 = ", ".join(str(p) for p in state.prefixes if p.version == 4)
    v6 = ", ".join(str(p) for p in state.prefixes if p.version == 6)
    return (
        "table inet kzgate {\n"
        f"  set blocked_v4 {{ type ipv4_addr; flags interval; elements = {{ {v4} }}; }}\n"
        f"  set blocked_v6 {{ type ipv6_addr; flags interval; elements = {{ {v6} }}; }}\n"
        "  chain output { type filter hook output priority -10; policy accept;\n"
        "    ip daddr @blocked_v4 counter drop; ip6 daddr @blocked_v6 counter drop; }\n"
        "}\n"
    )


async def test_a_table_in_the_old_layout_is_migrated_without_a_gap(
    pair: netns.Pair, enforcers: Enforcers
) -> None:
    """Hosts move from the interval sets to the hash sets while a stream to the peer runs."""
    state = make_state(pair, 3, prefixes("10.88.0.0/16", "2001:db8:88::/48"))
    netns.nft(pair.client, old_layout(pair, state))
    assert await netns.read_sets_off_loop(pair) is None  # no host sets yet
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)

    stream = netns.Stream(pair, [pair.server_v4, pair.server_v6], seconds=1.5)
    await asyncio.sleep(0.3)  # the stream is running before the daemon starts
    nft = (await enforcers.start(state)).enforcer
    sent, received = await asyncio.to_thread(stream.finish)
    assert sent > 5_000, sent
    assert received == 0, f"{received} datagrams reached the peer during the migration"

    assert await netns.read_set_off_loop(pair, "blocked_v4") == {net("10.88.0.0/16")}
    assert await netns.read_set_off_loop(pair, "blocked_v6") == {net("2001:db8:88::/48")}
    assert await netns.read_sets_off_loop(pair) == set(state.prefixes)
    objects = netns.table_objects(pair.client)
    assert objects is not None
    looked_up = sorted(
        e["match"]["right"][1:]
        for r in objects["rule"]
        for e in r["expr"]
        if "match" in e and str(e["match"]["right"]).startswith("@")
    )
    assert looked_up == sorted(SETS4)
    assert await netns.reachable_off_loop(pair) == netns.only_peer_blocked(pair)
    assert nft.element_counts() == {
        "ipv4": sum(1 for p in state.prefixes if p.version == 4),
        "ipv6": sum(1 for p in state.prefixes if p.version == 6),
    }
