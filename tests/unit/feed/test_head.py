"""A feed head (task-protocol.md §6) verified as tasks are, and every way it can be wrong."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from kzgate.errors import BadSignature, Forbidden, InvalidTask, Malformed, TaskError, UnknownKey
from kzgate.feed.head import HEAD_TYP, build_head, sign_head, verify_head
from tests.support.protocol_fixtures import MCI_KEY, NOW, OLD_KEY, STS_KEY, TRUST, compact

SESSION = "3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10"


def head(**overrides: Any) -> dict[str, Any]:
    """A valid head payload of mci; ``overrides`` replace fields (None deletes one)."""
    out = build_head(
        iss="mci",
        session=SESSION,
        seq=1234,
        chain=bytes(range(32)),
        issued_at=NOW,
        expires=NOW + dt.timedelta(minutes=10),
    )
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def signed(payload: dict[str, Any], kid: str = "mci-1", key: Any = MCI_KEY) -> bytes:
    return sign_head(payload, key, kid).encode()


def test_a_valid_head_is_read_exactly() -> None:
    body = signed(head())
    got = verify_head(body + b"\n", "mci", TRUST, NOW)
    assert (got.iss, got.session, got.seq) == ("mci", SESSION, 1234)
    assert got.chain == bytes(range(32))
    assert got.issued_at == NOW and got.expires == NOW + dt.timedelta(minutes=10)
    assert got.jws == body.decode()  # kept as received, for proof
    assert not got.stale(NOW) and got.stale(NOW + dt.timedelta(minutes=11))


def test_an_empty_log_has_seq_zero_and_upper_case_uuids_are_read_canonical() -> None:
    got = verify_head(signed(head(seq=0, session=SESSION.upper())), "mci", TRUST, NOW)
    assert (got.seq, got.session) == (0, SESSION)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (lambda: signed(head(), kid="sts-1", key=STS_KEY), Forbidden),  # another issuer's key
        (lambda: signed(head(iss="sts"), kid="sts-1", key=STS_KEY), Forbidden),
        (lambda: signed(head(iss="sts")), Forbidden),  # mci's key, but says sts
        (lambda: signed(head(), kid="mci-1", key=STS_KEY), BadSignature),
        (lambda: signed(head(), kid="mci-old", key=OLD_KEY), UnknownKey),  # outside its window
        (lambda: signed(head(), kid="nobody"), UnknownKey),
        (lambda: compact({"alg": "none", "kid": "mci-1", "typ": HEAD_TYP}, b"{}", MCI_KEY),
         BadSignature),
        # a task is not a head, even when it verifies
        (lambda: compact({"alg": "EdDSA", "kid": "mci-1", "typ": "kzgate-task+json"},
                         json.dumps(head()).encode(), MCI_KEY), Malformed),
        (lambda: b"not.a.jws", Malformed),
    ],
)  # fmt: skip
def test_signature_key_and_issuer_are_checked(body: Any, error: type[TaskError]) -> None:
    with pytest.raises(error):
        verify_head(body(), "mci", TRUST, NOW)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"v": 2}, "v"),
        ({"v": True}, "v"),
        ({"seq": -1}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": "5"}, "seq"),
        ({"seq": 2**63}, "seq"),
        ({"session": "not-a-uuid"}, "session"),
        ({"session": 7}, "session"),
        ({"chain": "00" * 31}, "chain"),
        ({"chain": "AB" * 32}, "chain"),
        ({"issued_at": "2026-12-01 10:00"}, "issued_at"),
        ({"expires": (NOW - dt.timedelta(seconds=1)).isoformat()}, "expires"),  # before issued
        ({"chain": None}, "chain"),
        ({"expires": None}, "expires"),
        ({"extra": 1}, "extra"),
    ],
)
def test_each_field_is_checked_and_named(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTask, match=f"head.{field}"):
        verify_head(signed(head(**overrides)), "mci", TRUST, NOW)


def test_duplicate_keys_are_refused_before_the_schema() -> None:
    raw = json.dumps(head())[:-1] + ', "seq": 1}'
    with pytest.raises(Malformed):
        verify_head(compact({"alg": "EdDSA", "kid": "mci-1", "typ": HEAD_TYP}, raw.encode(),
                            MCI_KEY), "mci", TRUST, NOW)  # fmt: skip
