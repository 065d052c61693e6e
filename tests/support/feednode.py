"""A kzgate node pulling one issuer's feed, as the daemon-level feed tests run it.

``FeedHost`` is the reference feed server (kzgate/feed/server.py) in this
process over real TLS, with a gate that makes it answer 503 while closed;
``Node`` is ``kzgate run`` as a child process with the feed, the DNS resolver
and the RPZ primary on, and the views a test compares two nodes by: its
register read read-only, its /status, lookups, DNS answers and its RPZ zone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import dnslib
from aiohttp import web

from kzgate.feed.chain import chain_of
from kzgate.feed.issuerlog import IssuerLog, Signer
from kzgate.feed.server import FeedServer
from kzgate.keys import load_private_key
from kzgate.protocol.build import sign_task
from kzgate.tls import server_context
from tests.support.daemon_proc import DaemonProcess
from tests.support.dnsmsg import query, udp_exchange
from tests.support.kzfixtures import Regulator, client_ssl, write_config
from tests.support.rpzpeers import kdig_xfr

ISS = "mci"
RPZ_ORIGIN = "rpz.kzgate."
SESSION = "5b1f0c52-3c1e-4f4e-9a55-6f1d2a7e0c11"


class FastRegulator(Regulator):
    """A Regulator that reads its key once: thousands of tasks sign in about a second."""

    def sign(self, task: dict[str, Any]) -> bytes:
        if not hasattr(self, "_key"):
            self._key = self.key()
        return sign_task(task, self._key, self.kid).encode()


class FeedHost:
    """The reference feed of issuer mci on 127.0.0.1 over TLS; ``closed`` answers 503."""

    def __init__(self, pki: Path) -> None:
        signer = Signer(
            ISS, load_private_key(pki / "keys/mci-dev.key"), "mci-dev", dt.timedelta(seconds=600)
        )
        self.pki = pki
        self.server = FeedServer(IssuerLog(signer), SESSION, base="/mci")
        self.closed = False
        self.requests = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/mci"

    async def start(self) -> None:
        tls = server_context(self.pki / "tls/server.crt", self.pki / "tls/server.key", None)
        await self.server.start("127.0.0.1", 0, tls, [self._gate])

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests += 1
        if self.closed:
            return web.Response(status=503, text="closed by the test\n")
        return await handler(request)

    def publish(self, bodies: Iterable[bytes], *, wake_polls: bool = True) -> None:
        """Append to the log; ``wake_polls=False`` leaves the long polls held asleep
        (a feed whose long poll misses a task: only a round reads it)."""
        for body in bodies:
            if wake_polls:
                self.server.publish(body)
            else:
                self.server.log.append(body)

    @property
    def seq(self) -> int:
        return self.server.log.seq

    def chain(self) -> bytes:
        return self.server.log.chain_at(self.server.log.seq)

    async def close(self) -> None:
        await self.server.close()


def node_config(directory: Path, pki: Path, feed_url: str, *, interval: float, wait: float) -> Path:
    """A config with mci's feed at ``feed_url``, DNS and the RPZ primary on loopback."""
    directory.mkdir(parents=True, exist_ok=True)
    feed = {"url": feed_url, "ca": str(pki / "tls/ca.crt"), "interval": interval, "wait": wait}
    issuers = [
        {
            "id": ISS,
            "name": "Ministry of Culture and Information of the Republic of Kazakhstan",
            "keys": [{"kid": "mci-dev", "public_key": str(pki / "keys/mci-dev.pub")}],
            "feed": feed,
        }
    ]
    return write_config(
        directory,
        pki,
        issuers=issuers,
        api={"rate_limit": {"per_second": 1e6, "burst": 10**6}},
        rpz={"enabled": True, "origin": RPZ_ORIGIN, "listen": ["127.0.0.1:0"], "notify": []},
    )


