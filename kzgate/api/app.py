"""Routes of the intake API; every refusal is mapped to the protocol's JSON in one place."""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from kzgate.api.ratelimit import RateLimiter
from kzgate.errors import (
    InvalidTask,
    Malformed,
    RateLimited,
    TaskError,
    TooLarge,
    UnsupportedMediaType,
)
from kzgate.model import InstructionRef
from kzgate.names import NameError_, normalize_domain, normalize_ip
from kzgate.pipeline import Pipeline
from kzgate.register.readmodel import RegisterReader

log = logging.getLogger("kzgate.api")

PIPELINE = web.AppKey("pipeline", Pipeline)  # tasks in, receipts out; enforcers' health
READER = web.AppKey("reader", RegisterReader)  # everything else the routes read
LIMITER = web.AppKey("limiter", RateLimiter)
MAX_BODY = web.AppKey("max_body", int)
READY = web.AppKey("ready", list)  # [bool]: set once start-up is complete

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: TaskError) -> web.Response:
    return web.json_response({"error": exc.code, "detail": exc.detail}, status=exc.status)


UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})


@web.middleware
async def map_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path not in UNLIMITED_PATHS and not request.app[LIMITER].allow(
            client_key(request), time.monotonic()
        ):
            raise RateLimited("per-client request rate exceeded; retry later")
        return await handler(request)
    except TaskError as exc:
        return error_response(exc)
    except web.HTTPException:
        raise
    except Exception:
        # The register or a backend failed under us: the transaction rolled
        # back, so the answer is a retryable 503, in the protocol's JSON shape.
        log.exception("internal error on %s %s", request.method, request.path)
        body = {"error": "unavailable", "detail": "internal error; nothing was stored, retry"}
        return web.json_response(body, status=503)


def client_key(request: web.Request) -> str:
    """Who is asking: the client certificate's fingerprint, else the peer address."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if isinstance(ssl_object, ssl.SSLObject):
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            return "cert:" + hashlib.sha256(der).hexdigest()
    return "addr:" + str(request.remote)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing as soon as it is known to exceed ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"body over the limit of {limit} bytes")
            chunks.append(chunk)
    except (ConnectionError, RequestPayloadError, HttpProcessingError) as exc:
        # The client hung up or broke the framing mid-body: its fault, not an
        # internal error to log with a traceback (one TLS handshake per line).
        raise Malformed(f"body could not be read ({type(exc).__name__})") from None
    return b"".join(chunks)


async def post_task(request: web.Request) -> web.Response:
    if request.content_type != "application/jose":
        raise UnsupportedMediaType(
            f"Content-Type is {request.content_type!r}; expected 'application/jose'"
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding is {encoding!r:.40}; send the JWS as is")
    body = await read_limited(request, request.app[MAX_BODY])
    answer = await request.app[PIPELINE].submit(body)
    return web.json_response(answer.body, status=answer.status)


async def get_task(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    iss, task_id = request.match_info["iss"], request.match_info["id"]
    answer = await pipeline.receipt(iss, task_id)
    body = answer.body
    lift = await pipeline.in_register(pipeline.register.resume_of, iss, task_id)
    if lift is not None:
        # Beside the signed receipt, never in it: the receipt is signed when the
        # resume is applied, the lift is verified at every place later (probes).
        body = {**body, "verified_at": lift[1]}
    return web.json_response(body, status=200)


async def get_instructions(request: web.Request) -> web.Response:
    status: str | None = request.query.get("status", "active")
    if status == "all":
        status = None
    elif status not in ("active", "resumed", "pending", "cancelled"):
        raise InvalidTask("status: one of active, resumed, pending, cancelled, all")
    limit = _int_param(request, "limit", 100, 1, 1000)
    offset = _int_param(request, "offset", 0, 0, 10**12)
    targets_limit = _int_param(request, "targets_limit", 100, 0, 1000)
    rows = await request.app[READER].instructions(
        status=status, limit=limit, offset=offset, targets_limit=targets_limit
    )
    body = {"instructions": rows, "limit": limit, "offset": offset}
    return web.json_response(body)


async def get_lookup(request: web.Request) -> web.Response:
    reader = request.app[READER]
    name, ip = request.query.get("name"), request.query.get("ip")
    if (name is None) == (ip is None):
        raise InvalidTask("give exactly one of the query parameters 'name' or 'ip'")
    try:
        if name is not None:
            query = normalize_domain(name)
            hits = await reader.covering_name(query)
            covering = [{"target": d, **_ref(r)} for d, r in hits]
            kind = "name"
        else:
            query = normalize_ip(str(ip))
            nets = await reader.covering_ip(query)
            covering = [{"target": str(n), **_ref(r)} for n, r in nets]
            kind = "ip"
    except NameError_ as exc:
        raise InvalidTask(f"{'name' if name is not None else 'ip'}: {exc}") from None
    verdict = "blocked" if covering else "allowed"
    return web.json_response({kind: query, "verdict": verdict, "instructions": covering})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    enforcers = request.app[PIPELINE].enforcers
    ready = bool(request.app[READY][0])
    body = {"ready": ready, "dirty_enforcers": sorted(enforcers.dirty)}
    return web.json_response(body, status=200 if ready and enforcers.in_step else 503)


# Read once at import: a kzgate installed without its document fails loudly at start.
OPENAPI_DOCUMENT = files("kzgate.api").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_DOCUMENT, content_type="application/json")


def _ref(ref: InstructionRef) -> dict[str, str]:
    return {"iss": ref.iss, "number": ref.number, "date": ref.date}


# int() alone also takes " 5", "+5", "1_0" and other scripts' digits ("٣");
# the OpenAPI document says integer, and on the wire that is ASCII decimal only.
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def _int_param(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    if _DECIMAL.fullmatch(raw) is None:
        raise InvalidTask(f"{key}: not an integer")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidTask(f"{key}: must be between {low} and {high}")
    return value


def make_app(
    pipeline: Pipeline, reader: RegisterReader, *, max_body_bytes: int, limiter: RateLimiter
) -> web.Application:
    # aiohttp's own body cap sits just above ours so that read_limited decides.
    # Bodies are not decoded: a task is never compressed, and aiohttp's decoder
    # answered a corrupt gzip body with a 503 and a br one with a plain-text 400.
    app = web.Application(
        middlewares=[map_errors],
        client_max_size=max_body_bytes + 1,
        handler_args={"auto_decompress": False},
    )
    app[PIPELINE] = pipeline
    app[READER] = reader
    app[LIMITER] = limiter
    app[MAX_BODY] = max_body_bytes
    app[READY] = [False]
    app.router.add_post("/v1/tasks", post_task)
    app.router.add_get("/v1/tasks/{iss}/{id}", get_task)
    app.router.add_get("/v1/instructions", get_instructions)
    app.router.add_get("/v1/lookup", get_lookup)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/openapi.json", openapi)
    return app
