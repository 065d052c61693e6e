"""Feed benchmark: catch-up, long-poll delivery and gap wake-up, through ``kzgate run`` daemons.

Workload model: one issuer (mci) publishes 10-target restricts (8 domains, 1
address, 1 /24; all new targets) on the reference feed server
(``kzgate/feed/server.py`` ``FeedServer``, in this process, grown with
``publish()``, over TLS with the development certificates and a required
client certificate). The daemons are child processes on loopback, each with a
fresh register (WAL, ``synchronous=FULL``), the DNS index and the dry-run
enforcer (the defaults), ``mci``'s feed configured as an operator would.
Enforcement is observed from outside: a UDP query to the daemon's DNS
listener for a target of the task, sent about every millisecond, until it is
answered NXDOMAIN (blocked).

1. Catch-up: ``--tasks`` tasks wait on the feed; a node starts with an empty
   register (``interval`` 300 s, ``wait`` 25 s). Timed from the node's first
   request to the feed (and, for reference, from exec and from its "ready"
   line) until its ``/status`` says ``held_seq`` = ``--tasks`` and
   ``in_sync``; then a domain of the last task must be blocked by DNS. Also
   with the RPZ primary on (``dns+rpz``; ``--no-rpz`` skips it): ``--rounds``
   fresh nodes of each, alternating, the order reversed each round. Reference,
   in the same run: the same task bytes pushed one by one over HTTPS (mutual
   TLS, one connection) into another fresh node without a feed (the first
   ``--push-tasks`` of them; fewer than ``--tasks`` is extrapolated linearly,
   and the report says so).
2. Long-poll delivery: ``--deliver`` more tasks, published one at a time on the
   feed, each once the one before is seen blocked (and pushed to the reference
   node): publish() -> blocked by the catch-up node's DNS. Reference: the same
   bytes pushed to the push node, POST -> receipt, and POST -> blocked by its
   DNS. The first ``WARMUP`` of each are not counted. Where the time goes:
   publish -> the feed answers the long poll (stamped in this process), ->
   the daemon's "outcome=applied" log line (its clock, to the millisecond),
   and that line's ``apply_ms`` (the page's verify + record + apply).
3. Gap: a node with ``interval`` 300 s and ``wait`` 0 (no long poll); seq k is
   published on the feed only, then seq k+1 is pushed: the push reveals the gap
   and wakes the puller. Timed from the push's receipt until k is blocked by
   DNS, ``--gaps`` times.

    .venv/bin/python bench/feed.py [--tasks 10000] [--push-tasks 10000] [--deliver 200]
                                   [--gaps 20] [--rounds 2] [--no-rpz] [--quick] [--out FILE]

Prints a table and the JSON report, and writes the report to
``bench/results/feed-<time>.json`` (or ``--out``). Exits non-zero when a check
fails (a task not blocked, a node not in sync), not when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from feed_take import signed_tasks, ten_targets  # noqa: E402
from intake import pct  # noqa: E402

from kzgate.devpki import ensure_dev_material  # noqa: E402
from kzgate.feed.issuerlog import IssuerLog, Signer  # noqa: E402
from kzgate.feed.server import FeedServer  # noqa: E402
from kzgate.keys import load_private_key  # noqa: E402
from kzgate.tls import server_context  # noqa: E402
from tests.support.daemon_proc import DaemonProcess  # noqa: E402
from tests.support.dnsmsg import query  # noqa: E402
from tests.support.kzfixtures import client_ssl, write_config  # noqa: E402

NXDOMAIN = 3
WARMUP = 10  # deliveries and pushes not counted (first long polls, TLS, code paths)
START_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 300.0
ENFORCE_TIMEOUT = 10.0  # a task not blocked this long after publish/push fails the run
PROBE_EVERY = 0.001  # seconds between DNS probes of one name
STATUS_EVERY = 0.02  # seconds between /status reads while catching up
GAP_BEFORE = 5  # tasks the gap node holds from the feed before the first gap
EMPTY_PAGE = b'{"tasks":[]}'
GOALS = {"catch_up_s": 30.0, "deliver_p99_ms": 100.0, "gap_s": 1.0}


def blocked_name(seq: int) -> str:
    """A domain target of the task with ``seq`` (signed_tasks: seq n is ten_targets(n - 1))."""
    return ten_targets(seq - 1)[0].split(":", 1)[1]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values) * 1000, 2),
        "p99": round(pct(values, 0.99) * 1000, 2),
        "max": round(max(values) * 1000, 2),
        "n": len(values),
    }


# -- the feed --------------------------------------------------------------------------


class Feed:
    """The reference feed server of mci on 127.0.0.1 (mutual TLS), recording when it is asked."""

    def __init__(self, pki: Path) -> None:
        signer = Signer("mci", load_private_key(pki / "keys/mci-dev.key"), "mci-dev")
        self.server = FeedServer(
            IssuerLog(signer), "5a1e0b5e-0000-4000-8000-000000000001", base="mci"
        )
        self.pki = pki
        self.requests: list[float] = []  # perf_counter of each request, in order
        self.served: list[float] = []  # ... of each page of tasks served (not an empty one)

    async def start(self) -> None:
        tls = server_context(
            self.pki / "tls/server.crt", self.pki / "tls/server.key", self.pki / "tls/ca.crt"
        )
        await self.server.start("127.0.0.1", 0, tls, middlewares=[self._stamp])

    @web.middleware
    async def _stamp(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(time.perf_counter())
        response: web.StreamResponse = await handler(request)
        page = isinstance(response, web.Response) and request.path.endswith("/tasks")
        if page and response.body != EMPTY_PAGE:
            self.served.append(time.perf_counter())
        return response

    def first_request_after(self, t: float) -> float | None:
        return next((r for r in self.requests if r >= t), None)

    def served_after(self, t: float) -> float | None:
        return next((r for r in reversed(self.served) if r >= t), None)

    def config(self, *, interval: float, wait: float) -> dict[str, Any]:
        tls = self.pki / "tls"
        return {
            "url": f"https://127.0.0.1:{self.server.port}/mci",
            "ca": str(tls / "ca.crt"),
            "client_cert": str(tls / "client.crt"),
            "client_key": str(tls / "client.key"),
            "interval": interval,
            "wait": wait,
        }


# -- a node --------------------------------------------------------------------------


class DnsProbe:
    """One UDP socket to a node's DNS listener: when is a name first answered NXDOMAIN?"""

    def __init__(self) -> None:
        self._answers: asyncio.Queue[bytes] = asyncio.Queue()
        self._transport: asyncio.DatagramTransport | None = None
        self._ids = itertools.cycle(range(1, 65536))

    async def open(self, port: int) -> None:
        answers = self._answers

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                answers.put_nowait(data)

        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", port)
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def rcode(self, name: str, wait: float = 1.0) -> int | None:
        assert self._transport is not None
        qid = next(self._ids)
        self._transport.sendto(query(name, qid=qid))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while True:
                    answer = await self._answers.get()
                    if int.from_bytes(answer[:2], "big") == qid:  # late answers are dropped
                        return answer[3] & 0x0F
        return None

    async def blocked_at(self, name: str, timeout: float = ENFORCE_TIMEOUT) -> float:
        """perf_counter when ``name`` is first answered NXDOMAIN (probing every ~1 ms)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if await self.rcode(name) == NXDOMAIN:
                return time.perf_counter()
            await asyncio.sleep(PROBE_EVERY)
        raise SystemExit(f"{name} not blocked within {timeout:g} s")


@dataclass
class Node:
    """One ``kzgate run`` child with its own register, DNS probe and HTTPS session."""

    name: str
    work: Path
    pki: Path
    sections: dict[str, Any]
    daemon: DaemonProcess | None = None
    probe: DnsProbe = field(default_factory=DnsProbe)
    session: aiohttp.ClientSession | None = None
    spawned: float = 0.0
    ready: float = 0.0

    async def start(self) -> None:
        self.work.mkdir()
        config = write_config(
            self.work,
            self.pki,
            api={"rate_limit": {"per_second": 1e6, "burst": 1_000_000}},
            **self.sections,
        )
        self.daemon = DaemonProcess(config)
        self.spawned = time.perf_counter()
        await self.daemon.start(timeout=START_TIMEOUT)
        self.ready = time.perf_counter()
        await self.probe.open(self.daemon.ports["dns"])
        connector = aiohttp.TCPConnector(ssl=client_ssl(self.pki), limit=1)
        self.session = aiohttp.ClientSession(connector=connector)

    async def stop(self) -> None:
        self.probe.close()
        if self.session is not None:
            await self.session.close()
        if self.daemon is not None:
            self.daemon.kill()
            await self.daemon.wait()
            self.daemon = None

    async def status(self) -> dict[str, Any]:
        assert self.daemon is not None and self.session is not None
        url = f"http://127.0.0.1:{self.daemon.ports['metrics']}/status"
        async with self.session.get(url) as r:
            r.raise_for_status()
            status: dict[str, Any] = await r.json()
            return status

    async def feed_status(self) -> dict[str, Any]:
        feed: dict[str, Any] = (await self.status())["feeds"]["mci"]
        return feed

    async def push(self, body: bytes) -> float:
        """POST one task; perf_counter when its receipt (200, applied) has arrived."""
        assert self.daemon is not None and self.session is not None
        url = f"https://127.0.0.1:{self.daemon.ports['api']}/v1/tasks"
        headers = {"Content-Type": "application/jose"}
        async with self.session.post(url, data=body, headers=headers) as r:
            receipt = await r.read()
            if r.status != 200:
                raise SystemExit(f"{self.name}: push answered {r.status}: {receipt[:300]!r}")
        return time.perf_counter()

    async def in_sync_at(self, seq: int, timeout: float) -> float:
        """perf_counter when /status first says held_seq >= ``seq`` and in_sync."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            feed = await self.feed_status()
            if feed["held_seq"] >= seq and feed["state"] == "in_sync":
                return time.perf_counter()
            await asyncio.sleep(STATUS_EVERY)
        raise SystemExit(f"{self.name}: not in sync at seq {seq} in {timeout:g} s: {feed}")


