"""The intake API over real HTTPS with mutual TLS: answers, receipts, and every refusal."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.enforce.dryrun import DryRunEnforcer
from kzgate.keys import load_private_key
from kzgate.model import InstructionRef
from kzgate.protocol.receipts import verify_receipt
from tests.support.kzfixtures import Regulator, client_ssl, dump_register, write_config


class Api:
    def __init__(self, daemon: Daemon, session: aiohttp.ClientSession) -> None:
        host, port = daemon.bound["api"]
        self.base = f"https://{host}:{port}"
        mhost, mport = daemon.bound["metrics"]
        self.metrics_url = f"http://{mhost}:{mport}/metrics"
        self.session = session
        self.daemon = daemon
        self.db = daemon.cfg.register.path

    async def post(self, body: bytes, content_type: str = "application/jose") -> tuple[int, Any]:
        async with self.session.post(
            self.base + "/v1/tasks", data=body, headers={"Content-Type": content_type}
        ) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as resp:
            return resp.status, await resp.json()


def enforced_prefixes(daemon: Daemon) -> dict[Any, Any]:
    """The prefixes the dry-run enforcer (nftables' stand-in in these tests) holds."""
    assert daemon.enforcers is not None
    [dryrun] = [e for e in daemon.enforcers.enforcers if isinstance(e, DryRunEnforcer)]
    return dict(dryrun.prefixes)


async def start(tmp_path: Path, pki: Path, **sections: Any) -> Daemon:
    daemon = Daemon(load_config(write_config(tmp_path, pki, **sections)))
    await daemon.start()
    return daemon


@pytest.fixture
async def api(tmp_path: Path, pki: Path) -> AsyncIterator[Api]:
    daemon = await start(tmp_path, pki)
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Api(daemon, session)
    await daemon.stop()


@pytest.fixture
def mci(pki: Path) -> Regulator:
    return Regulator(pki)


@pytest.fixture
def sts(pki: Path) -> Regulator:
    return Regulator(pki, iss="sts", kid="sts-dev")


def operator_public(pki: Path) -> Any:
    return load_private_key(pki / "keys/operator.key").public_key()


async def test_restrict_is_applied_with_a_verifiable_receipt(
    api: Api, mci: Regulator, pki: Path
) -> None:
    task = mci.restrict("77-1", "domain:Мысал.ҚАЗ.", "cidr:10.0.0.0/24", "url:https://x.kz/a")
    status, receipt = await api.post(mci.sign(task))
    assert status == 200, receipt
    assert receipt["status"] == "applied"
    assert receipt["task"] == {"iss": "mci", "id": task["id"], "seq": task["seq"]}
    assert receipt["operator"] == "op-test"
    assert receipt["applied_at"] >= receipt["received_at"]
    verify_receipt(receipt, operator_public(pki))
    assert api.daemon.index.lookup_name("www.xn--80awbu3c.xn--80ao21a") is not None

    status, looked = await api.get("/v1/lookup?name=WWW.мысал.қаз")
    assert (status, looked["verdict"]) == (200, "blocked")
    assert looked["instructions"][0]["number"] == "77-1"
    status, looked = await api.get("/v1/lookup?ip=10.0.0.9")
    assert looked["verdict"] == "blocked"
    status, again = await api.get(f"/v1/tasks/mci/{task['id']}")
    assert (status, again) == (200, receipt)
    status, listed = await api.get("/v1/instructions")
    [instruction] = listed["instructions"]
    assert instruction["number"] == "77-1"
    assert {"type": "url", "value": "https://x.kz/a"} in instruction["targets"]


async def test_resume_lifts_only_what_no_other_instruction_covers(api: Api, mci: Regulator) -> None:
    for task in (
        mci.restrict("1", "domain:a.kz", "cidr:10.0.0.0/24"),
        mci.restrict("2", "domain:a.kz", "ip:10.0.0.5", "domain:b.kz"),
    ):
        assert (await api.post(mci.sign(task)))[0] == 200
    status, receipt = await api.post(mci.sign(mci.resume("1")))
    assert (status, receipt["status"]) == (200, "applied")
    index = api.daemon.index
    assert index.lookup_name("a.kz") is not None  # still covered by No. 2
    assert set(enforced_prefixes(api.daemon)) == {ipaddress.ip_network("10.0.0.5/32")}
    await api.post(mci.sign(mci.resume("2")))
    assert index.lookup_name("a.kz") is None and not enforced_prefixes(api.daemon)


async def test_duplicate_returns_the_stored_receipt(api: Api, mci: Regulator) -> None:
    body = mci.sign(mci.restrict("5", "domain:dup.kz"))
    first = await api.post(body)
    before = dump_register(api.db)
    assert await api.post(body) == first
    assert dump_register(api.db) == before


async def test_resume_before_restrict_is_pending_then_cancelled(api: Api, mci: Regulator) -> None:
    status, receipt = await api.post(mci.sign(mci.resume("9")))
    assert (status, receipt["status"]) == (200, "pending")
    status, receipt = await api.post(mci.sign(mci.restrict("9", "domain:late.kz")))
    assert (status, receipt["status"]) == (200, "cancelled")
    assert api.daemon.index.lookup_name("late.kz") is None


def tampered(body: bytes) -> bytes:
    head, payload, sig = body.split(b".")
    return b".".join([head, payload, sig[:-2] + (b"AA" if sig[-2:] != b"AA" else b"BA")])


async def refusal_cases(
    api: Api, mci: Regulator, sts: Regulator
) -> list[tuple[str, bytes, str, int, str]]:
    """(name, body, content type, expected status, expected code); one stored task first."""
    stored = mci.restrict("100", "domain:stored.kz")
    assert (await api.post(mci.sign(stored)))[0] == 200
    other_bytes = dict(stored, authority="Another authority")
    j = "application/jose"
    return [
        ("not a JWS", b"hello", j, 400, "malformed"),
        ("bad base64", b"e30=.e30.AAAA", j, 400, "malformed"),
        (
            "tampered signature",
            tampered(mci.sign(mci.restrict("101", "domain:x.kz"))),
            j,
            401,
            "bad_signature",
        ),
        (
            "iss not the key's issuer",
            sts.sign(dict(mci.restrict("103", "domain:x.kz"))),
            j,
            403,
            "forbidden",
        ),
        (
            "aud excludes us",
            mci.sign(mci.restrict("104", "domain:x.kz", aud=["op-other"])),
            j,
            403,
            "forbidden",
        ),
        ("another issuer's instruction", sts.sign(sts.resume("100")), j, 403, "forbidden"),
        ("same id, other bytes", mci.sign(other_bytes), j, 409, "conflict"),
        (
            "second restrict of a stored instruction",
            mci.sign(mci.restrict("100", "domain:y.kz")),
            j,
            409,
            "conflict",
        ),
        (
            "seq already used",
            mci.sign(mci.restrict("105", "domain:x.kz", seq=stored["seq"])),
            j,
            409,
            "conflict",
        ),
        (
            "wrong media type",
            mci.sign(mci.restrict("106", "domain:x.kz")),
            "application/json",
            415,
            "unsupported_media_type",
        ),
        ("bad domain", mci.sign(mci.restrict("107", "domain:-bad-.kz")), j, 422, "invalid_task"),
        (
            "host bits set",
            mci.sign(mci.restrict("108", "cidr:10.0.0.1/24")),
            j,
            422,
            "invalid_task",
        ),
        ("unknown target type", mci.sign(mci.restrict("109", "port:443")), j, 422, "invalid_task"),
    ]


async def test_every_refusal_has_its_code_and_changes_nothing(
    api: Api, mci: Regulator, sts: Regulator
) -> None:
    for name, body, content_type, want_status, want_code in await refusal_cases(api, mci, sts):
        before = dump_register(api.db)
        index_before = (api.daemon.index.domains(), enforced_prefixes(api.daemon))
        status, answer = await api.post(body, content_type)
        assert (status, answer["error"]) == (want_status, want_code), (name, answer)
        assert answer["detail"], name
        assert dump_register(api.db) == before, name
        assert (api.daemon.index.domains(), enforced_prefixes(api.daemon)) == index_before, name


async def test_over_long_text_fields_are_422_naming_the_field_and_change_nothing(
    api: Api, mci: Regulator
) -> None:
    """The reproducers of issue 10: a 1 MB instruction number and an 8 MB ground."""
    await api.post(mci.sign(mci.restrict("1", "domain:stored.kz")))  # a register with content
    cases = [
        (
            "instruction.number",
            mci.restrict("2" * 1_000_000, "domain:x.kz", id="long-number"),
            1_000_000,
        ),
        ("ground", dict(mci.restrict("3", "domain:x.kz"), ground="g" * 8_000_000), 8_000_000),
        ("authority", dict(mci.restrict("4", "domain:x.kz"), authority="a" * 513), 513),
        ("applicant", mci.resume("1", applicant="p" * 513), 513),
    ]
    for field, task, length in cases:
        before = dump_register(api.db)
        status, answer = await api.post(mci.sign(task))
        assert (status, answer["error"]) == (422, "invalid_task"), (field, answer)
        assert answer["detail"].startswith(f"{field}: at most "), answer
        assert answer["detail"].endswith(f"characters, got {length}"), answer
        assert dump_register(api.db) == before, field
    assert api.daemon.index.lookup_name("x.kz") is None
    assert api.daemon.index.lookup_name("stored.kz") is not None  # the resume was refused


async def test_unknown_kid_is_401(api: Api, mci: Regulator) -> None:
    rogue = Regulator(mci.pki, kid="mci-dev")
    body = rogue.sign(rogue.restrict("1", "domain:x.kz"))
    head, rest = body.split(b".", 1)
    header = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    header["kid"] = "nobody-2026"
    new_head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
    before = dump_register(api.db)
    status, answer = await api.post(new_head + b"." + rest)
    assert (status, answer["error"]) == (401, "unknown_key")
    assert dump_register(api.db) == before


async def test_body_over_the_limit_is_413_before_it_is_read(
    tmp_path: Path, pki: Path, mci: Regulator
) -> None:
    daemon = await start(tmp_path, pki, api={"max_body_bytes": 2048})
    host, port = daemon.bound["api"]
    body = mci.sign(mci.restrict("1", *[f"domain:n{i}.example.kz" for i in range(200)]))
    assert len(body) > 2048
    try:
        before = dump_register(daemon.cfg.register.path)
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://{host}:{port}/v1/tasks"
            headers = {"Content-Type": "application/jose"}
            async with session.post(url, data=body, headers=headers) as resp:
                assert (resp.status, (await resp.json())["error"]) == (413, "too_large")

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
                for i in range(0, len(body), 512):
                    yield body[i : i + 512]

            async with session.post(url, data=chunks(), headers=headers) as resp:
                assert (resp.status, (await resp.json())["error"]) == (413, "too_large")
        assert dump_register(daemon.cfg.register.path) == before
    finally:
        await daemon.stop()


async def test_rate_limit_is_429(tmp_path: Path, pki: Path, mci: Regulator) -> None:
    daemon = await start(tmp_path, pki, api={"rate_limit": {"per_second": 0.001, "burst": 2}})
    host, port = daemon.bound["api"]
    try:
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
        async with aiohttp.ClientSession(connector=connector) as session:
            codes = []
            for i in range(3):
                body = mci.sign(mci.restrict(str(i), f"domain:r{i}.kz"))
                async with session.post(
                    f"https://{host}:{port}/v1/tasks",
                    data=body,
                    headers={"Content-Type": "application/jose"},
                ) as resp:
                    codes.append((resp.status, (await resp.json()).get("error")))
        assert codes == [(200, None), (200, None), (429, "rate_limited")]
        assert daemon.index.lookup_name("r2.kz") is None
    finally:
        await daemon.stop()


async def test_client_without_certificate_never_reaches_a_handler(
    api: Api, mci: Regulator, pki: Path
) -> None:
    before = dump_register(api.db)
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki, with_cert=False))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            async with session.post(
                api.base + "/v1/tasks",
                data=mci.sign(mci.restrict("1", "domain:x.kz")),
                headers={"Content-Type": "application/jose"},
            ) as resp:
                await resp.read()
    assert dump_register(api.db) == before


