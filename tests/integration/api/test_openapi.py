"""The HTTP API against its OpenAPI document (docs/openapi.json).

The document is valid OpenAPI 3.1, names every route the app serves, and is
what the daemon serves; Schemathesis, run against the live daemon (`kzgate
run` as a child process) over mutual TLS with the test CA's client
certificate, finds no 5xx and no answer outside the document, for every
operation, with validly signed tasks among its inputs (tests/support/openapi_hooks.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import itertools
import json
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import aiohttp
import jsonschema
import pytest
import referencing
import referencing.jsonschema
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from kzgate.api.app import make_app
from kzgate.api.ratelimit import RateLimiter
from kzgate.pipeline import Pipeline
from kzgate.register.readmodel import RegisterReader
from tests.support.daemon_proc import DaemonProcess
from tests.support.kzfixtures import Regulator, client_ssl, dump_register, push_task, write_config

ROOT = Path(__file__).resolve().parents[3]
DOCS_COPY = ROOT / "docs/openapi.json"
PACKAGED = files("kzgate.api").joinpath("openapi.json")
HOOKS_DIR = ROOT  # tests.support.openapi_hooks

# Schemathesis: a fixed seed and a case budget per operation (about 1,100
# requests; 20-35 s on this project's 2-core machine, most of it the
# stateful phase); the timeout only stops a run that hangs.
SEED = 20261122
MAX_EXAMPLES = 100
ST_TIMEOUT_SECONDS = 150
# positive_data_acceptance is the one check left out: a request body the schema
# accepts (any string shaped like a JWS) is not a task whose signature verifies,
# so refusing it with 400/401 is right. Everything else, including
# not_a_server_error, status/content-type/header/schema conformance and
# negative_data_rejection, runs on every case.
EXCLUDED_CHECKS = "positive_data_acceptance"


def document() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(PACKAGED.read_bytes()))


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    validate(spec, cls=OpenAPIV31SpecValidator)
    assert spec["openapi"].startswith("3.1.")


def test_docs_holds_the_packaged_document() -> None:
    assert DOCS_COPY.read_bytes() == PACKAGED.read_bytes(), (
        "docs/openapi.json differs from kzgate/api/openapi.json: edit the packaged one, "
        "then cp kzgate/api/openapi.json docs/openapi.json"
    )


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    # The app only stores the pipeline and the reader at construction; routes need no backend.
    app = make_app(
        cast(Pipeline, None),
        cast(RegisterReader, None),
        max_body_bytes=1,
        limiter=RateLimiter(1.0, 1.0),
    )
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method.upper(), path) for path, item in document()["paths"].items() for method in item
    }
    assert served == documented


def test_every_operation_documents_the_refusals_every_request_can_meet() -> None:
    """429 wherever the rate limit applies (all but the health routes); 503
    `unavailable` wherever map_errors can turn a register failure into one."""
    unavailable = {"#/components/responses/Unavailable"}
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            rate_limited = path not in ("/healthz", "/readyz")
            assert ("429" in responses) == rate_limited, (method, path)
            uses_register = path.startswith("/v1/") and path != "/v1/openapi.json"
            assert uses_register == ({responses.get("503", {}).get("$ref")} == unavailable), (
                method,
                path,
            )


def live_config(tmp_path: Path, pki: Path) -> Path:
    return write_config(
        tmp_path,
        pki,
        # High enough that no request of the run is refused for rate: a 429 would
        # answer every case with the same conforming refusal and hide the rest.
        api={
            "rate_limit": {"per_second": 1_000_000, "burst": 1_000_000},
            "max_body_bytes": 8192,  # tests/support/openapi_hooks.py sends some tasks over it
        },
        # RPZ on: the enforcer that cannot carry every legal name (status partial).
        rpz={
            "enabled": True,
            "listen": ["127.0.0.1:0"],
            "notify": [],
            "allow_transfer": ["127.0.0.1/32"],
        },
    )


async def seed_register(port: int, pki: Path) -> None:
    """What tests/support/openapi_hooks.py looks up, and one instruction in each status."""
    mci = Regulator(pki, seq=itertools.count(2**50))  # clear of the hook's seq range
    tasks = [
        mci.restrict(
            "seed-1",
            "domain:blocked.example.kz",
            "domain:мысал.қаз",
            "cidr:10.0.0.0/24",
            "cidr:2001:db8::/64",
            "url:https://x.kz/a",
            "app:kz.example.app",
            reason="court_decision",
        ),
        mci.restrict("seed-2", "ip:192.0.2.9"),
        mci.resume("seed-2"),
        mci.resume("seed-3"),  # pending
        mci.resume("seed-4"),
        mci.restrict("seed-4", "domain:late.example.kz"),  # cancelled
    ]
    for task in tasks:
        status, answer = await push_task(port, pki, mci.sign(task))
        assert status == 200, answer


@dataclass
class Live:
    """A live daemon, its API's base URL, and a session with the client certificate."""

    daemon: DaemonProcess
    base: str
    session: aiohttp.ClientSession
    db: Path