@contextlib.asynccontextmanager
async def running(node: Node) -> AsyncIterator[Node]:
    try:
        await node.start()
        yield node
    finally:
        await node.stop()


# -- the measures ----------------------------------------------------------------------


async def catch_up(node: Node, feed: Feed, tasks: int) -> dict[str, Any]:
    """The node (just started, with ``tasks`` waiting on the feed) until it holds them all,
    in sync; then the last task must be blocked by its DNS."""
    done = await node.in_sync_at(tasks, CATCH_UP_TIMEOUT)
    first = feed.first_request_after(node.spawned)
    assert first is not None
    last_name = blocked_name(tasks)
    rcode = await node.probe.rcode(last_name)
    if rcode != NXDOMAIN:
        raise SystemExit(f"{node.name}: {last_name} (seq {tasks}) answered rcode {rcode}")
    status = await node.status()
    seconds = done - first
    return {
        "tasks": tasks,
        "catch_up_s": round(seconds, 2),
        "tasks_per_s": round(tasks / seconds, 1),
        "from_exec_s": round(done - node.spawned, 2),
        "from_ready_s": round(done - node.ready, 2),
        "first_pull_after_exec_s": round(first - node.spawned, 2),
        "ready_after_exec_s": round(node.ready - node.spawned, 2),
        "last_task_blocked": True,
        "enforcers": status["enforcers"],
        "feed": status["feeds"]["mci"],
    }


