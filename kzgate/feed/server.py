"""The reference feed server (``kzgate feed serve``): one issuer's log over HTTPS, per §6.

A regulator can run this as is, or read it as the worked example of
task-protocol.md §6: ``GET {base}/head`` is a head signed now with the
issuer's key, ``GET {base}/tasks?after=N&limit=M&wait=S`` the tasks after N,
held up to S seconds (long poll) until one exists. Tasks come from a
directory of signed task files (``*.jws``), watched every 100 ms for new
ones, or from ``publish()`` in the same process (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from kzgate.config.hostport import HostPort
from kzgate.feed.issuerlog import (
    TASK_SUFFIX,
    IssuerLog,
    NotInLog,
    Signer,
    load_directory,
    read_task,
    save_session,
    session_of,
)
from kzgate.keys import PUBLIC_MODE, atomic_write

log = logging.getLogger(__name__)

HEAD_TYPE = "application/jose"
TASKS_TYPE = "application/json"
MAX_LIMIT = 1000  # tasks per page, whatever the client asks
DEFAULT_LIMIT = 100
MAX_WAIT = 300.0  # seconds a long poll may be held
# A page stops growing past this many bytes (always at least one task), so that a
# page of big tasks stays under the client's body cap (kzgate: api.max_body_bytes).
MAX_PAGE_BYTES = 4 * 1024 * 1024
WATCH_EVERY = 0.1  # seconds between looks at the directory

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BadQuery(ValueError):
    """A /tasks query that is not after=N[&limit=M][&wait=S]."""


@dataclass(frozen=True, slots=True)
class TasksQuery:
    after: int
    limit: int
    wait: float


def parse_query(query: Mapping[str, str]) -> TasksQuery:
    """``after`` (required, >= 0), ``limit`` (>= 0), ``wait`` (seconds >= 0, capped)."""
    try:
        after = int(query.get("after", ""))
        limit = int(query.get("limit", str(DEFAULT_LIMIT)))
        wait = float(query.get("wait", "0"))
    except ValueError:
        raise BadQuery("expected after=N&limit=M&wait=S, N and M integers, S seconds") from None
    if after < 0 or limit < 0 or not math.isfinite(wait) or wait < 0:
        raise BadQuery("after, limit and wait must not be negative")
    return TasksQuery(after, limit, min(wait, MAX_WAIT))


class FeedServer:
    """Serves ``log`` under ``base`` (e.g. ``/mci``); grows by ``publish()`` and, with a
    ``directory``, by the task files that appear in it."""

    def __init__(
        self,
        log_: IssuerLog,
        session: str,
        *,
        base: str,
        directory: Path | None = None,
        known: Iterable[str] = (),
        clock: Clock = utc_now,
    ) -> None:
        self.log = log_
        self.session = session
        self.base = "/" + base.strip("/") if base.strip("/") else ""
        self.directory = directory
        self._known = set(known)  # task files already in the log
        self._refused: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, size) at refusal
        self._clock = clock
        self._grown = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.port = 0

    # -- the log ---------------------------------------------------------------------

    def publish(self, body: bytes) -> int:
        """Append the next task (written to the directory too, when there is one); its seq."""
        seq = self.log.append(body)
        if self.directory is not None:
            name = f"{seq:012d}{TASK_SUFFIX}"
            atomic_write(self.directory / name, body.strip() + b"\n", PUBLIC_MODE)
            self._known.add(name)
        self._grew()
        return seq

    def _grew(self) -> None:
        if self.directory is not None:
            save_session(self.directory, self.session, self.log)
        # wake every long poll; the next ones wait on a fresh event
        self._grown.set()
        self._grown = asyncio.Event()

    def head_body(self) -> bytes:
        """The signed head of the log as it is now."""
        return self.log.head(self.session, self._clock())

    def page(self, after: int, limit: int) -> list[bytes]:
        """Tasks after+1 .. after+limit, at most MAX_LIMIT, cut short at MAX_PAGE_BYTES
        (never empty when a task after ``after`` exists and limit > 0)."""
        out: list[bytes] = []
        size = 0
        for body in self.log.after(after, min(limit, MAX_LIMIT)):
            if out and size + len(body) > MAX_PAGE_BYTES:
                break
            out.append(body)
            size += len(body) + 3  # the quotes and the comma
        return out

    async def tasks(self, after: int, limit: int, wait: float) -> list[bytes]:
        """The page after ``after``, held up to ``wait`` seconds until a task after it exists."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.log.seq <= after and limit > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grown.wait(), remaining)
        return self.page(after, limit)

    # -- HTTP ------------------------------------------------------------------------

    async def handle_head(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.head_body(), content_type=HEAD_TYPE)

    async def handle_tasks(self, request: web.Request) -> web.StreamResponse:
        try:
            query = parse_query(request.query)
        except BadQuery as exc:
            return web.Response(status=400, text=str(exc) + "\n")
        tasks = await self.tasks(query.after, query.limit, query.wait)
        return tasks_response(tasks)

    def app(self, middlewares: Iterable[Middleware] = ()) -> web.Application:
        app = web.Application(middlewares=list(middlewares))
        app.router.add_get(self.base + "/head", self.handle_head)
        app.router.add_get(self.base + "/tasks", self.handle_tasks)
        return app

    async def start(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        middlewares: Iterable[Middleware] = (),
    ) -> int:
        """Listen on host:port (0: any free port); the port bound."""
        self._runner = web.AppRunner(self.app(middlewares), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if self.directory is not None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(self.directory))
        return self.port

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the directory ---------------------------------------------------------------

    async def _watch(self, directory: Path) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                found = await asyncio.to_thread(self._new_files, directory)
            except OSError as exc:
                log.warning("feed directory %s: %s", directory, exc)
                continue
            self.take_files(found)

    def _new_files(self, directory: Path) -> list[tuple[str, bytes, tuple[int, int]]]:
        out = []
        for path in directory.glob("*" + TASK_SUFFIX):
            if path.name in self._known:
                continue
            stat = path.stat()
            mark = (stat.st_mtime_ns, stat.st_size)
            if self._refused.get(path.name) == mark:
                continue  # refused as it is; look again when it changes
            out.append((path.name, path.read_bytes(), mark))
        return out

    def take_files(self, found: list[tuple[str, bytes, tuple[int, int]]]) -> None:
        """Add the new files that continue the log, in seq order; a file whose seq is
        beyond the next waits for the ones before it; one that cannot join is logged."""
        pending: dict[int, tuple[str, bytes]] = {}
        for name, body, mark in found:
            try:
                seq, _ = read_task(body, self.log.signer)
                if seq <= self.log.seq:
                    raise NotInLog(f"seq {seq} is already published")
            except NotInLog as exc:
                self._refused[name] = mark
                log.error("feed: %s not published: %s", name, exc)
                continue
            pending[seq] = (name, body)
        grew = False
        while (entry := pending.pop(self.log.seq + 1, None)) is not None:
            name, body = entry
            self.log.append(body)
            self._known.add(name)
            grew = True
        if grew:
            self._grew()


def tasks_response(tasks: list[bytes]) -> web.Response:
    body = json.dumps({"tasks": [t.decode("ascii") for t in tasks]}, separators=(",", ":"))
    return web.Response(body=body.encode("ascii"), content_type=TASKS_TYPE)


async def serve_directory(
    directory: Path, signer: Signer, *, base: str, host: str, port: int, tls: ssl.SSLContext
) -> None:
    """``kzgate feed serve``: publish ``directory`` until cancelled. Raises NotInLog when
    its files are not exactly tasks 1..n of the issuer (nothing is served then)."""
    issuer_log, known = load_directory(directory, signer)
    session = session_of(directory, issuer_log)
    server = FeedServer(issuer_log, session, base=base, directory=directory, known=known)
    bound = await server.start(host, port, tls)
    url = f"https://{HostPort(host, bound)}{server.base}"
    log.info("feed of %s: tasks 1..%d, session %s, on %s", signer.iss, issuer_log.seq, session, url)
    print(f"serving {signer.iss}: tasks 1..{issuer_log.seq}, session {session}, {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