@pytest.fixture
async def live(tmp_path: Path, pki: Path) -> AsyncIterator[Live]:
    daemon = DaemonProcess(live_config(tmp_path, pki))
    await daemon.start()
    try:
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
        async with aiohttp.ClientSession(connector=connector) as session:
            base = f"https://127.0.0.1:{daemon.ports['api']}"
            yield Live(daemon, base, session, tmp_path / "kzgate.db")
    finally:
        daemon.kill()
        await daemon.wait()


def response_schema(path: str, method: str, status: int) -> Any:
    """A validator for the JSON body the document promises for this answer."""
    spec = document()
    response = spec["paths"][path][method]["responses"][str(status)]
    while "$ref" in response:  # a shared response under components/responses
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    resource = referencing.Resource.from_contents(spec, referencing.jsonschema.DRAFT202012)
    registry = referencing.Registry().with_resource("urn:kzgate-openapi", resource)
    return jsonschema.Draft202012Validator(
        {"$ref": "urn:kzgate-openapi" + schema["$ref"]} if "$ref" in schema else schema,
        registry=registry,
    )


async def test_every_receipt_status_matches_the_document(live: Live, pki: Path) -> None:
    """applied, partial, pending, cancelled and a duplicate, posted and fetched again:
    each answer is valid against the document's schema for its status code."""
    port, base, session = live.daemon.ports["api"], live.base, live.session
    mci = Regulator(pki)
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 50])  # 243: no RPZ owner name
    tasks = {
        "applied": mci.restrict("R-1", "domain:applied.example.kz", "ip:192.0.2.1"),
        "partial": mci.restrict("R-2", f"domain:{long_name}"),
        "pending": mci.resume("R-3"),
        "cancelled": mci.restrict("R-3", "domain:cancelled.example.kz"),
    }
    posted = response_schema("/v1/tasks", "post", 200)
    fetched = response_schema("/v1/tasks/{iss}/{id}", "get", 200)
    for expected, task in tasks.items():
        body = mci.sign(task)
        for attempt in ("first", "duplicate"):
            status, answer = await push_task(port, pki, body)
            assert (status, answer["status"]) == (200, expected), (attempt, answer)
            posted.validate(answer)
        async with session.get(f"{base}/v1/tasks/mci/{task['id']}") as resp:
            assert resp.status == 200
            again = await resp.json()
        assert again["status"] == expected
        fetched.validate(again)
    # The validators are not vacuous: a receipt with an unknown status is refused.
    with pytest.raises(jsonschema.ValidationError):
        posted.validate(dict(answer, status="enforced"))