async def push_reference(node: Node, bodies: list[bytes], of: int) -> dict[str, Any]:
    """``bodies`` pushed one by one; the time for ``of`` tasks at the same rate."""
    latencies = []
    started = time.perf_counter()
    for body in bodies:
        sent = time.perf_counter()
        latencies.append(await node.push(body) - sent)
    seconds = time.perf_counter() - started
    seq = len(bodies)
    if await node.probe.rcode(blocked_name(seq)) != NXDOMAIN:
        raise SystemExit(f"{node.name}: the last pushed task (seq {seq}) is not blocked")
    return {
        "pushed": len(bodies),
        "seconds": round(seconds, 2),
        "tasks_per_s": round(len(bodies) / seconds, 1),
        f"seconds_for_{of}": round(seconds * of / len(bodies), 2),
        "extrapolated": len(bodies) != of,
        "receipt_ms": ms(latencies),
    }


APPLIED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* task iss=mci id=\S+ seq=(\d+) "
    r"type=restrict outcome=applied apply_ms=([\d.]+)"
)


def applied_lines(lines: list[str], seqs: list[int]) -> dict[int, tuple[float, float]]:
    """seq -> (the epoch time of its "outcome=applied" log line, to the ms; its apply_ms):
    the daemon's own view of when a task taken from the feed was in force."""
    wanted, out = set(seqs), {}
    for line in lines:
        if (match := APPLIED.search(line)) and int(match[2]) in wanted:
            when = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")  # local time
            out[int(match[2])] = (when.timestamp(), float(match[3]))
    if len(out) != len(wanted):
        raise SystemExit(f"applied log lines for {len(out)} of {len(wanted)} delivered tasks")
    return out