async def test_unknown_task_is_404_and_health_endpoints(api: Api) -> None:
    status, answer = await api.get("/v1/tasks/mci/nope")
    assert (status, answer["error"]) == (404, "not_found")
    assert (await api.get("/healthz"))[0] == 200
    status, ready = await api.get("/readyz")
    assert (status, ready["ready"]) == (200, True)


async def test_metrics_count_tasks_and_apply_latency(api: Api, mci: Regulator) -> None:
    await api.post(mci.sign(mci.restrict("1", "domain:m.kz", "ip:192.0.2.1")))
    await api.post(b"junk")
    async with api.session.get(api.metrics_url) as resp:
        text = await resp.text()
    assert 'kzgate_tasks_total{outcome="applied",type="restrict"} 1.0' in text
    assert 'kzgate_tasks_total{outcome="malformed",type="unknown"} 1.0' in text
    assert "kzgate_task_apply_seconds_count 1.0" in text
    assert "kzgate_instructions_active 1.0" in text
    assert 'kzgate_targets_active{kind="domain"} 1.0' in text


async def test_instruction_listing_caps_targets_and_counts_them(api: Api, mci: Regulator) -> None:
    targets = [f"domain:t{i}.kz" for i in range(150)]
    assert (await api.post(mci.sign(mci.restrict("1", *targets))))[0] == 200
    status, listed = await api.get("/v1/instructions?targets_limit=5")
    [instruction] = listed["instructions"]
    assert len(instruction["targets"]) == 5 and instruction["targets_total"] == 150
    status, listed = await api.get("/v1/instructions?limit=0")
    assert (status, listed["error"]) == (422, "invalid_task")