async def test_the_daemon_serves_the_packaged_document(live: Live) -> None:
    base, session = live.base, live.session
    async with session.get(base + "/v1/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.read() == PACKAGED.read_bytes()


def read_report(path: Path) -> list[dict[str, Any]]:
    """Every request Schemathesis sent, with its phase, operation and answer."""
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished["recorder"]
        for case_id, interaction in recorder.get("interactions", {}).items():
            case = recorder["cases"][case_id]["value"]
            response = interaction.get("response") or {}
            content = response.get("content") or {}
            body = base64.b64decode(content["$base64"]) if "$base64" in content else b""
            out.append(
                {
                    "phase": finished["phase"],
                    "operation": f"{case['method']} {case['path']}",
                    "mode": case.get("meta", {}).get("generation", {}).get("mode"),
                    "status": response.get("status_code"),
                    "body": body,
                    "checks": recorder.get("checks", {}).get(case_id, []),
                }
            )
    return out


def json_field(body: bytes, key: str) -> Any:
    try:
        return json.loads(body).get(key)
    except (ValueError, AttributeError):
        return None


async def test_schemathesis_finds_no_error_and_no_answer_outside_the_document(
    live: Live, tmp_path: Path, pki: Path
) -> None:
    port = live.daemon.ports["api"]
    report_dir = tmp_path / "schemathesis"
    await seed_register(port, pki)
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="tests.support.openapi_hooks",
        PYTHONPATH=os.pathsep.join(filter(None, [str(HOOKS_DIR), os.environ.get("PYTHONPATH")])),
        KZGATE_ST_PKI=str(pki),
    )
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(DOCS_COPY),
        "--url", live.base,
        "--tls-verify", str(pki / "tls/ca.crt"),
        "--request-cert", str(pki / "tls/client.crt"),
        "--request-cert-key", str(pki / "tls/client.key"),
        "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
        "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1", "--generation-database", "none",
        "--request-timeout", "10",
        "--no-color", "--report", "ndjson", "--report-dir", str(report_dir),
    ]  # fmt: skip
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(ST_TIMEOUT_SECONDS):
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, output.decode(errors="replace")[-6000:]
    [ndjson] = report_dir.glob("*.ndjson")
    cases = read_report(ndjson)
    statuses = Counter((c["operation"], c["status"]) for c in cases)
    print(f"schemathesis: {len(cases)} requests in {elapsed:.1f} s; {sorted(statuses.items())}")

    operations = {
        f"{method.upper()} {path}" for path, item in document()["paths"].items() for method in item
    }
    assert operations <= {c["operation"] for c in cases}
    # Every documented operation answered with a success at least once, so its
    # success schema was checked, not only the refusals.
    for operation in operations:
        assert any(op == operation and 200 <= s < 300 for op, s in statuses), operation
    refusals = {s for op, s in statuses if op == "POST /v1/tasks" and s >= 400}
    assert refusals >= {400, 401, 403, 409, 413, 415, 422}, refusals
    # Signed tasks got through, so receipts were checked against the document too.
    # Which receipt statuses a seeded run meets depends on how Hypothesis's draws
    # happen to meet (about ten tasks are accepted): every status is checked,
    # deterministically, by test_every_receipt_status_matches_the_document.
    posted = [c for c in cases if c["operation"] == "POST /v1/tasks" and c["status"] == 200]
    assert "applied" in {json_field(c["body"], "status") for c in posted}
    verdicts = {
        json_field(c["body"], "verdict") for c in cases if c["operation"] == "GET /v1/lookup"
    }
    assert verdicts >= {"blocked", "allowed"}
    # Nothing was masked by the rate limit, nothing failed, and the checks that
    # matter ran on every case that got an answer.
    assert not any(s == 429 for _, s in statuses)
    assert not any(s is None or s >= 500 for _, s in statuses)
    outcomes = Counter(check["status"] for c in cases for check in c["checks"])
    assert set(outcomes) == {"success"}, outcomes
    conformance = ("status_code_conformance", "response_schema_conformance")
    for case in cases:
        ran = {check["name"] for check in case["checks"]}
        assert "not_a_server_error" in ran, case
        # Schemathesis leaves out the conformance checks only for requests it
        # made outside an operation's contract (e.g. a malformed Content-Type).
        if case["mode"] == "positive" and 200 <= case["status"] < 300:
            assert set(conformance) <= ran, case
    for operation in operations:
        assert any(
            set(conformance) <= {check["name"] for check in c["checks"]}
            for c in cases
            if c["operation"] == operation
        ), operation