async def not_blocked(name: str, *nodes: Node) -> None:
    """A name about to be restricted is not answered NXDOMAIN yet: NXDOMAIN means blocked."""
    for node in nodes:
        if (rcode := await node.probe.rcode(name)) in (NXDOMAIN, None):
            raise SystemExit(f"{node.name}: {name} answered rcode {rcode} before its task")


async def deliver(feed: Feed, puller: Node, pusher: Node, bodies: list[bytes]) -> dict[str, Any]:
    """Each task published on the feed, then pushed to the reference node, one at a time."""
    delivered, receipts, push_blocked, served, wall = [], [], [], [], {}
    for i, body in enumerate(bodies):
        seq = feed.server.log.seq + 1
        name = blocked_name(seq)
        await not_blocked(name, puller, pusher)
        published = time.perf_counter()
        wall[seq] = time.time()
        feed.server.publish(body)
        seen = await puller.probe.blocked_at(name)
        answered = feed.served_after(published)
        if answered is None:
            raise SystemExit(f"seq {seq} blocked, but the feed served no page since publishing it")
        sent = time.perf_counter()
        received = await pusher.push(body)
        pushed_seen = await pusher.probe.blocked_at(name)
        if i >= WARMUP:
            delivered.append(seen - published)
            served.append(answered - published)
            receipts.append(received - sent)
            push_blocked.append(pushed_seen - sent)
    status = await puller.feed_status()
    assert puller.daemon is not None
    logged = applied_lines(puller.daemon.log, list(wall)[WARMUP:])
    return {
        "tasks": len(delivered),
        "warmup": WARMUP,
        "pacing": "each task published once the one before was blocked on both nodes",
        "publish_to_blocked_ms": ms(delivered),
        "slowest_ms": sorted(round(v * 1000, 1) for v in delivered)[-5:],
        "publish_to_feed_answer_ms": ms(served),
        "publish_to_log_line_ms": ms([logged[seq][0] - wall[seq] for seq in logged]),
        "take_ms_as_logged": ms([logged[seq][1] / 1000 for seq in logged]),
        "push_receipt_ms": ms(receipts),
        "push_to_blocked_ms": ms(push_blocked),
        "feed": status,
    }


async def gaps(node: Node, feed: Feed, bodies: list[bytes], reps: int) -> dict[str, Any]:
    """Seq k only on the feed, k+1 pushed: from the push's receipt until k is blocked."""
    for body in bodies[:GAP_BEFORE]:
        feed.server.publish(body)
    async with running(node):
        await node.in_sync_at(GAP_BEFORE, START_TIMEOUT)
        from_receipt, from_post = [], []
        k = GAP_BEFORE + 1
        for _ in range(reps):
            await not_blocked(blocked_name(k), node)
            feed.server.publish(bodies[k - 1])  # seq k: the feed only
            sent = time.perf_counter()
            received = await node.push(bodies[k])  # seq k + 1: reveals the gap
            seen = await node.probe.blocked_at(blocked_name(k))
            from_receipt.append(max(0.0, seen - received))
            from_post.append(seen - sent)
            feed.server.publish(bodies[k])  # the feed catches up with the push
            k += 2
        # k is blocked a moment before the round that took it reads what is held
        await node.in_sync_at(k - 1, START_TIMEOUT)
        feed_status = await node.feed_status()
        return {
            "repetitions": reps,
            "receipt_to_blocked_ms": ms(from_receipt),
            "post_to_blocked_ms": ms(from_post),
            "feed": feed_status,
        }