async def test_a_resume_answers_verified_at_beside_the_signed_receipt(
    api: Api, mci: Regulator, pki: Path
) -> None:
    first = mci.restrict("88-1", "domain:lifted.kz")
    await api.post(mci.sign(first))
    task = mci.resume("88-1")
    status, receipt = await api.post(mci.sign(task))
    assert (status, receipt["status"]) == (200, "applied")
    assert "verified_at" not in receipt  # the answer to the push: the receipt alone
    status, got = await api.get(f"/v1/tasks/mci/{task['id']}")
    assert status == 200 and got["verified_at"] is None
    assert {k: v for k, v in got.items() if k != "verified_at"} == receipt
    verify_receipt(got, operator_public(pki))  # verified_at is outside the signature
    register = api.daemon.pipeline.register  # type: ignore[union-attr]
    at = dt.datetime.fromisoformat(receipt["applied_at"]) + dt.timedelta(seconds=2)
    assert register.mark_verified(InstructionRef("mci", "88-1", "2026-11-01"), at)
    status, got = await api.get(f"/v1/tasks/mci/{task['id']}")
    assert got["verified_at"] == at.isoformat()
    verify_receipt(got, operator_public(pki))
    status, restricted = await api.get(f"/v1/tasks/mci/{first['id']}")
    assert status == 200 and "verified_at" not in restricted  # only a resume has one


async def test_probes_enabled_wire_a_prober_that_hears_resumes_and_never_stops_intake(
    tmp_path: Path, pki: Path, mci: Regulator
) -> None:
    daemon = await start(tmp_path, pki, probes={"enabled": True, "interval": 1, "sample": 5})
    try:
        assert daemon.prober is not None and daemon.pipeline is not None
        heard: list[InstructionRef] = []
        daemon.pipeline.on_resumed(lambda ref, at: heard.append(ref))
        await daemon.pipeline.submit(mci.sign(mci.restrict("5", "domain:probe.kz")))
        answer = await daemon.pipeline.submit(mci.sign(mci.resume("5")))
        assert answer.body["status"] == "applied"  # whatever the probes do, intake answers
        assert heard == [InstructionRef("mci", "5", "2026-11-01")]
        assert daemon.prober.rounds >= 1
        status = daemon.live_status()["probes"]
        assert isinstance(status, dict) and status["enabled"] is True
    finally:
        await daemon.stop()
    assert daemon.prober is None
