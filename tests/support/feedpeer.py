"""A hostile feed for tests: the reference feed server whose answers a test scripts.

``FeedPeer`` is kzgate/feed/server.py's ``FeedServer`` (the same log, chain,
head signing, long poll and HTTP handlers) with every way a feed can lie or
fail laid over it, each off until a test turns it on:

- the head: exact bytes (``head_bytes``), or a head signed honestly but for
  another seq, chain, session or issue time (``head_seq``, ``head_chain``,
  ``head_session``, ``head_issued_at``), or signed by another key
  (``head_signer``);
- the tasks: a seq left out (``skipped``), served twice (``repeated``), other
  bytes for a seq (``replaced``), the first two of a page swapped
  (``swap_first_two``);
- the transport, per resource ("head" or "tasks"): ``answers[name]`` is a
  ``Reply`` (any status, content type and bytes, optionally chunked), ``Hang``
  (never answers), ``Endless`` (a body that never ends) or ``Drip`` (a body one
  byte at a time); ``oversize()`` is a
  well-formed answer of an exact size.

``requests`` records each request as (resource, query), e.g. to see that a
new session is read again from ``after=0``.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from kzgate.config.model import FeedConfig
from kzgate.feed.issuerlog import IssuerLog, Signer
from kzgate.feed.server import HEAD_TYPE, TASKS_TYPE, FeedServer
from kzgate.keys import load_private_key
from kzgate.tls import server_context


@dataclass(frozen=True, slots=True)
class Reply:
    """Exactly this answer. ``chunked``: sent without a Content-Length, in 64 KiB writes."""

    body: bytes
    status: int = 200
    content_type: str = TASKS_TYPE
    chunked: bool = False


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request and never answer (until the peer closes)."""


@dataclass(frozen=True, slots=True)
class Endless:
    """A 200 whose body never ends: ``chunk`` written again and again."""

    chunk: bytes = b" " * 65536
    content_type: str = TASKS_TYPE


@dataclass(frozen=True, slots=True)
class Drip:
    """A 200 whose ``body`` comes one byte every ``every`` seconds (a slow-drip server)."""

    body: bytes
    every: float = 1.0
    content_type: str = TASKS_TYPE


Answer = Reply | Hang | Endless | Drip
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Script:
    """What the peer does differently from an honest feed (all off by default)."""

    answers: dict[str, Answer] = field(default_factory=dict)
    head_bytes: bytes | None = None
    head_seq: int | None = None
    head_chain: bytes | None = None
    head_session: str | None = None
    head_issued_at: Any = None  # a datetime: the head's issued_at (expires = it + ttl)
    head_signer: Signer | None = None
    skipped: set[int] = field(default_factory=set)
    repeated: set[int] = field(default_factory=set)
    replaced: dict[int, bytes] = field(default_factory=dict)
    swap_first_two: bool = False


class FeedPeer(FeedServer):
    def __init__(self, signer: Signer, *, base: str) -> None:
        super().__init__(IssuerLog(signer), str(uuid.uuid4()), base=base)
        self.script = Script()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._release = asyncio.Event()
        self.pki: Path | None = None
        self.hung_up = 0  # Endless answers the client stopped by closing the connection

    @classmethod
    async def start_tls(
        cls, pki: Path, *, iss: str = "mci", kid: str = "mci-dev", mutual: bool = False
    ) -> FeedPeer:
        """A peer for issuer ``iss`` (heads signed with ``pki``/keys/``kid``.key) on
        127.0.0.1, TLS with the development server certificate; ``mutual`` requires a
        client certificate of the development CA."""
        peer = cls(Signer(iss, load_private_key(pki / f"keys/{kid}.key"), kid), base=iss)
        peer.pki = pki
        tls = server_context(
            pki / "tls/server.crt", pki / "tls/server.key", pki / "tls/ca.crt" if mutual else None
        )
        await peer.start("127.0.0.1", 0, tls, middlewares=[peer._scripted])
        return peer

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{self.base}"

    def feed_config(
        self, *, client_cert: bool = True, interval: float = 30.0, wait: float = 0.0
    ) -> FeedConfig:
        """A FeedConfig that reaches this peer with the development CA (and client cert)."""
        assert self.pki is not None
        tls = self.pki / "tls"
        cert, key = (tls / "client.crt", tls / "client.key") if client_cert else (None, None)
        return FeedConfig(self.url, tls / "ca.crt", cert, key, interval, wait)

    async def close(self) -> None:
        self._release.set()  # Hang and Endless end, so closing does not wait for them
        await super().close()

    # -- scripted answers ----------------------------------------------------------------

    def oversize(self, name: str, size: int, *, chunked: bool = False) -> None:
        """Answer ``name`` with a well-formed body of exactly ``size`` bytes."""
        if name == "head":
            self.script.answers[name] = Reply(b"e" * size, content_type=HEAD_TYPE, chunked=chunked)
            return
        frame = b'{"tasks":[""]}'
        body = frame[:11] + b"A" * (size - len(frame)) + frame[11:]
        self.script.answers[name] = Reply(body, chunked=chunked)

    def head_body(self) -> bytes:
        s = self.script
        if s.head_bytes is not None:
            return s.head_bytes
        seq = self.log.seq if s.head_seq is None else s.head_seq
        chain = s.head_chain
        if chain is None:
            # beyond the log: a chain for tasks the feed does not have
            chain = self.log.chain_at(seq) if seq <= self.log.seq else _made_up(seq)
        signer = s.head_signer or self.log.signer
        now = s.head_issued_at if s.head_issued_at is not None else self._clock()
        return signer.head(s.head_session or self.session, seq, chain, now)

    def page(self, after: int, limit: int) -> list[bytes]:
        s = self.script
        out: list[bytes] = []
        for seq, body in enumerate(super().page(after, limit), start=after + 1):
            if seq in s.skipped:
                continue
            body = s.replaced.get(seq, body)
            out += [body, body] if seq in s.repeated else [body]
        if s.swap_first_two and len(out) >= 2:
            out[0], out[1] = out[1], out[0]
        return out

    @web.middleware
    async def _scripted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[-1]
        self.requests.append((name, dict(request.query)))
        answer = self.script.answers.get(name)
        if answer is None:
            return await handler(request)
        if isinstance(answer, Hang):
            await self._release.wait()
            return web.Response(status=503)
        if isinstance(answer, Endless):
            return await self._endless(request, answer)
        if isinstance(answer, Drip):
            return await self._drip(request, answer)
        if not answer.chunked:
            return web.Response(
                status=answer.status,
                body=answer.body,
                headers={"Content-Type": answer.content_type},
            )
        response = web.StreamResponse(
            status=answer.status, headers={"Content-Type": answer.content_type}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(answer.body), 65536):
            await response.write(answer.body[start : start + 65536])
        await response.write_eof()
        return response

    async def _drip(self, request: web.Request, answer: Drip) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": answer.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await _drip_body(response, answer, self._release)
        except ConnectionError:
            self.hung_up += 1
        return response

    async def _endless(self, request: web.Request, answer: Endless) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": answer.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while not self._release.is_set():
                await response.write(answer.chunk)
        except ConnectionError:
            self.hung_up += 1
        return response


async def _drip_body(response: web.StreamResponse, answer: Drip, release: asyncio.Event) -> None:
    for i in range(len(answer.body)):
        if release.is_set():
            return
        await response.write(answer.body[i : i + 1])
        await asyncio.sleep(answer.every)
    await response.write_eof()


def _made_up(seq: int) -> bytes:
    return hashlib.sha256(b"no such log %d" % seq).digest()