# -- the run ---------------------------------------------------------------------------


def feed_sections(feed: Feed, *, interval: float, wait: float, **more: Any) -> dict[str, Any]:
    issuers = [
        {
            "id": "mci",
            "keys": [{"kid": "mci-dev", "public_key": str(feed.pki / "keys/mci-dev.pub")}],
            "feed": feed.config(interval=interval, wait=wait),
        }
    ]
    return {"issuers": issuers, **more}


RPZ = {"rpz": {"enabled": True, "listen": ["127.0.0.1:0"], "notify": []}}


PROFILES = {"dns": {}, "dns+rpz": RPZ}  # the DNS index and dry-run are always on


async def catch_ups(
    feed: Feed, base: Path, args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> tuple[dict[str, Any], Node]:
    """``args.rounds`` catch-ups of each profile, alternating (the order reversed each
    round); the last ``dns`` node is left running (on ``stack``) for the delivery phase."""
    profiles = ["dns"] if args.no_rpz else list(PROFILES)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in profiles}
    kept: Node | None = None
    for r in range(args.rounds):
        for p in profiles if r % 2 == 0 else profiles[::-1]:
            say(f"catch-up of {args.tasks}, {p}, round {r + 1}")
            sections = feed_sections(feed, interval=300, wait=25, **PROFILES[p])
            node = Node(f"{p} #{r + 1}", base / f"catch-up-{p}-{r + 1}", base / "pki", sections)
            if p == "dns" and r == args.rounds - 1:
                kept = await stack.enter_async_context(running(node))
                runs[p].append(await catch_up(node, feed, args.tasks))
            else:
                async with running(node):
                    runs[p].append(await catch_up(node, feed, args.tasks))
    assert kept is not None
    return {p: summary(each) for p, each in runs.items()}, kept


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["catch_up_s"] for r in runs]
    median = round(statistics.median(seconds), 2)
    return {
        "tasks": runs[0]["tasks"],
        "catch_up_s": median,
        "tasks_per_s": round(runs[0]["tasks"] / median, 1),
        "catch_up_s_each": seconds,
        "from_exec_s": round(statistics.median(r["from_exec_s"] for r in runs), 2),
        "from_ready_s": round(statistics.median(r["from_ready_s"] for r in runs), 2),
        "runs": runs,
    }


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    pki = base / "pki"
    ensure_dev_material(pki)
    began = time.perf_counter()
    bodies = signed_tasks(pki, args.tasks + args.deliver + 2 * args.gaps + GAP_BEFORE)
    say(f"signed {len(bodies)} tasks in {time.perf_counter() - began:.1f} s")
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "goals": GOALS,
    }
    feed, gap_feed = Feed(pki), Feed(pki)
    await feed.start()
    await gap_feed.start()
    try:
        for body in bodies[: args.tasks]:
            feed.server.publish(body)
        async with contextlib.AsyncExitStack() as stack:
            report["catch_up"], puller = await catch_ups(feed, base, args, stack)
            pusher = await stack.enter_async_context(running(Node("push", base / "push", pki, {})))
            say(f"push reference: {args.push_tasks} one by one")
            report["push"] = await push_reference(pusher, bodies[: args.push_tasks], args.tasks)
            say(f"long-poll delivery of {args.deliver}")
            report["deliver"] = await deliver(
                feed, puller, pusher, bodies[args.tasks : args.tasks + args.deliver]
            )
        say(f"gaps: {args.gaps}")
        gapper = Node("gap", base / "gap", pki, feed_sections(gap_feed, interval=300, wait=0))
        report["gap"] = await gaps(gapper, gap_feed, bodies, args.gaps)
    finally:
        await feed.server.close()
        await gap_feed.server.close()
    report["seconds"] = round(time.perf_counter() - began, 1)
    return report


def say(text: str) -> None:
    print(f"[feed] {text}", file=sys.stderr, flush=True)


