"""The intake pipeline: every refusal row of task-protocol.md §5, in pipeline order."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kzgate.errors import (
    BadSignature,
    Forbidden,
    InvalidTask,
    Malformed,
    TaskError,
    UnknownKey,
)
from kzgate.protocol.build import sign_task
from kzgate.protocol.intake import verify_task
from kzgate.protocol.jws import b64url_encode
from tests.support.protocol_fixtures import (
    MCI_KEY,
    NEXT_KEY,
    NOW,
    OLD_KEY,
    OPERATOR,
    REVOKED_KEY,
    STS_KEY,
    TRUST,
    compact,
    restrict,
    resume,
    task_header,
)


def body_of(task: dict[str, Any], key: Ed25519PrivateKey = MCI_KEY, kid: str = "mci-1") -> bytes:
    return sign_task(task, key, kid).encode()


def refusal(body: bytes, operator: str = OPERATOR, now: dt.datetime = NOW) -> TaskError:
    with pytest.raises(TaskError) as err:
        verify_task(body, TRUST, operator, now)
    return err.value


def signed(payload: bytes, key: Ed25519PrivateKey = MCI_KEY, **header: Any) -> bytes:
    return compact(task_header(**header), payload, key)


# -- accepted -------------------------------------------------------------------------


def test_a_valid_restrict_is_accepted_with_its_exact_bytes() -> None:
    body = body_of(restrict())
    task = verify_task(body + b"\n", TRUST, OPERATOR, NOW)
    assert (task.iss, task.id, task.seq, task.kid) == ("mci", "2026-11-22-0001", 42, "mci-1")
    payload = json.dumps(restrict(), ensure_ascii=False, separators=(",", ":")).encode()
    assert task.payload == payload
    assert task.sha256 == hashlib.sha256(payload).hexdigest()


def test_a_valid_resume_is_accepted() -> None:
    assert verify_task(body_of(resume()), TRUST, OPERATOR, NOW).type == "resume"


def test_the_payload_bytes_are_used_as_received() -> None:
    # Unusual but valid JSON spacing, signed as is: verified and kept byte for byte.
    payload = json.dumps(restrict(), indent=3, ensure_ascii=False).encode()
    task = verify_task(signed(payload), TRUST, OPERATOR, NOW)
    assert task.payload == payload


def test_alg_ed25519_is_accepted_too() -> None:
    payload = json.dumps(restrict()).encode()
    assert verify_task(signed(payload, alg="Ed25519"), TRUST, OPERATOR, NOW).id


@pytest.mark.parametrize("aud", [["*"], [OPERATOR], ["other", OPERATOR], ["other", "*"]])
def test_aud_naming_this_operator_or_star(aud: list[str]) -> None:
    assert verify_task(body_of(restrict(aud=aud)), TRUST, OPERATOR, NOW).aud == tuple(aud)


def test_key_window_edges_are_inclusive() -> None:
    old = body_of(restrict(), OLD_KEY, "mci-old")
    assert verify_task(old, TRUST, OPERATOR, NOW - dt.timedelta(days=1)).kid == "mci-old"
    nxt = body_of(restrict(), NEXT_KEY, "mci-next")
    assert verify_task(nxt, TRUST, OPERATOR, NOW + dt.timedelta(days=1)).kid == "mci-next"


# -- 400 malformed --------------------------------------------------------------------


def _parts(body: bytes) -> list[bytes]:
    return body.split(b".")


@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (lambda p: p[:2], "not a JWS compact serialization: 2 parts"),
        (lambda p: [*p, b"AAAA"], "not a JWS compact serialization: 4 parts"),
        (lambda p: [p[0], p[1] + b"=", p[2]], "payload: bad base64url (padding"),
        (lambda p: [p[0], p[1], p[2] + b"=="], "signature: bad base64url (padding"),
        (lambda p: [p[0], p[1][:-1] + b"+", p[2]], "payload: bad base64url (a character"),
        (lambda p: [p[0] + b"*", p[1], p[2]], "header: bad base64url (a character"),
    ],
)
def test_not_a_jws(mangle: Any, detail: str) -> None:
    err = refusal(b".".join(mangle(_parts(body_of(restrict())))))
    assert isinstance(err, Malformed) and err.status == 400
    assert err.detail.startswith(detail)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b'{"v":1,"id":"\xff"}', "payload: not valid UTF-8"),
        (b'{"v":1,"v":1}', "payload: duplicate key 'v'"),
        (b"[1]", "payload: top level must be a JSON object, not array"),
        (b'{"v":1', "payload: not valid JSON"),
    ],
)
def test_signed_but_malformed_payload(payload: bytes, detail: str) -> None:
    err = refusal(signed(payload))
    assert isinstance(err, Malformed)
    assert err.detail.startswith(detail)


def test_duplicate_key_in_header() -> None:
    header = b'{"alg":"EdDSA","kid":"mci-1","typ":"kzgate-task+json","kid":"sts-1"}'
    err = refusal(compact(header, json.dumps(restrict()).encode(), MCI_KEY))
    assert isinstance(err, Malformed)
    assert err.detail == "header: duplicate key 'kid'"


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ({"kid": None}, "header.kid: expected a string"),
        ({"kid": 7}, "header.kid: expected a string"),
        ({"kid": ""}, "header.kid: expected a string"),
        ({"typ": None}, "header.typ: must be 'kzgate-task+json'"),
        ({"typ": "JWT"}, "header.typ: must be 'kzgate-task+json'"),
        ({"crit": ["b64"], "b64": False}, "header.crit: no critical extensions"),
    ],
)
def test_header_checks(header: dict[str, Any], detail: str) -> None:
    full = {**task_header(), **header}
    full = {k: v for k, v in full.items() if v is not None}
    err = refusal(compact(full, json.dumps(restrict()).encode(), MCI_KEY))
    assert isinstance(err, Malformed)
    assert err.detail.startswith(detail)


# -- 401 bad_signature / unknown_key ----------------------------------------------------


def test_alg_none_is_refused() -> None:
    header = b64url_encode(json.dumps({"alg": "none", "kid": "mci-1"}).encode())
    payload = b64url_encode(json.dumps(restrict()).encode())
    err = refusal(f"{header}.{payload}.".encode())
    assert isinstance(err, BadSignature) and err.status == 401
    assert err.detail.startswith("alg 'none' is not accepted")


def test_alg_hs256_keyed_with_the_public_key_is_refused() -> None:
    # The classic confusion attack: HMAC with the issuer's public key as the secret.
    secret = MCI_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    header = b64url_encode(json.dumps(task_header(alg="HS256")).encode())
    payload = b64url_encode(json.dumps(restrict()).encode())
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    err = refusal(signing_input + b"." + b64url_encode(mac).encode())
    assert isinstance(err, BadSignature)
    assert err.detail.startswith("alg 'HS256' is not accepted")


@pytest.mark.parametrize("alg", [None, ["EdDSA"], "eddsa", "ES256"])
def test_other_algs_are_refused(alg: Any) -> None:
    header = {k: v for k, v in task_header(alg=alg).items() if v is not None}
    err = refusal(compact(header, json.dumps(restrict()).encode(), MCI_KEY))
    assert isinstance(err, BadSignature)


@pytest.mark.parametrize(
    ("key", "kid", "detail"),
    [
        (MCI_KEY, "nobody", "kid 'nobody': unknown key"),
        (REVOKED_KEY, "mci-revoked", "kid 'mci-revoked': key is revoked"),
        (NEXT_KEY, "mci-next", "kid 'mci-next': key is not yet valid"),
        (OLD_KEY, "mci-old", "kid 'mci-old': key expired"),
    ],
)
def test_unusable_keys(key: Ed25519PrivateKey, kid: str, detail: str) -> None:
    err = refusal(body_of(restrict(), key, kid))
    assert isinstance(err, UnknownKey) and err.status == 401 and err.code == "unknown_key"
    assert err.detail.startswith(detail)


def test_a_changed_payload_with_the_original_signature_fails() -> None:
    header, _, signature = _parts(body_of(restrict()))
    changed = json.dumps(restrict(seq=43), ensure_ascii=False, separators=(",", ":")).encode()
    err = refusal(b".".join([header, b64url_encode(changed).encode(), signature]))
    assert isinstance(err, BadSignature) and err.code == "bad_signature"


def test_one_flipped_payload_byte_fails() -> None:
    header, _, signature = _parts(body_of(restrict()))
    raw = bytearray(json.dumps(restrict(), ensure_ascii=False, separators=(",", ":")).encode())
    raw[raw.index(b"example.kz")] ^= 0x20  # "Example.kz": same task after normalization
    err = refusal(b".".join([header, b64url_encode(bytes(raw)).encode(), signature]))
    assert isinstance(err, BadSignature)


def test_same_json_reserialized_fails() -> None:
    # Equal as JSON, different as bytes: the signature covers bytes, so it must fail.
    header, _, signature = _parts(body_of(restrict()))
    spaced = json.dumps(restrict(), ensure_ascii=False, separators=(", ", ": ")).encode()
    assert json.loads(spaced) == restrict()
    err = refusal(b".".join([header, b64url_encode(spaced).encode(), signature]))
    assert isinstance(err, BadSignature)


def test_a_changed_header_fails() -> None:
    _, payload, signature = _parts(body_of(restrict()))
    header = b64url_encode(json.dumps(task_header(), indent=1).encode()).encode()
    err = refusal(b".".join([header, payload, signature]))
    assert isinstance(err, BadSignature)


def test_another_issuers_key_under_this_kid_fails() -> None:
    err = refusal(body_of(restrict(), STS_KEY, "mci-1"))
    assert isinstance(err, BadSignature)


def test_an_embedded_jwk_is_ignored() -> None:
    attacker = Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    err = refusal(signed(json.dumps(restrict()).encode(), attacker, jwk=jwk))
    assert isinstance(err, BadSignature)


@pytest.mark.parametrize("signature", [b"", b"AAAA", b64url_encode(bytes(64)).encode()])
def test_empty_short_or_zero_signature(signature: bytes) -> None:
    header, payload, _ = _parts(body_of(restrict()))
    err = refusal(b".".join([header, payload, signature]))
    assert isinstance(err, BadSignature)


def test_signature_is_checked_before_the_payload_is_read() -> None:
    header, _, signature = _parts(body_of(restrict()))
    for junk in (b"[1]", b'{"v":2}', b"\xff"):
        err = refusal(b".".join([header, b64url_encode(junk).encode(), signature]))
        assert isinstance(err, BadSignature)


def test_the_key_is_checked_before_the_signature() -> None:
    header, payload, _ = _parts(body_of(restrict(), REVOKED_KEY, "mci-revoked"))
    err = refusal(b".".join([header, payload, b""]))
    assert isinstance(err, UnknownKey)


# -- 403 forbidden --------------------------------------------------------------------


def test_iss_must_be_the_keys_issuer() -> None:
    err = refusal(body_of(restrict(iss="sts")))
    assert isinstance(err, Forbidden) and err.status == 403
    assert err.detail == "iss 'sts' is not the issuer of key 'mci-1'"


def test_another_issuers_valid_key_cannot_speak_for_mci() -> None:
    err = refusal(body_of(restrict(), STS_KEY, "sts-1"))
    assert isinstance(err, Forbidden)
    assert err.detail == "iss 'mci' is not the issuer of key 'sts-1'"


def test_aud_must_include_this_operator() -> None:
    err = refusal(body_of(restrict(aud=["op-other", "op-third"])))
    assert isinstance(err, Forbidden)
    assert "aud does not include this operator ('op-kz-1')" in err.detail


# -- 422 invalid_task -----------------------------------------------------------------


def _targets(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"type": t, "value": v} for t, v in pairs]


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        (
            {"targets": _targets(("domain", "ok.kz"), ("domain", "not_ok..kz"))},
            "targets[1].value: not a valid domain name",
        ),
        ({"targets": _targets(("cidr", "10.0.0.1/24"))}, "targets[0].value: not a valid prefix"),
        ({"targets": _targets(("asn", "AS1"))}, "targets[0].type: unknown target type 'asn'"),
        ({"priority": "high"}, "priority: unknown field"),
        ({"v": 2}, "v: unsupported protocol version 2"),
        ({"seq": 0}, "seq: must be an integer >= 1"),
        ({"seq": True}, "seq: must be an integer >= 1"),
        ({"seq": "1"}, "seq: must be an integer >= 1"),
    ],
)
def test_schema_errors_after_a_good_signature(overrides: dict[str, Any], detail: str) -> None:
    err = refusal(body_of(restrict(**overrides)))
    assert isinstance(err, InvalidTask) and err.status == 422 and err.code == "invalid_task"
    assert err.detail.startswith(detail)


def test_schema_errors_come_before_forbidden() -> None:
    # A wrong iss in an otherwise broken task: the schema error is the one reported.
    err = refusal(body_of(restrict(iss="sts", v=2)))
    assert isinstance(err, InvalidTask)