async def test_integer_query_parameters_are_plain_decimal(live: Live) -> None:
    """int() also takes " 5", "+5", "1_0" and "٣" (Arabic-Indic three); the document
    says integer, so those are 422 like any other non-integer."""
    base, session = live.base, live.session
    for key, raw in [
        ("limit", "1_0"),
        ("limit", " 3"),
        ("limit", "3 "),
        ("limit", "\u0663"),
        ("offset", "+5"),
        ("targets_limit", "\uff15"),  # fullwidth five
    ]:
        async with session.get(base + "/v1/instructions", params={key: raw}) as resp:
            answer = await resp.json()
            assert (resp.status, answer["error"]) == (422, "invalid_task"), (key, raw)
    for key, raw in [("limit", "10"), ("offset", "0"), ("targets_limit", "0")]:
        async with session.get(base + "/v1/instructions", params={key: raw}) as resp:
            assert resp.status == 200, (key, raw, await resp.text())


async def test_a_body_with_a_content_encoding_is_415_and_stores_nothing(
    live: Live, tmp_path: Path, pki: Path
) -> None:
    """A task is never compressed. Before, aiohttp decoded the body: corrupt gzip or
    deflate was a 503 (and a logged traceback), br or zstd a plain-text 400."""
    base, session = live.base, live.session
    mci = Regulator(pki)
    task = mci.sign(mci.restrict("gz-1", "domain:gz.example.kz"))
    before = dump_register(live.db)
    for encoding, body in [
        ("gzip", gzip.compress(task)),  # even a valid one: never decoded, never stored
        ("gzip", b"not gzip"),
        ("deflate", b"not deflate"),
        ("br", b"\x00\x01"),
        ("zstd", b"\x00\x01"),
        ("x-unknown", task),
    ]:
        headers = {"Content-Type": "application/jose", "Content-Encoding": encoding}
        async with session.post(base + "/v1/tasks", data=body, headers=headers) as resp:
            assert resp.content_type == "application/json", (encoding, await resp.text())
            answer = await resp.json()
            assert (resp.status, answer["error"]) == (415, "unsupported_media_type"), encoding
    assert dump_register(live.db) == before
    headers = {"Content-Type": "application/jose", "Content-Encoding": "identity"}
    async with session.post(base + "/v1/tasks", data=task, headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def test_a_body_cut_short_is_the_client_fault_not_an_internal_error(
    live: Live, tmp_path: Path, pki: Path
) -> None:
    """A client that hangs up mid-body, or breaks the chunked framing after the
    handler started reading, got "internal error" logged with a traceback: one
    TLS handshake per ERROR line. It is a malformed request, not kzgate's fault."""
    base, session = live.base, live.session
    port = live.daemon.ports["api"]
    head = b"POST /v1/tasks HTTP/1.1\r\nHost: kzgate\r\nContent-Type: application/jose\r\n"
    for raw in [
        head + b"Content-Length: 100\r\n\r\nabc",  # then hangs up
        head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabc",  # then hangs up
        head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",  # bad size
    ]:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ssl(pki), server_hostname="localhost"
        )
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body now
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    async with session.get(base + "/healthz") as resp:  # still serving
        assert resp.status == 200
    await asyncio.sleep(0.2)
    log = live.daemon.log
    assert not [line for line in log if "internal error" in line], "".join(log)
