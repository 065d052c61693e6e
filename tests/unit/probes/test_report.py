"""The signed verification report: what it holds, and that tampering is caught."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.errors import BadSignature
from kzgate.model import InstructionRef
from kzgate.probes.model import Check, Place, ProbeTarget
from kzgate.probes.report import VERIFICATION_TYP, build_report, sign_report, verify_report
from kzgate.protocol.jws import parse_compact
from kzgate.protocol.receipts import sign_receipt

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AT = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
REF = InstructionRef("mci", "12", "2026-11-01")


def checks() -> list[Check]:
    name = ProbeTarget("name", "example.kz", "domain:example.kz", REF, "blocked")
    ip = ProbeTarget("address", "10.0.0.1", "cidr:10.0.0.0/24", REF, "blocked")
    return [
        Check(name, Place("resolver", "10.0.0.53:53"), "NXDOMAIN", "pass", AT),
        Check(name, Place("kzgate", "127.0.0.1:5353"), "timeout", "unreachable", AT),
        Check(ip, Place("nft", "nft"), "not covered", "fail", AT),
    ]


def signed() -> dict[str, Any]:
    body = build_report(checks(), operator="op-kz-1", scope="sample", started=AT, finished=AT)
    return sign_report(body, KEY, "op-kz-1")


def test_report_holds_every_check_and_a_summary() -> None:
    report = signed()
    assert report["summary"] == {"checks": 3, "pass": 1, "fail": 1, "unreachable": 1}
    assert report["operator"] == "op-kz-1" and report["scope"] == "sample"
    assert report["checks"][2] == {
        "target": "10.0.0.1",
        "target_kind": "address",
        "source": "cidr:10.0.0.0/24",
        "instruction": {"iss": "mci", "number": "12", "date": "2026-11-01"},
        "place": {"kind": "nft", "name": "nft"},
        "expected": "blocked",
        "observed": "not covered",
        "outcome": "fail",
        "at": "2026-11-22T10:00:00.000000+00:00",
    }
    assert [p["kind"] for p in report["places"]] == ["kzgate", "nft", "resolver"]
    header = parse_compact(report["signature"].encode()).header
    assert header == {"alg": "EdDSA", "kid": "op-kz-1", "typ": VERIFICATION_TYP}


def test_signed_report_verifies() -> None:
    verify_report(signed(), KEY.public_key())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r["checks"][2].update(outcome="pass"),
        lambda r: r["summary"].update(fail=0),
        lambda r: r["checks"].pop(),
        lambda r: r.update(extra=1),
        lambda r: r.update(v=1.0),  # equal in Python, not in the signed bytes
        lambda r: r.pop("signature"),
        lambda r: r.update(signature=r["signature"][:-4] + "AAAA"),
    ],
)
def test_tampering_fails(tamper: Any) -> None:
    report = copy.deepcopy(signed())
    tamper(report)
    with pytest.raises(BadSignature):
        verify_report(report, KEY.public_key())


def test_wrong_key_and_wrong_typ_fail() -> None:
    with pytest.raises(BadSignature, match="does not verify"):
        verify_report(signed(), Ed25519PrivateKey.generate().public_key())
    body = build_report(checks(), operator="op-kz-1", scope="sample", started=AT, finished=AT)
    receipt_signed = sign_receipt(body, KEY, "op-kz-1")  # a receipt's typ, same key
    report = {**body, "signature": receipt_signed["receipt"]}
    with pytest.raises(BadSignature, match="not an EdDSA kzgate verification report"):
        verify_report(report, KEY.public_key())


def test_naive_timestamps_and_double_signing_are_refused() -> None:
    with pytest.raises(ValueError):
        build_report([], operator="o", scope="all", started=AT.replace(tzinfo=None), finished=AT)
    with pytest.raises(ValueError):
        sign_report(signed(), KEY, "op-kz-1")