class Node:
    """``kzgate run`` with ``config``; start() again after a kill runs it anew."""

    def __init__(self, config: Path, pki: Path) -> None:
        self.config = config
        self.pki = pki
        self.db = config.parent / "kzgate.db"
        self.proc: DaemonProcess | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.proc = DaemonProcess(self.config)
        await self.proc.start()

    async def kill(self) -> None:
        """SIGKILL, and reap."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if (
            self.proc is not None
            and self.proc.proc is not None
            and self.proc.proc.returncode is None
        ):
            await self.kill()

    def port(self, name: str) -> int:
        assert self.proc is not None
        return self.proc.ports[name]

    def log_tail(self, lines: int = 30) -> str:
        return "".join(self.proc.log[-lines:]) if self.proc is not None else ""

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=client_ssl(self.pki), limit=8)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # -- what it is told -------------------------------------------------------------

    async def push(self, body: bytes) -> dict[str, Any]:
        """POST a signed task to the API; its answer (200: stored now or before)."""
        url = f"https://127.0.0.1:{self.port('api')}/v1/tasks"
        headers = {"Content-Type": "application/jose"}
        async with self._http().post(url, data=body, headers=headers) as resp:
            answer: dict[str, Any] = await resp.json()
            assert resp.status == 200, answer
        return answer

    # -- what it says ----------------------------------------------------------------

    async def feed(self) -> dict[str, Any]:
        """mci's entry of GET /status "feeds"."""
        url = f"http://127.0.0.1:{self.port('metrics')}/status"
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            body = await resp.json()
        return dict(body["feeds"][ISS])

    async def wait_feed(
        self, check: Callable[[dict[str, Any]], bool], timeout: float, every: float = 0.05
    ) -> dict[str, Any]:
        """Poll /status until ``check`` holds for mci's feed; that feed entry."""
        seen: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while not check(seen := await self.feed()):
                    await asyncio.sleep(every)
        except TimeoutError:
            raise AssertionError(
                f"feed status {seen} after {timeout} s\n{self.log_tail()}"
            ) from None
        return seen

    async def verdicts(self, names: Iterable[str]) -> dict[str, str]:
        """GET /v1/lookup for each name: name -> "blocked" or "allowed"."""
        base = f"https://127.0.0.1:{self.port('api')}/v1/lookup"
        out: dict[str, str] = {}
        for name in names:
            async with self._http().get(base, params={"name": name}) as resp:
                assert resp.status == 200, await resp.text()
                out[name] = (await resp.json())["verdict"]
        return out

    async def dns_rcode(self, name: str) -> str:
        """The RCODE kzgate's resolver answers for ``name`` A (over UDP)."""
        answer = await udp_exchange(self.port("dns"), query(name))
        assert answer is not None, f"no DNS answer for {name}"
        return str(dnslib.RCODE[dnslib.DNSRecord.parse(answer).header.rcode])

    async def rpz_names(self) -> set[str]:
        """The restricted names in the RPZ zone, by AXFR; each must carry its ``*.`` twin."""
        transfer = await kdig_xfr(self.port("rpz"), RPZ_ORIGIN, timeout=60)
        assert transfer.ok, transfer.output[-2000:]
        suffix = "." + RPZ_ORIGIN
        # the apex (its NS) is no restricted name
        owners = [o.removesuffix(suffix) for o, _, _ in transfer.data() if o.endswith(suffix)]
        names = {o for o in owners if not o.startswith("*.")}
        assert {o[2:] for o in owners if o.startswith("*.")} == names, "a name without its *."
        assert len(owners) == 2 * len(names), "a record repeated in the zone"
        return names


# -- the register, read-only ---------------------------------------------------------------


def _read(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def register_content(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What two nodes fed the same log must hold alike: tasks, instructions (named by
    their tasks' ids, not rowids), targets and the accepted head; no receipts, no times."""
    return {
        "tasks": _read(
            db,
            "SELECT iss, id, seq, type, kid, payload, sha256, status FROM tasks ORDER BY iss, seq",
        ),
        "instructions": _read(
            db,
            "SELECT i.iss, i.number, i.date, i.status, r.id, s.id, i.authority, i.ground, i.reason"
            " FROM instructions i LEFT JOIN tasks r ON r.rowid = i.restrict_task"
            " LEFT JOIN tasks s ON s.rowid = i.resume_task ORDER BY 1, 2, 3",
        ),
        "targets": _read(
            db,
            "SELECT i.iss, i.number, i.date, t.kind, t.value FROM targets t"
            " JOIN instructions i ON i.rowid = t.instruction ORDER BY 1, 2, 3, 4, 5",
        ),
        "feed_heads": _read(db, "SELECT iss, session, seq, chain FROM feed_heads ORDER BY iss"),
    }


def held_seqs(db: Path) -> list[int]:
    return [row[0] for row in _read(db, "SELECT seq FROM tasks WHERE iss = ? ORDER BY seq", (ISS,))]


def task_count(db: Path) -> int:
    """Tasks of mci in the register (0 before the daemon has made it)."""
    if not db.exists():
        return 0
    try:
        return int(_read(db, "SELECT COUNT(*) FROM tasks WHERE iss = ?", (ISS,))[0][0])
    except sqlite3.OperationalError:  # the schema is not made yet
        return 0


def unapplied(db: Path) -> int:
    """Tasks stored but not (yet) known enforced: status accepted, or no receipt."""
    rows = _read(db, "SELECT COUNT(*) FROM tasks WHERE status = 'accepted' OR receipt IS NULL")
    return int(rows[0][0])


def stored_head(db: Path) -> tuple[int, str] | None:
    """(seq, chain hex) of mci's accepted head, or None."""
    rows = _read(db, "SELECT seq, chain FROM feed_heads WHERE iss = ?", (ISS,))
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def register_chain(db: Path, last: int) -> bytes:
    """c(last) (§6) over the payloads the register holds for seq 1..last."""
    rows = _read(
        db, "SELECT sha256 FROM tasks WHERE iss = ? AND seq <= ? ORDER BY seq", (ISS, last)
    )
    assert len(rows) == last, f"the register holds {len(rows)} of tasks 1..{last}"
    return chain_of(bytes.fromhex(r[0]) for r in rows)


def restricted_names(db: Path) -> set[str]:
    """The domain targets of the register's active instructions: what must be enforced."""
    rows = _read(
        db,
        "SELECT t.value FROM targets t JOIN instructions i ON i.rowid = t.instruction"
        " WHERE i.status = 'active' AND t.kind = 'domain'",
    )
    return {r[0] for r in rows}
