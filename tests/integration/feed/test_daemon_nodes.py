"""Whole nodes and the feed (task-protocol.md §6): real `kzgate run` children, real TLS,
the reference feed server, real register files.

- Two nodes fed the same log, one with every task pushed and one with every
  other, end with the same register, the same enforcement and the chain the
  feed's head commits to.
- A node SIGKILLed in the middle of catching up on a long log restarts with a
  register, enforcers and stored head that agree, and finishes the catch-up.
- A pushed task that reveals a seq gap makes the node pull at once; a long
  poll brings a task published after start long before the interval.

The catch-up is KZGATE_CATCHUP_TASKS tasks of 10 domains each (default 10,000:
about 20 s here, the longest test of this module; the whole module ~30 s), and
the kill points come from KZGATE_CATCHUP_SEED (printed; random when unset).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.feednode import (
    ISS,
    FastRegulator,
    FeedHost,
    Node,
    held_seqs,
    node_config,
    register_chain,
    register_content,
    restricted_names,
    stored_head,
    task_count,
    unapplied,
)

CONVERGE_TASKS = 200
BURST = 10
CATCHUP_TASKS = int(os.environ.get("KZGATE_CATCHUP_TASKS", "10000"))
CATCHUP_TARGETS = 10  # domain targets per task of the catch-up
SAMPLE = 40  # names looked up (API and DNS) on each side of the held line


@pytest.fixture
async def host(pki: Path) -> AsyncIterator[FeedHost]:
    feed = FeedHost(pki)
    await feed.start()
    yield feed
    await feed.close()


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    """Every node a test starts; killed at the end whatever happened."""
    started: list[Node] = []
    yield started
    for node in started:
        await node.stop()


async def launch(nodes: list[Node], node: Node) -> Node:
    nodes.append(node)
    await node.start()
    return node


def in_sync_at(seq: int) -> Any:
    def check(feed: dict[str, Any]) -> bool:
        return feed.get("state") == "in_sync" and feed["head_seq"] == seq == feed["held_seq"]

    return check


# -- 1. two nodes converge -------------------------------------------------------------------


def converging_log(regulator: FastRegulator, n: int) -> tuple[list[bytes], set[str], set[str]]:
    """``n`` tasks: restricts with overlapping targets, and resumes of some of them.

    Every fifth seq resumes the restrict two seqs before it (same parity, so a node
    pushed only odd seqs still gets each restrict before its resume). Returns the
    signed tasks, every domain named, and the domains that must end restricted.
    """
    bodies: list[bytes] = []
    targets: dict[str, tuple[str, ...]] = {}
    resumed: set[str] = set()
    for seq in range(1, n + 1):
        if seq % 5 == 0:
            number = f"C-{seq - 2}"
            resumed.add(number)
            task = regulator.resume(number, seq=seq)
        else:
            number = f"C-{seq}"
            targets[number] = (f"own{seq}.conv.kz", f"shared{seq % 7}.conv.kz")
            if seq % 3 == 0:  # covered by this instruction only while it is active
                targets[number] += (f"pair{seq // 6}.conv.kz",)
            task = regulator.restrict(
                number,
                *(f"domain:{d}" for d in targets[number]),
                f"ip:198.51.100.{seq % 11}",
                seq=seq,
            )
        bodies.append(regulator.sign(task))
    named = {d for ds in targets.values() for d in ds}
    blocked = {d for number, ds in targets.items() if number not in resumed for d in ds}
    return bodies, named, blocked


async def test_two_nodes_one_pushed_all_one_pushed_half_converge(
    tmp_path: Path, pki: Path, host: FeedHost, nodes: list[Node]
) -> None:
    bodies, named, blocked = converging_log(FastRegulator(pki), CONVERGE_TASKS)
    assert named - blocked and blocked, "the log must both restrict and lift names"
    # A polls the feed every second; B long-polls it between rounds 2 s apart.
    a = await launch(
        nodes, Node(node_config(tmp_path / "a", pki, host.url, interval=1, wait=0), pki)
    )
    b = await launch(
        nodes, Node(node_config(tmp_path / "b", pki, host.url, interval=2, wait=1.5), pki)
    )
    # The issuer publishes ten at a time, then pushes them: a page B pulls mixes
    # tasks it holds (pushed) with ones it lacks, and races the pushes to A.
    for first in range(0, CONVERGE_TASKS, BURST):
        host.publish(bodies[first : first + BURST])
        for seq, body in enumerate(bodies[first : first + BURST], start=first + 1):
            await a.push(body)
            if seq % 2:
                await b.push(body)

    for node in (a, b):
        await node.wait_feed(in_sync_at(CONVERGE_TASKS), timeout=20)
    ours_a, ours_b = register_content(a.db), register_content(b.db)
    assert len(ours_a["tasks"]) == CONVERGE_TASKS
    for table in ours_a:
        assert ours_a[table] == ours_b[table], f"{table} differs between the nodes"
    assert {status for *_, status in ours_a["tasks"]} == {"applied"}
    # The head each holds is the feed's, and its chain is the one over their payloads.
    head_chain = host.chain().hex()
    assert ours_a["feed_heads"] == [(ISS, host.server.session, CONVERGE_TASKS, head_chain)]
    assert register_chain(a.db, CONVERGE_TASKS).hex() == head_chain
    assert register_chain(b.db, CONVERGE_TASKS).hex() == head_chain

    # The same enforcement, and the one the log means: lookups, DNS, the RPZ zone.
    expected = {d: "blocked" if d in blocked else "allowed" for d in named}
    for node in (a, b):
        assert await node.verdicts(sorted(named)) == expected
        assert await node.verdicts([f"x.{d}" for d in sorted(blocked)[:5]]) == {
            f"x.{d}": "blocked" for d in sorted(blocked)[:5]
        }
        assert restricted_names(node.db) == blocked
        assert await node.rpz_names() == blocked
        for name in sorted(named):
            rcode = await node.dns_rcode(name)
            assert (rcode == "NXDOMAIN") == (name in blocked), (name, rcode)


# -- 2. kill -9 in the middle of a catch-up --------------------------------------------------


def catch_up_names(seq: int) -> list[str]:
    return [f"t{i}.c{seq}.kz" for i in range(CATCHUP_TARGETS)]


def catch_up_log(regulator: FastRegulator, n: int) -> list[bytes]:
    return [
        regulator.sign(
            regulator.restrict(f"K-{seq}", *(f"domain:{d}" for d in catch_up_names(seq)), seq=seq)
        )
        for seq in range(1, n + 1)
    ]


def names_of(seqs: range) -> set[str]:
    return {d for seq in seqs for d in catch_up_names(seq)}


async def agree(node: Node, held: int, total: int, rng: random.Random) -> None:
    """Register, stored head and enforcers all say tasks 1..held, none after."""
    assert held_seqs(node.db) == list(range(1, held + 1))
    head = stored_head(node.db)
    assert head is None or head[0] <= held, f"stored head {head} ahead of held 1..{held}"
    if head is not None:
        assert register_chain(node.db, head[0]).hex() == head[1]
    assert restricted_names(node.db) == names_of(range(1, held + 1))
    assert await node.rpz_names() == names_of(range(1, held + 1))
    inside = [
        d for s in rng.sample(range(1, held + 1), min(SAMPLE, held)) for d in catch_up_names(s)[:1]
    ]
    outside = [
        d
        for s in rng.sample(range(held + 1, total + 1), min(SAMPLE, total - held))
        for d in catch_up_names(s)[-1:]
    ]
    verdicts = await node.verdicts(inside + outside)
    assert verdicts == {**dict.fromkeys(inside, "blocked"), **dict.fromkeys(outside, "allowed")}
    for name in inside[:10] + outside[:10]:
        rcode = await node.dns_rcode(name)
        assert (rcode == "NXDOMAIN") == (name in inside), (name, rcode)


async def kill_past(node: Node, at_least: int, total: int, rng: random.Random) -> int:
    """SIGKILL the node soon after it holds ``at_least`` tasks; how many it held then."""
    async with asyncio.timeout(120):
        while await asyncio.to_thread(task_count, node.db) < at_least:
            await asyncio.sleep(0.01)
    await asyncio.sleep(rng.uniform(0.0, 0.1))  # not always just after a page's commit
    await node.kill()
    held = task_count(node.db)
    unsettled = unapplied(node.db)
    print(f"killed at {held} of {total} tasks, {unsettled} of them not yet applied")
    assert at_least <= held < total, f"the kill came at {held} of {total}: not mid catch-up"
    # Offline, as the kill left it: no gap, no head past what is held.
    assert held_seqs(node.db) == list(range(1, held + 1))
    head = stored_head(node.db)
    assert head is None or head[0] <= held, f"stored head {head} ahead of held 1..{held}"
    return held


async def test_sigkill_mid_catch_up_restarts_consistent_and_finishes(
    tmp_path: Path, pki: Path, host: FeedHost, nodes: list[Node]
) -> None:
    total = CATCHUP_TASKS
    seed = int(os.environ.get("KZGATE_CATCHUP_SEED", str(time.time_ns() % 10**6)))
    rng = random.Random(seed)
    host.publish(catch_up_log(FastRegulator(pki), total))
    node = await launch(nodes, Node(node_config(tmp_path, pki, host.url, interval=2, wait=0), pki))
    # Killed twice: in the first catch-up (from an empty register), then in the
    # catch-up the restart resumes; each time somewhere between 10 % and 90 %.
    held = 0
    for lo, hi in ((0.10, 0.45), (0.55, 0.90)):
        at_least = max(held + 1, rng.randint(int(total * lo), int(total * hi)))
        held = await kill_past(node, at_least, total, rng)
        print(f"seed {seed}")
        host.closed = True  # restart with the feed down: what the register alone restores
        await node.start()
        await agree(node, held, total, rng)
        rows = register_content(node.db)["tasks"]
        assert {status for *_, status in rows} == {"applied"}, "a held task left unapplied"
        host.closed = False  # the catch-up resumes

    resumed = time.monotonic()
    await node.wait_feed(in_sync_at(total), timeout=180, every=0.2)
    print(f"the last {total - held} tasks caught up in {time.monotonic() - resumed:.2f} s")
    await agree(node, total, total, rng)
    assert stored_head(node.db) == (total, host.chain().hex())
    assert {status for *_, status in register_content(node.db)["tasks"]} == {"applied"}


# -- 3. a pushed seq gap wakes the puller; 4. a long poll brings a task -----------------------


@pytest.mark.parametrize("wait", [0, 30], ids=["plain", "long-poll-in-flight"])
async def test_a_push_revealing_a_gap_pulls_the_missing_seqs_at_once(
    tmp_path: Path, pki: Path, host: FeedHost, nodes: list[Node], wait: float
) -> None:
    # With a 300 s interval, only the wake can bring seqs 1-2 within the test; with
    # wait > 0 a long poll is held meanwhile, and the feed does not end it (the tasks
    # are appended quietly): the wake must cut it short and run a round.
    node = await launch(
        nodes, Node(node_config(tmp_path, pki, host.url, interval=300, wait=wait), pki)
    )
    await node.wait_feed(in_sync_at(0), timeout=10)  # the pull at start is done
    regulator = FastRegulator(pki)
    bodies = [
        regulator.sign(regulator.restrict(f"G-{seq}", f"domain:gap{seq}.kz", seq=seq))
        for seq in (1, 2, 3)
    ]
    host.publish(bodies, wake_polls=False)
    pushed = time.monotonic()
    assert (await node.push(bodies[2]))["status"] == "applied"
    await node.wait_feed(in_sync_at(3), timeout=5, every=0.02)
    took = time.monotonic() - pushed
    print(f"wait {wait}: gap seqs 1-2 pulled, in sync {took:.3f} s after the push of seq 3")
    assert held_seqs(node.db) == [1, 2, 3]
    names = ["gap1.kz", "gap2.kz", "gap3.kz"]
    assert await node.verdicts(names) == dict.fromkeys(names, "blocked")


async def test_a_long_poll_brings_a_task_published_after_start(
    tmp_path: Path, pki: Path, host: FeedHost, nodes: list[Node]
) -> None:
    node = await launch(
        nodes, Node(node_config(tmp_path, pki, host.url, interval=300, wait=30), pki)
    )
    await node.wait_feed(in_sync_at(0), timeout=10)
    await asyncio.sleep(0.3)  # let the long poll after the first round be in flight
    regulator = FastRegulator(pki)
    published = time.monotonic()
    host.publish([regulator.sign(regulator.restrict("L-1", "domain:poll.kz", seq=1))])
    await node.wait_feed(lambda feed: feed["held_seq"] == 1, timeout=5, every=0.02)
    took = time.monotonic() - published
    print(f"long poll: task applied {took:.3f} s after it was published (interval 300 s)")
    assert held_seqs(node.db) == [1]
    assert await node.verdicts(["poll.kz"]) == {"poll.kz": "blocked"}
    assert await node.rpz_names() == {"poll.kz"}
