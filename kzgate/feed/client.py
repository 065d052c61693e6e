"""One issuer's feed over HTTPS (task-protocol.md §6): the ``FeedSource`` the puller reads.

Everything the feed server sends is untrusted: the body is read in chunks and
refused past the size cap before more is buffered, the status and content type
must be exactly what §6 says, the task list is parsed strictly. Whatever goes
wrong comes out as one ``FeedError`` (unreachable, garbage, oversize) so that
the puller has one thing to catch; what is inside the tasks and the head
(signatures, seqs) is the puller's to judge.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from kzgate.config.model import FeedConfig
from kzgate.errors import Malformed
from kzgate.feed.ports import FeedError
from kzgate.protocol.jsonstrict import json_type, loads_object
from kzgate.tls import client_context

HEAD_TYPE = "application/jose"
TASKS_TYPE = "application/json"
CONNECT_TIMEOUT = 5.0
# Beyond the server's long-poll hold: the time a sane server needs to answer.
MARGIN = 10.0
_CHUNK = 64 * 1024


class FeedClient:
    """``GET {url}/head`` and ``GET {url}/tasks`` with the feed's CA (and client cert)."""

    def __init__(
        self,
        cfg: FeedConfig,
        max_body_bytes: int,
        *,
        margin: float = MARGIN,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._cfg = cfg
        self._base = cfg.url  # the config reader strips a trailing "/"
        self._max = max_body_bytes
        self._margin = margin
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def get_head(self) -> bytes:
        return await self._get("/head", {}, HEAD_TYPE, 0.0)

    async def get_tasks(self, after: int, limit: int, wait: float) -> list[bytes]:
        query = {"after": str(after), "limit": str(limit), "wait": _seconds(wait)}
        return parse_tasks(await self._get("/tasks", query, TASKS_TYPE, wait))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        # Made here, not in __init__: a ClientSession belongs to the running loop.
        if self._session is None:
            try:
                ctx = client_context(self._cfg.ca, self._cfg.client_cert, self._cfg.client_key)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise FeedError("unreachable", f"TLS setup: {exc}") from None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=4),
                # a compressed body could expand past the cap before we count it
                auto_decompress=False,
                headers={"Accept-Encoding": "identity"},
            )
        return self._session

    async def _get(self, path: str, query: dict[str, str], mime: str, wait: float) -> bytes:
        url = self._base + path
        timeout = aiohttp.ClientTimeout(
            total=max(wait, 0.0) + self._margin,
            connect=self._connect_timeout,
            sock_connect=self._connect_timeout,
        )
        try:
            session = self._open()
            async with session.get(
                url, params=query, timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    raise FeedError("garbage", f"GET {path}: HTTP {resp.status}")
                if resp.content_type != mime:
                    raise FeedError(
                        "garbage", f"GET {path}: Content-Type {resp.content_type!r:.80}, not {mime}"
                    )
                if "Content-Encoding" in resp.headers:
                    raise FeedError("garbage", f"GET {path}: a Content-Encoding we did not ask for")
                return await self._read(resp, path)
        except FeedError:
            raise
        except TimeoutError:
            raise FeedError("unreachable", f"GET {path}: timed out") from None
        except aiohttp.ClientSSLError as exc:
            raise FeedError("unreachable", f"GET {path}: TLS: {exc}") from None
        except (aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
            raise FeedError("unreachable", f"GET {path}: {type(exc).__name__}: {exc}") from None

    async def _read(self, resp: aiohttp.ClientResponse, path: str) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self._max:
            raise FeedError("oversize", f"GET {path}: {declared} bytes declared, cap {self._max}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            if len(body) + len(chunk) > self._max:
                raise FeedError("oversize", f"GET {path}: body over {self._max} bytes")
            body += chunk
        return bytes(body)


def parse_tasks(body: bytes) -> list[bytes]:
    """The tasks of a ``/tasks`` body: exactly ``{"tasks": [str, ...]}``, strict JSON."""
    try:
        obj = loads_object(body, "tasks body")
    except Malformed as exc:
        raise FeedError("garbage", exc.detail) from None
    if set(obj) != {"tasks"}:
        raise FeedError("garbage", f"tasks body: keys {sorted(obj)[:5]!r:.120}, expected ['tasks']")
    tasks: Any = obj["tasks"]
    if not isinstance(tasks, list):
        raise FeedError("garbage", f"tasks body: tasks is {json_type(tasks)}, not an array")
    out: list[bytes] = []
    for index, item in enumerate(tasks):
        if not isinstance(item, str):
            raise FeedError("garbage", f"tasks body: tasks[{index}] is {json_type(item)}")
        # Not checked to be ASCII here: a task that is no JWS is refused alone, by the sink.
        out.append(item.encode("utf-8"))
    return out


def _seconds(value: float) -> str:
    return f"{value:g}"
