"""Signed receipts (task-protocol.md §5): exact shape, canonical payload, tamper-evident."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.errors import BadSignature
from kzgate.protocol.jws import parse_compact, sign_compact
from kzgate.protocol.receipts import build_receipt, sign_receipt, verify_receipt

OPERATOR_KEY = Ed25519PrivateKey.generate()
PLUS5 = dt.timezone(dt.timedelta(hours=5))
RECEIVED = dt.datetime(2026, 11, 22, 10, 15, 0, 123456, PLUS5)
APPLIED = dt.datetime(2026, 11, 22, 10, 15, 0, 127001, PLUS5)


def body(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "status": "applied",
        "task_iss": "mci",
        "task_id": "2026-11-22-0001",
        "seq": 42,
        "sha256": "ab" * 32,
        "operator": "op-kz-1",
        "received_at": RECEIVED,
        "applied_at": APPLIED,
    }
    args.update(overrides)
    return build_receipt(**args)


def test_build_receipt_is_exactly_the_protocol_object() -> None:
    assert body() == {
        "status": "applied",
        "task": {"iss": "mci", "id": "2026-11-22-0001", "seq": 42},
        "sha256": "ab" * 32,
        "operator": "op-kz-1",
        "received_at": "2026-11-22T10:15:00.123456+05:00",
        "applied_at": "2026-11-22T10:15:00.127001+05:00",
    }


def test_timestamps_always_carry_microseconds_and_offset() -> None:
    got = body(received_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), applied_at=None)
    assert got["received_at"] == "2026-01-02T03:04:05.000000+00:00"
    assert got["applied_at"] is None


@pytest.mark.parametrize("status", ["applied", "pending", "cancelled", "accepted"])
def test_every_status_builds(status: str) -> None:
    assert body(status=status)["status"] == status


def test_partial_names_the_enforcer_and_the_targets_and_is_signed() -> None:
    missing = {"rpz": ["a" * 243 + ".kz"]}
    got = body(status="partial", not_enforced=missing)
    assert got["status"] == "partial" and got["not_enforced"] == missing
    signed = sign_receipt(got, OPERATOR_KEY, "op-key-1")
    verify_receipt(signed, OPERATOR_KEY.public_key())
    assert b'"not_enforced":{"rpz":["aaa' in parse_compact(signed["receipt"].encode()).payload
    forged = copy.deepcopy(signed)
    forged["not_enforced"]["rpz"].append("b.kz")
    with pytest.raises(BadSignature):
        verify_receipt(forged, OPERATOR_KEY.public_key())
    # only a partial receipt carries it
    assert "not_enforced" not in body(not_enforced={"rpz": []})
    with pytest.raises(ValueError, match="partial"):
        body(status="partial")
    with pytest.raises(ValueError, match="partial"):
        body(status="applied", not_enforced=missing)


def test_bad_inputs_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="status"):
        body(status="done")
    with pytest.raises(ValueError, match="offset"):
        body(received_at=dt.datetime(2026, 1, 1))


def test_sign_receipt_signs_the_canonical_body() -> None:
    unsigned = body(operator="оператор")
    signed = sign_receipt(unsigned, OPERATOR_KEY, "op-key-1")
    assert {k: v for k, v in signed.items() if k != "receipt"} == unsigned
    jws = parse_compact(signed["receipt"].encode())
    assert jws.header == {"alg": "EdDSA", "kid": "op-key-1", "typ": "kzgate-receipt+json"}
    expected = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert jws.payload == expected.encode("utf-8")
    assert "оператор".encode() in jws.payload
    OPERATOR_KEY.public_key().verify(jws.signature, jws.signing_input)


def test_a_receipt_survives_a_json_round_trip() -> None:
    signed = sign_receipt(body(), OPERATOR_KEY, "op-key-1")
    verify_receipt(signed, OPERATOR_KEY.public_key())
    verify_receipt(json.loads(json.dumps(signed, indent=2)), OPERATOR_KEY.public_key())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r.update(status="pending"),
        lambda r: r["task"].update(seq=43),
        lambda r: r["task"].update(seq=42.0),  # equal in Python, not in the signed bytes
        lambda r: r.update(applied_at=None),
        lambda r: r.update(extra="x"),
        lambda r: r.pop("operator"),
        lambda r: r.update(
            receipt=r["receipt"][:-2] + ("AA" if r["receipt"][-2:] != "AA" else "AQ")
        ),
        lambda r: r.update(receipt=r["receipt"] + "A"),
        lambda r: r.update(receipt="not a jws"),
        lambda r: r.update(receipt=None),
        lambda r: r.pop("receipt"),
    ],
)
def test_tampering_is_detected(tamper: Any) -> None:
    signed = copy.deepcopy(sign_receipt(body(), OPERATOR_KEY, "op-key-1"))
    tamper(signed)
    with pytest.raises(BadSignature):
        verify_receipt(signed, OPERATOR_KEY.public_key())


def test_another_key_does_not_verify() -> None:
    signed = sign_receipt(body(), OPERATOR_KEY, "op-key-1")
    with pytest.raises(BadSignature, match="signature does not verify"):
        verify_receipt(signed, Ed25519PrivateKey.generate().public_key())


def test_a_task_signature_is_not_a_receipt() -> None:
    # Same key, same payload, but the typ says it is a task: not accepted as a receipt.
    unsigned = body()
    payload = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    header = {"alg": "EdDSA", "kid": "op-key-1", "typ": "kzgate-task+json"}
    forged = {**unsigned, "receipt": sign_compact(header, payload, OPERATOR_KEY)}
    with pytest.raises(BadSignature, match="not an EdDSA kzgate receipt"):
        verify_receipt(forged, OPERATOR_KEY.public_key())


def test_a_non_canonical_signed_payload_is_refused() -> None:
    unsigned = body()
    payload = json.dumps(unsigned, indent=1).encode()  # same object, other bytes
    header = {"alg": "EdDSA", "kid": "op-key-1", "typ": "kzgate-receipt+json"}
    odd = {**unsigned, "receipt": sign_compact(header, payload, OPERATOR_KEY)}
    with pytest.raises(BadSignature, match="differ"):
        verify_receipt(odd, OPERATOR_KEY.public_key())


def test_sign_receipt_refuses_a_signed_body() -> None:
    signed = sign_receipt(body(), OPERATOR_KEY, "k")
    with pytest.raises(ValueError):
        sign_receipt(signed, OPERATOR_KEY, "k")


def test_verified_at_beside_a_receipt_is_outside_the_signature() -> None:
    key = Ed25519PrivateKey.generate()
    at = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.UTC)
    body = build_receipt(status="applied", task_iss="mci", task_id="r1", seq=2, sha256="ab" * 32,
                         operator="op", received_at=at, applied_at=at)  # fmt: skip
    signed = sign_receipt(body, key, "op")
    verify_receipt({**signed, "verified_at": None}, key.public_key())
    verify_receipt({**signed, "verified_at": "2026-11-22T10:15:03+00:00"}, key.public_key())
    with pytest.raises(BadSignature):  # a signed member still may not change
        verify_receipt({**signed, "applied_at": "2026-11-22T10:15:03+00:00"}, key.public_key())
