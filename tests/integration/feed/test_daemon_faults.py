"""Issue 12's "bad input and faults", at the level of the whole daemon.

A real in-process ``Daemon`` (TLS intake, register file, DNS listener, the
feed puller with the real FeedClient) pulls from a scripted hostile feed
(tests/support/feedpeer.py). For each fault the test checks what §6 of
task-protocol.md documents: the state in ``/status`` and on /metrics, the
pull outcome, the audit row where §6 asks for one; that nothing was stored
wrongly (the register file read read-only); and that intake and DNS kept
answering during the fault.

The client's timeouts are made small (a patched factory in kzgate.daemon, the
same FeedClient) so a hanging feed costs a second, not ten.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import re
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import kzgate.daemon
from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.devpki import ensure_dev_material
from kzgate.feed.client import FeedClient
from kzgate.feed.issuerlog import Signer
from kzgate.keys import load_private_key
from kzgate.protocol.jws import b64url_encode, parse_compact
from tests.integration.feed.helpers import tasks
from tests.support.dnsmsg import query, rcode, udp_exchange
from tests.support.feedpeer import Drip, FeedPeer, Hang, Reply
from tests.support.kzfixtures import Regulator, client_ssl, push_task, write_config

NXDOMAIN = 3
OTHER_SESSION = "3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10"
INTERVAL = 0.3  # seconds between rounds (and the backoff's cap)
MARGIN = 1.0  # the client's total timeout beyond a long poll's wait


def tampered(body: bytes) -> bytes:
    """The same JWS with its signature changed."""
    head, payload, sig = body.split(b".")
    return b".".join([head, payload, sig[:-2] + (b"AA" if sig[-2:] != b"AA" else b"BA")])


def payload_sha(body: bytes) -> str:
    return hashlib.sha256(parse_compact(body).payload).hexdigest()


def forged(seq: int) -> bytes:
    """A JWS that claims ``seq`` and carries a signature of nothing in particular."""
    header = b64url_encode(
        json.dumps({"alg": "EdDSA", "kid": "mci-dev", "typ": "kzgate-task+json"}).encode()
    )
    payload = b64url_encode(
        json.dumps({"v": 1, "iss": "mci", "seq": seq, "id": f"forged-{seq}"}).encode()
    )
    return f"{header}.{payload}.{'A' * 86}".encode()


@dataclass
class Rig:
    daemon: Daemon
    peer: FeedPeer
    pki: Path
    config: Path
    served: list[int] = field(default_factory=list)  # sts seqs pushed by serving()

    # -- what the daemon shows ----------------------------------------------------------

    async def live(self) -> dict[str, Any]:
        host, port = self.daemon.bound["metrics"]
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/status") as r:
            assert r.status == 200
            status: dict[str, Any] = await r.json()
            return status

    async def feed(self) -> dict[str, Any]:
        feeds = (await self.live())["feeds"]
        return dict(feeds["mci"])

    async def metrics(self) -> str:
        host, port = self.daemon.bound["metrics"]
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/metrics") as r:
            return await r.text()

    async def pulls(self, outcome: str) -> float:
        return sample(await self.metrics(), "kzgate_feed_pulls_total", outcome=outcome)

    async def gauge_state(self) -> str:
        text = await self.metrics()
        on = re.findall(r'^kzgate_feed_state\{issuer="mci",state="(\w+)"\} 1\.0$', text, re.M)
        assert len(on) == 1, on
        return on[0]

    async def until(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 8.0
    ) -> dict[str, Any]:
        """The feed's status once ``check`` holds for it."""
        feed: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    feed = await self.feed()
                    if check(feed):
                        return feed
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"not {what} within {timeout} s: {feed}") from None

    async def state(self, state: str, timeout: float = 8.0) -> dict[str, Any]:
        feed = await self.until(lambda f: f["state"] == state, state, timeout)
        assert await self.gauge_state() == state
        return feed

    async def more_pulls(self, outcome: str, n: int = 1, timeout: float = 8.0) -> None:
        """Wait for ``n`` more pulls with ``outcome`` than now."""
        start = await self.pulls(outcome)
        async with asyncio.timeout(timeout):
            while await self.pulls(outcome) < start + n:
                await asyncio.sleep(0.05)

    # -- what the register holds (read-only) ------------------------------------------------

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(f"file:{self.daemon.cfg.register.path}?mode=ro", uri=True)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def held(self) -> dict[int, str]:
        """seq -> sha256 of each stored task of mci."""
        rows = self.rows("SELECT seq, sha256 FROM tasks WHERE iss = 'mci' ORDER BY seq")
        return {int(seq): str(sha) for seq, sha in rows}

    def head_row(self) -> tuple[str, int, str] | None:
        rows = self.rows("SELECT session, seq, chain FROM feed_heads WHERE iss = 'mci'")
        return (str(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None

    def audit(self, event: str) -> list[dict[str, Any]]:
        rows = self.rows("SELECT data FROM audit WHERE event = ? ORDER BY seq", event)
        return [json.loads(data) for (data,) in rows]

    def published_head(self, seq: int) -> tuple[str, int, str]:
        return (self.peer.session, seq, self.peer.log.chain_at(seq).hex())

    # -- intake and DNS -----------------------------------------------------------------------

    async def receipt(self, iss: str, task_id: str) -> tuple[int, dict[str, Any]]:
        port = self.daemon.bound["api"][1]
        connector = aiohttp.TCPConnector(ssl=client_ssl(self.pki))
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.get(f"https://127.0.0.1:{port}/v1/tasks/{iss}/{task_id}") as r,
        ):
            return r.status, await r.json()

    async def blocked(self, name: str) -> bool:
        answer = await udp_exchange(self.daemon.bound["dns"][1], query(name))
        return rcode(answer) == NXDOMAIN

    async def serving(self) -> None:
        """A task pushed now is answered with its receipt and blocks its name in DNS.
        Pushed as issuer sts, so that mci's feed and seqs are left alone."""
        n = len(self.served) + 1
        sts = Regulator(self.pki, iss="sts", kid="sts-dev")
        status, answer = await push_task(
            self.daemon.bound["api"][1],
            self.pki,
            sts.sign(sts.restrict(f"svc-{n}", f"domain:svc{n}.kz", seq=n)),
        )
        assert status == 200 and answer["status"] == "applied", answer
        self.served.append(n)
        assert await self.blocked(f"www.svc{n}.kz")


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted({"issuer": "mci", **labels}.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(got.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{want}}}")


def feed_section(peer: FeedPeer, **overrides: Any) -> dict[str, Any]:
    tls = peer.pki / "tls" if peer.pki else Path()
    section: dict[str, Any] = {
        "url": peer.url,
        "ca": str(tls / "ca.crt"),
        "client_cert": str(tls / "client.crt"),
        "client_key": str(tls / "client.key"),
        "interval": INTERVAL,
        "wait": 0,
    }
    section.update(overrides)
    return section


@pytest.fixture
def quick_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's FeedClient with second-scale timeouts (the defaults are 5 s and 10 s)."""
    monkeypatch.setattr(
        kzgate.daemon,
        "FeedClient",
        functools.partial(FeedClient, margin=MARGIN, connect_timeout=1.0),
    )


@pytest.fixture
async def start(tmp_path: Path, pki: Path, quick_client: None) -> AsyncIterator[Callable[..., Any]]:
    """start(published=n, feed=..., api=...) -> a Rig: a peer publishing mci's tasks 1..n
    and a daemon pulling it."""
    running: list[Rig] = []

    async def _start(
        published: int = 0, *, feed: dict[str, Any] | None = None, api: dict[str, Any] | None = None
    ) -> Rig:
        peer = await FeedPeer.start_tls(pki)
        for body in tasks(pki, 1, published):
            peer.publish(body)
        cfg = yaml.safe_load(write_config(tmp_path, pki).read_text())
        cfg["issuers"][0]["feed"] = feed_section(peer, **(feed or {}))
        cfg["api"].update(api or {})
        path = tmp_path / "kzgate.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        daemon = Daemon(load_config(path))
        try:
            await daemon.start()
        except BaseException:
            await peer.close()
            raise
        rig = Rig(daemon, peer, pki, path)
        running.append(rig)
        return rig

    yield _start
    for rig in running:
        await rig.daemon.stop()
        await rig.peer.close()


Start = Callable[..., Any]


# -- the happy path ---------------------------------------------------------------------------


async def test_a_task_published_only_on_the_feed_is_applied(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=3)
    feed = await rig.state("in_sync")
    assert (feed["head_seq"], feed["held_seq"], feed["gaps"], feed["error"]) == (3, 3, 0, "")
    assert feed["last_pull"] is not None
    assert rig.head_row() == rig.published_head(3)
    status, receipt = await rig.receipt("mci", "restrict-04-2-2")
    assert status == 200 and receipt["status"] == "applied", receipt
    assert await rig.blocked("www.t2.kz")
    # one published later is pulled at the next round
    rig.peer.publish(tasks(pki, 4, 4)[0])
    await rig.until(lambda f: f["held_seq"] == 4 and f["state"] == "in_sync", "held 4")
    assert await rig.blocked("t4.kz")
    assert rig.head_row() == rig.published_head(4)
    assert sorted(rig.held()) == [1, 2, 3, 4]
    assert await rig.pulls("ok") >= 2
    await rig.serving()


# -- heads --------------------------------------------------------------------------------------


async def test_a_head_with_a_bad_signature_is_refused(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=3)
    await rig.state("in_sync")
    rig.peer.publish(tasks(pki, 4, 4)[0])
    rig.peer.script.head_bytes = tampered(rig.peer.head_body())
    await rig.more_pulls("bad_head", 2)
    feed = await rig.state("unreachable")
    assert "head refused: bad_signature" in feed["error"], feed
    await rig.serving()
    # the round stopped at the head: task 4 was not taken, the stored head is the old one
    assert sorted(rig.held()) == [1, 2, 3]
    assert rig.head_row() == rig.published_head(3)
    assert feed["head_seq"] == 3


async def test_a_head_signed_with_another_issuers_key_is_refused(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    rig.peer.script.head_signer = Signer(
        "mci", load_private_key(pki / "keys/sts-dev.key"), "sts-dev"
    )
    rig.peer.publish(tasks(pki, 3, 3)[0])
    await rig.more_pulls("bad_head")
    feed = await rig.state("unreachable")
    assert feed["error"].startswith("head refused: "), feed
    assert "sts" in feed["error"], feed
    await rig.serving()
    assert sorted(rig.held()) == [1, 2]
    assert rig.head_row() == rig.published_head(2)


async def test_a_lower_seq_in_the_same_session_is_a_rollback(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=5)
    await rig.state("in_sync")
    rig.peer.script.head_seq = 3
    await rig.more_pulls("rollback", 3)  # several rounds: alarmed once
    feed = await rig.state("rollback")
    assert "head seq 3 below the accepted 5" in feed["error"]
    assert rig.head_row() == rig.published_head(5)
    rows = rig.audit("feed_rollback")
    assert len(rows) == 1 and (rows[0]["stored_seq"], rows[0]["head_seq"]) == (5, 3), rows
    assert sorted(rig.held()) == [1, 2, 3, 4, 5]
    await rig.serving()
    # `kzgate status` shows it, in capitals
    text = await kzgate_status(rig)
    line = next(x for x in text.splitlines() if x.startswith("feed mci"))
    assert "ROLLBACK" in line and "head 5" in line and "below the accepted 5" in line, text


async def kzgate_status(rig: Rig) -> str:
    cfg = yaml.safe_load(rig.config.read_text())
    host, port = rig.daemon.bound["metrics"]
    cfg["metrics"]["listen"] = f"{host}:{port}"
    rig.config.write_text(yaml.safe_dump(cfg))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kzgate",
        "status",
        "--config",
        str(rig.config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_an_expired_head_is_stale_and_not_stored(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=3)
    await rig.state("in_sync")
    rig.peer.script.head_issued_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    rig.peer.publish(tasks(pki, 4, 4)[0])
    await rig.more_pulls("stale")
    feed = await rig.state("stale")
    assert "head expired at 2020-01-01" in feed["error"], feed
    assert rig.head_row() == rig.published_head(3)  # the stale head is not stored
    # judge.py: a stale head's tasks are still pulled (each is signed on its own)
    await rig.until(lambda f: f["held_seq"] == 4, "held 4")
    assert sorted(rig.held()) == [1, 2, 3, 4]
    await rig.serving()


async def test_a_new_session_is_alarmed_and_the_log_read_again(start: Start) -> None:
    rig: Rig = await start(published=3)
    await rig.state("in_sync")
    before = rig.held()
    asked = len(rig.peer.requests)
    rig.peer.script.head_session = OTHER_SESSION
    await rig.until(
        lambda f: rig.head_row() is not None and rig.head_row()[0] == OTHER_SESSION, "new"
    )  # type: ignore[index]
    await rig.state("in_sync")
    assert rig.head_row() == (OTHER_SESSION, 3, rig.peer.log.chain_at(3).hex())
    rows = rig.audit("feed_new_session")
    assert len(rows) == 1 and rows[0]["new_session"] == OTHER_SESSION, rows
    assert ("tasks", "0") in [(n, q.get("after")) for n, q in rig.peer.requests[asked:]]
    assert rig.held() == before  # read again: duplicates, nothing changed
    await rig.serving()


# -- the order of the log -------------------------------------------------------------------


async def test_a_skipped_seq_keeps_what_came_before_it(start: Start) -> None:
    rig: Rig = await start(published=5)
    rig.peer.script.skipped = {3}
    await rig.more_pulls("fault", 2)
    feed = await rig.state("behind")
    assert (feed["head_seq"], feed["held_seq"], feed["gaps"]) == (5, 2, 3)
    assert "seq 4 served where 3 was due (skip)" in feed["error"], feed
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()
    assert await rig.blocked("t2.kz") and not await rig.blocked("t4.kz")
    # once served, it is caught up
    rig.peer.script.skipped = set()
    await rig.state("in_sync")
    assert sorted(rig.held()) == [1, 2, 3, 4, 5]


async def test_a_reordered_page_takes_nothing_past_what_is_held(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    rig.peer.script.swap_first_two = True
    for body in tasks(pki, 3, 5):
        rig.peer.publish(body)
    await rig.more_pulls("fault", 2)
    feed = await rig.state("behind")
    assert "seq 4 served where 3 was due (reorder)" in feed["error"], feed
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()


async def test_a_repeated_seq_is_a_fault_and_is_stored_once(start: Start) -> None:
    rig: Rig = await start(published=5)
    rig.peer.script.repeated = {3}
    # 1..3 are taken, the repeat stops the page; the next round goes on after 3
    await rig.state("in_sync")
    assert await rig.pulls("fault") >= 1
    assert sorted(rig.held()) == [1, 2, 3, 4, 5]
    assert len(rig.rows("SELECT 1 FROM tasks WHERE iss = 'mci'")) == 5
    await rig.serving()


# -- conflicts and divergence -------------------------------------------------------------------


async def test_a_conflict_on_a_held_seq_keeps_the_held_bytes(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=3)
    await rig.state("in_sync")
    held = rig.held()
    regulator = Regulator(pki)
    other = regulator.sign(regulator.restrict("other", "domain:other.kz", seq=2))
    rig.peer.script.replaced = {2: other}
    rig.peer.script.head_session = OTHER_SESSION  # the log is read again from seq 1
    await rig.until(lambda f: bool(rig.audit("feed_conflict")), "a conflict")
    rows = rig.audit("feed_conflict")
    assert rows[0]["seq"] == 2 and rows[0]["sha256"] == hashlib.sha256(other).hexdigest(), rows
    # the head commits to the log we hold: in sync, and nothing changed
    await rig.state("in_sync")
    assert rig.held() == held
    assert not await rig.blocked("other.kz")
    assert await rig.pulls("fault") >= 1
    # the rounds after it go on from what is held: the conflict is not read again
    await rig.more_pulls("ok", 2)
    assert len(rig.audit("feed_conflict")) == 1
    await rig.serving()


async def test_a_feed_whose_seq_k_differs_from_ours_is_diverged_at_k(
    start: Start, pki: Path
) -> None:
    # seq 3 reached us by push with other bytes than the issuer's log holds: the feed's
    # seq 3 is a conflict (alarmed first), then the head's chain (over the feed's seq 3)
    # differs from ours, and re-reading the log names seq 3.
    rig: Rig = await start(published=0)
    await rig.state("in_sync")
    regulator = Regulator(pki)
    ours = regulator.sign(regulator.restrict("pushed", "domain:pushed.kz", seq=3))
    status, answer = await push_task(rig.daemon.bound["api"][1], pki, ours)
    assert status == 200, answer
    for body in tasks(pki, 1, 5):
        rig.peer.publish(body)
    feed = await rig.state("diverged")
    assert feed["diverged_at"] == 3, feed
    assert feed["error"] == "seq 3: the feed's payload differs from the one held"
    assert rig.audit("feed_conflict")[0]["seq"] == 3
    diverged = rig.audit("feed_diverged")
    assert len(diverged) == 1 and diverged[0]["diverged_at"] == 3, diverged
    assert rig.held()[3] == payload_sha(ours)  # ours is kept
    assert await rig.blocked("pushed.kz") and not await rig.blocked("t3.kz")
    await rig.serving()


async def test_a_head_whose_chain_matches_no_log_is_diverged(start: Start) -> None:
    rig: Rig = await start(published=3)
    rig.peer.script.head_chain = bytes(32)
    feed = await rig.state("diverged")
    assert feed["diverged_at"] is None
    assert "its head's chain does not: the head itself is inconsistent" in feed["error"]
    rows = rig.audit("feed_diverged")
    assert len(rows) == 1 and rows[0]["diverged_at"] is None, rows
    assert sorted(rig.held()) == [1, 2, 3]  # nothing changed automatically
    await rig.serving()


# -- the transport ------------------------------------------------------------------------------


async def test_garbage_is_unreachable_and_changes_nothing(start: Start) -> None:
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    held, head = rig.held(), rig.head_row()
    errors: list[str] = []
    for name, answer in [
        ("tasks", Reply(b"<html>bad gateway</html>", status=502, content_type="text/html")),
        ("tasks", Reply(b'{"tasks": "no"}')),
        ("tasks", Reply(b"\xff\xfe{", chunked=True)),
        ("head", Reply(b"{}", content_type="application/json")),
        ("tasks", Reply(b"", status=302)),  # a redirect is not followed
    ]:
        rig.peer.script.answers = {name: answer}
        await rig.more_pulls("garbage")
        await rig.state("unreachable")
        assert rig.held() == held and rig.head_row() == head
        await rig.serving()
        errors.append((await rig.feed())["error"])
    assert errors[0] == "garbage: GET /tasks: HTTP 502", errors
    assert errors[-1] == "garbage: GET /tasks: HTTP 302", errors


async def test_a_hanging_feed_times_out(start: Start) -> None:
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    rig.peer.script.answers["head"] = Hang()
    await rig.serving()  # while the pull hangs
    await rig.more_pulls("unreachable", timeout=MARGIN + 5)
    feed = await rig.state("unreachable")
    assert "timed out" in feed["error"], feed
    await rig.serving()
    del rig.peer.script.answers["head"]
    await rig.state("in_sync", timeout=MARGIN + 5)


async def test_a_body_dripped_slowly_is_cut_at_the_total_timeout(start: Start) -> None:
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    rig.peer.script.answers["tasks"] = Drip(b'{"tasks": []}' + b" " * 1000, every=0.2)
    await rig.more_pulls("unreachable", timeout=MARGIN + 5)
    feed = await rig.state("unreachable")
    assert "timed out" in feed["error"], feed
    await rig.serving()


async def test_a_certificate_from_another_ca_is_unreachable(start: Start, tmp_path: Path) -> None:
    other = tmp_path / "other-pki"
    ensure_dev_material(other)
    rig: Rig = await start(published=2, feed={"ca": str(other / "tls/ca.crt")})
    await rig.more_pulls("unreachable", timeout=MARGIN + 5)
    feed = await rig.state("unreachable")
    assert "TLS" in feed["error"] and "certificate" in feed["error"].lower(), feed
    assert rig.held() == {} and rig.head_row() is None
    assert rig.peer.requests == []  # nothing was asked over the untrusted connection
    await rig.serving()


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_response_over_max_body_bytes_is_oversize(start: Start, chunked: bool) -> None:
    cap = 64 * 1024
    rig: Rig = await start(published=2, api={"max_body_bytes": cap})
    await rig.state("in_sync")
    rig.peer.oversize("tasks", cap + 1, chunked=chunked)
    await rig.more_pulls("oversize")
    feed = await rig.state("unreachable")
    assert feed["error"].startswith("oversize: "), feed
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()
    rig.peer.oversize("tasks", cap)  # at the cap: read (and it is a garbage task)
    await rig.more_pulls("fault")


# -- an adversary's attempts ----------------------------------------------------------------------


async def test_forged_tasks_without_end_do_not_keep_a_round_going(start: Start) -> None:
    """A feed that answers every page with forged tasks claiming the next seqs: each is
    refused, and the round must end (not walk the seq space page after page)."""
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    rig.peer.page = lambda after, limit: [forged(after + i) for i in range(1, 51)]  # type: ignore[method-assign]
    await rig.more_pulls("fault", 3)
    asked = [int(q["after"]) for n, q in rig.peer.requests if n == "tasks"]
    assert max(asked) <= 2 + 50 * 3, asked[-5:]
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()


async def test_forged_tasks_without_end_do_not_keep_long_polls_going(start: Start) -> None:
    rig: Rig = await start(published=2, feed={"wait": 1, "interval": 3})
    await rig.state("in_sync")
    await asyncio.sleep(0.2)  # the round is done: long polls now
    rig.peer.page = lambda after, limit: [forged(after + i) for i in range(1, 51)]  # type: ignore[method-assign]
    asked = len(rig.peer.requests)
    await asyncio.sleep(1.5)
    polls = [q for n, q in rig.peer.requests[asked:] if n == "tasks" and q["wait"] != "0"]
    # no faster than one per wait (1 s), and each from where the feed was before the forgeries
    assert 1 <= len(polls) <= 3, polls
    assert {q["after"] for q in polls} == {"2"}, polls
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()


async def test_a_task_of_another_issuer_on_the_feed_is_not_stored(start: Start, pki: Path) -> None:
    rig: Rig = await start(published=0)
    sts = Regulator(pki, iss="sts", kid="sts-dev")
    theirs = sts.sign(sts.restrict("sts-2", "domain:sts2.kz", seq=2))
    for body in tasks(pki, 1, 4):
        rig.peer.publish(body)
    rig.peer.script.replaced = {2: theirs}
    await rig.more_pulls("fault")
    feed = await rig.state("behind")
    assert "seq 2 refused: wrong_issuer" in feed["error"], feed
    assert sorted(rig.held()) == [1, 3, 4]  # refused alone
    assert rig.rows("SELECT seq FROM tasks WHERE iss = 'sts'") == []
    assert not await rig.blocked("sts2.kz")
    await rig.serving()


async def test_a_forged_task_in_the_middle_of_a_page_is_refused_alone(
    start: Start, pki: Path
) -> None:
    rig: Rig = await start(published=5)
    rig.peer.script.replaced = {3: tampered(tasks(pki, 3, 3)[0])}
    await rig.more_pulls("fault")
    feed = await rig.state("behind")
    assert "seq None refused: bad_signature" in feed["error"], feed
    assert sorted(rig.held()) == [1, 2, 4, 5]
    await rig.serving()
    rig.peer.script.replaced = {}
    await rig.state("in_sync")


async def test_many_tiny_strings_under_the_cap_are_a_fault(start: Start) -> None:
    rig: Rig = await start(published=1, api={"max_body_bytes": 1 << 20})
    await rig.state("in_sync")
    body = b'{"tasks":[' + b",".join([b'""'] * 100_000) + b"]}"
    assert len(body) < 1 << 20
    rig.peer.script.answers["tasks"] = Reply(body)
    await rig.more_pulls("fault")
    feed = await rig.feed()
    assert "has no readable seq" in feed["error"], feed
    assert sorted(rig.held()) == [1]
    await rig.serving()


async def test_millions_of_empty_strings_do_not_stall_dns_or_intake(start: Start) -> None:
    """3,000,000 empty strings (9 MB, under the 16 MiB cap): no seq can be read from the
    first, so the page is a fault at once; the other 2,999,999 must not be peeked at on
    the event loop (they once were: seconds without intake)."""
    rig: Rig = await start(published=1)
    await rig.state("in_sync")
    rig.peer.script.answers["tasks"] = Reply(b'{"tasks":[' + b",".join([b'""'] * 3_000_000) + b"]}")
    await rig.more_pulls("fault", timeout=30)
    loop = asyncio.get_running_loop()
    end = loop.time() + 2.0  # several more pulls of that page
    while loop.time() < end:
        # intake shares the event loop with the puller (DNS is served by its workers)
        async with asyncio.timeout(1.5):
            await rig.serving()
    assert "has no readable seq" in (await rig.feed())["error"]
    assert sorted(rig.held()) == [1]


async def test_a_head_seq_at_the_limit_is_only_behind(start: Start) -> None:
    rig: Rig = await start(published=2)
    rig.peer.script.head_seq = 2**63 - 1
    feed = await rig.until(lambda f: f["head_seq"] and f["held_seq"] == 2, "a head, 2 held")
    assert await rig.gauge_state() == feed["state"] == "behind"
    assert (feed["head_seq"], feed["gaps"]) == (2**63 - 1, 2**63 - 3)
    assert rig.head_row() is not None and rig.head_row()[1] == 2**63 - 1  # type: ignore[index]
    assert sample(await rig.metrics(), "kzgate_feed_head_seq") == float(2**63 - 1)
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()


async def test_sessions_that_flip_every_pull_are_alarmed_once_each(start: Start) -> None:
    rig: Rig = await start(published=2)
    await rig.state("in_sync")
    sessions = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
    original = rig.peer.head_body

    def flipping() -> bytes:
        rig.peer.script.head_session = sessions[len(rig.peer.requests) % 2]
        return original()

    rig.peer.head_body = flipping  # type: ignore[method-assign]
    await rig.more_pulls("ok", 6)
    rows = rig.audit("feed_new_session")
    assert len(rows) <= 3, len(rows)  # (peer's, 1 or 2) then (1, 2) and (2, 1): once each
    assert sorted(rig.held()) == [1, 2]
    await rig.serving()