def table(report: dict[str, Any]) -> str:
    """The measures, the reference measured in the same run, and the goal."""
    cu, push, dl, gap = report["catch_up"]["dns"], report["push"], report["deliver"], report["gap"]
    tasks = cu["tasks"]
    est = " (extrapolated)" if push["extrapolated"] else ""
    rows = [
        (
            f"catch-up of {tasks:,}, s (first request to in_sync; median of {len(cu['runs'])})",
            f"{cu['catch_up_s']} ({cu['tasks_per_s']:,} tasks/s); each {cu['catch_up_s_each']}",
            f"pushed one by one: {push[f'seconds_for_{tasks}']}{est} "
            f"({push['tasks_per_s']:,} tasks/s)",
            f"<= {GOALS['catch_up_s']:g}",
        ),
        (
            "  the same, from exec / from ready, s",
            f"{cu['from_exec_s']} / {cu['from_ready_s']}",
            "",
            "",
        ),
    ]
    if rpz := report["catch_up"].get("dns+rpz"):
        rows.append(
            (
                f"catch-up of {tasks:,} with RPZ, s (median of {len(rpz['runs'])})",
                f"{rpz['catch_up_s']} ({rpz['tasks_per_s']:,} tasks/s); "
                f"each {rpz['catch_up_s_each']}",
                f"{rpz['catch_up_s'] / cu['catch_up_s']:.2f}x without RPZ",
                f"<= {GOALS['catch_up_s']:g}",
            )
        )
    d, r, b = dl["publish_to_blocked_ms"], dl["push_receipt_ms"], dl["push_to_blocked_ms"]
    fa, ll = dl["publish_to_feed_answer_ms"], dl["publish_to_log_line_ms"]
    tk = dl["take_ms_as_logged"]
    g, gp = gap["receipt_to_blocked_ms"], gap["post_to_blocked_ms"]
    rows += [
        (
            f"long poll: publish -> blocked, ms p50 / p99 (n={d['n']})",
            f"{d['p50']} / {d['p99']}",
            f"push: POST -> receipt {r['p50']} / {r['p99']}; "
            f"POST -> blocked {b['p50']} / {b['p99']}",
            f"p99 <= {GOALS['deliver_p99_ms']:g}",
        ),
        (
            "  where: publish -> feed answers / -> applied log line; take (apply_ms), ms p50 / p99",
            f"{fa['p50']} / {fa['p99']}; {ll['p50']} / {ll['p99']}; {tk['p50']} / {tk['p99']}",
            "",
            "",
        ),
        (
            f"gap: receipt of k+1 -> k blocked, ms p50 / max (n={g['n']})",
            f"{g['p50']} / {g['max']}",
            f"POST of k+1 -> k blocked {gp['p50']} / {gp['max']}",
            f"<= {GOALS['gap_s'] * 1000:g}",
        ),
    ]
    out = ["| measure | feed | reference, same run | goal |", "| --- | --- | --- | --- |"]
    out += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks to catch up on")
    parser.add_argument("--push-tasks", type=int, help="of them pushed as the reference (all)")
    parser.add_argument("--deliver", type=int, default=200, help="tasks delivered by long poll")
    parser.add_argument("--gaps", type=int, default=20, help="gap repetitions")
    parser.add_argument("--rounds", type=int, default=2, help="catch-ups of each profile")
    parser.add_argument("--no-rpz", action="store_true", help="skip the catch-ups with RPZ on")
    parser.add_argument("--quick", action="store_true", help="small counts: a check that it runs")
    parser.add_argument("--out", type=Path, help="the JSON report (default bench/results/)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.deliver, args.gaps, args.rounds = 300, WARMUP + 20, 5, 1
    args.push_tasks = min(args.tasks, args.push_tasks or args.tasks)
    if min(args.tasks, args.gaps, args.rounds) < 1 or args.deliver <= WARMUP:
        parser.error(f"--tasks, --gaps and --rounds must be >= 1, --deliver > {WARMUP}")
    with tempfile.TemporaryDirectory(prefix="kzgate-bench-feed-") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    out = args.out or ROOT / "bench/results" / f"feed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    print()
    print(table(report))
    say(f"report written to {out}")


if __name__ == "__main__":
    main()
