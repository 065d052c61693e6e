"""Schemathesis hooks for tests/integration/api/test_openapi.py (loaded by `st run` via
SCHEMATHESIS_HOOKS, in the Schemathesis process, not in pytest's).

The document can say a task is a JWS but not that its signature verifies, so
schema-driven generation alone would only ever reach the refusals. Here half
of the positive cases of `POST /v1/tasks` become tasks signed with the test
PKI's issuer keys (path in KZGATE_ST_PKI), drawn by Hypothesis: restricts and
resumes over a small pool of instruction numbers, so applied, pending,
cancelled, duplicate-number conflicts, cross-issuer refusals and bodies over
the size limit all happen, with targets of every type including names at the
length limits.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from kzgate.keys import load_private_key
from kzgate.model import REASONS
from kzgate.protocol.build import new_task, sign_task

# Without it (a run by hand against a real node) only the serializer is added.
PKI = Path(os.environ["KZGATE_ST_PKI"]) if "KZGATE_ST_PKI" in os.environ else None
ISSUERS = {"mci": "mci-dev", "sts": "sts-dev"}
NOW = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5)))


@schemathesis.serializer("application/jose")
def jose(ctx: Any, value: Any) -> bytes:
    """The body goes on the wire as is; a negative case's non-string as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        # Lone surrogates become invalid UTF-8 on the wire: a fair malformed body.
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_domain = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "kz"])),
    st.sampled_from(["мысал.қаз", "Пример.РФ.", "xn--80awbu3c.xn--80ao21a", "-bad-.kz"]),
    # 243 characters: legal for the protocol, too long for an RPZ owner name.
    st.integers(1, 9).map(lambda d: ".".join([str(d) * 63, "b" * 63, "c" * 63, "d" * 50])),
    st.text(min_size=1, max_size=30),  # mostly not a domain: 422
)


def _cidr(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, plen: int) -> str:
    return str(ipaddress.ip_network(f"{addr}/{min(plen, addr.max_prefixlen)}", strict=False))


_target = st.one_of(
    st.tuples(st.just("domain"), _domain),
    st.tuples(st.just("ip"), st.ip_addresses().map(str)),
    st.tuples(st.just("cidr"), st.builds(_cidr, st.ip_addresses(), st.integers(0, 128))),
    st.tuples(st.just("url"), _domain.map(lambda d: f"https://{d}/a?b=1")),
    st.tuples(st.just("app"), st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){1,3}", fullmatch=True)),
)
# About 10 KB signed: over the test config's api.max_body_bytes, so 413 is met too.
_over_the_body_limit = st.just([("app", f"kz.example.app{i}") for i in range(300)])
_text = st.one_of(
    st.sampled_from(["Law On Communications, art. 41-1", "the owner"]),
    st.text(min_size=0, max_size=40),  # empty and control characters: 422
)


@st.composite
def signed_tasks(draw: st.DrawFn) -> str:
    iss = draw(st.sampled_from(sorted(ISSUERS)))
    signer = iss if draw(st.integers(0, 9)) else draw(st.sampled_from(sorted(ISSUERS)))
    type_ = draw(st.sampled_from(["restrict", "restrict", "resume"]))
    seq = draw(st.integers(1, 2**40))
    extra: dict[str, Any]
    if type_ == "restrict":
        extra = {
            "targets": draw(st.lists(_target, min_size=1, max_size=5) | _over_the_body_limit),
            "ground": draw(_text),
            "reason": draw(st.none() | st.sampled_from(REASONS)),
        }
    else:
        extra = {"applicant": draw(_text), "removed_as_of": "2026-11-20"}
    task = new_task(
        iss=iss,
        id=f"st-{type_}-{seq}",
        seq=seq,
        type=type_,
        authority="Ministry of Culture and Information of the Republic of Kazakhstan",
        # Few instructions, so that tasks meet: resumes before and after their restrict.
        number=str(draw(st.integers(1, 8))),
        date="2026-11-01",
        aud=draw(st.sampled_from([["*"], ["op-test"], ["op-other"]])),
        issued_at=NOW,
        **extra,
    )
    kid = ISSUERS[signer]
    assert PKI is not None
    return sign_task(task, load_private_key(PKI / f"keys/{kid}.key"), kid)


# What the test stores before the run (test_openapi.SEEDED), and neighbours that are not.
_lookups = st.sampled_from(
    [
        {"name": "www.blocked.example.kz"},
        {"name": "WWW.Мысал.ҚАЗ."},
        {"name": "free.example.kz"},
        {"ip": "10.0.0.7"},
        {"ip": "2001:db8::5"},
        {"ip": "10.0.1.7"},
    ]
)


@schemathesis.hook
def flatmap_case(ctx: Any, case: Any) -> Any:
    """Half of the positive cases of POST /v1/tasks carry a validly signed task, and half
    of those of GET /v1/lookup ask about one name or address that the register knows."""
    operation = ctx.operation
    meta = case.meta
    if operation is None or meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return st.just(case)
    route = (operation.method.upper(), operation.path)

    def with_body(body: str) -> Any:
        case.body = body
        return case

    def with_query(query: dict[str, str]) -> Any:
        case.query = query
        return case

    if route == ("POST", "/v1/tasks") and PKI is not None:
        return st.one_of(st.just(case), signed_tasks().map(with_body))
    if route == ("GET", "/v1/lookup"):
        return st.one_of(st.just(case), _lookups.map(with_query))
    return st.just(case)
