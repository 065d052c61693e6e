"""JWS compact parsing and strict JSON: every refusal is 400 malformed, naming the part."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kzgate.errors import Malformed
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import b64url_decode, b64url_encode, parse_compact, sign_compact
from tests.support.protocol_fixtures import MCI_KEY, compact, task_header


@given(st.binary(max_size=200))
def test_b64url_round_trip_matches_stdlib(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert "=" not in encoded
    assert encoded == base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert b64url_decode(encoded, "x") == data
    assert b64url_decode(encoded.encode(), "x") == data


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("QQ==", "padding"),
        ("QUI=", "padding"),
        ("QU+C", "outside the base64url alphabet"),
        ("QU/C", "outside the base64url alphabet"),
        ("QU C", "outside the base64url alphabet"),
        ("QUJ\n", "outside the base64url alphabet"),
        ("QUJĞ", "outside the base64url alphabet"),
        ("QUJDR", "impossible length"),
        ("QR", "non-canonical"),  # "QQ" is the canonical encoding of b"A"
        ("QUI", "QUI"),  # the canonical encoding of b"AB": must pass (checked below)
        ("QUJ", "non-canonical"),  # b"AB" with a stray low bit
        ("QUL", "non-canonical"),
    ],
)
def test_b64url_decode_is_strict(text: str, why: str) -> None:
    if why == text:
        assert b64url_decode(text, "payload") == b"AB"
        return
    with pytest.raises(Malformed) as err:
        b64url_decode(text, "payload")
    assert err.value.detail.startswith("payload: bad base64url")
    assert why in err.value.detail


def test_parse_compact_keeps_the_exact_signing_input() -> None:
    payload = b'{"a": 1,  "b":[ ]}'
    body = compact(task_header(), payload, MCI_KEY)
    jws = parse_compact(body + b"\r\n")
    assert jws.payload == payload
    assert jws.header == task_header()
    assert jws.signing_input == body.rsplit(b".", 1)[0]
    MCI_KEY.public_key().verify(jws.signature, jws.signing_input)


def test_sign_compact_verifies_with_cryptography() -> None:
    token = sign_compact({"alg": "EdDSA", "kid": "k"}, b"hello", MCI_KEY)
    jws = parse_compact(token.encode())
    assert jws.header == {"alg": "EdDSA", "kid": "k"}
    assert jws.payload == b"hello"
    MCI_KEY.public_key().verify(jws.signature, jws.signing_input)


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_wrong_number_of_parts(count: int) -> None:
    body = b".".join([b"e30"] * count)
    with pytest.raises(Malformed, match=f"{count} parts, expected 3"):
        parse_compact(body)


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (b"", "header: empty"),
        (b"[]", "header: top level must be a JSON object, not array"),
        (b'{"alg":"EdDSA","alg":"none"}', "header: duplicate key 'alg'"),
        (b"{not json}", "header: not valid JSON"),
        (b'\xef\xbb\xbf{"alg":"EdDSA"}', "header: starts with a UTF-8 byte order mark"),
    ],
)
def test_bad_header(header: bytes, detail: str) -> None:
    body = f"{b64url_encode(header)}.e30.AAAA".encode()
    with pytest.raises(Malformed) as err:
        parse_compact(body)
    assert err.value.detail.startswith(detail)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_bad_base64_names_the_part(part: int) -> None:
    parts = compact(task_header(), b"{}", MCI_KEY).split(b".")
    parts[part] += b"="
    with pytest.raises(Malformed) as err:
        parse_compact(b".".join(parts))
    assert err.value.detail.startswith(("header", "payload", "signature")[part] + ":")


# -- strict JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b'{"id":1,"id":2}', "payload: duplicate key 'id'"),
        (b'{"a":{"x":1,"x":1}}', "payload: duplicate key 'x'"),
        (b'{"a":[{"y":1,"y":2}]}', "payload: duplicate key 'y'"),
        (b'{"a":NaN}', "payload: NaN is not valid JSON"),
        (b'{"a":Infinity}', "payload: Infinity is not valid JSON"),
        (b'{"a":-Infinity}', "payload: -Infinity is not valid JSON"),
        (b'{"a":"\xff"}', "payload: not valid UTF-8"),
        (b'{"a":"\xc0\xaf"}', "payload: not valid UTF-8"),  # overlong "/"
        (b'{"a":"\xed\xa0\x80"}', "payload: not valid UTF-8"),  # encoded surrogate
        (b'\xef\xbb\xbf{"a":1}', "payload: starts with a UTF-8 byte order mark"),
        (b'{"a":"\\ud800"}', "payload: a \\u escape encodes a lone surrogate"),
        (b'{"\\uDFFF":1}', "payload: a \\u escape encodes a lone surrogate"),
        (b"[1,2]", "payload: top level must be a JSON object, not array"),
        (b'"s"', "payload: top level must be a JSON object, not string"),
        (b"1", "payload: top level must be a JSON object, not number"),
        (b"null", "payload: top level must be a JSON object, not null"),
        (b"", "payload: not valid JSON"),
        (b'{"a":1} x', "payload: not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "payload: not acceptable JSON"),
        (b'{"a":' + b"9" * 5000 + b"}", "payload: not acceptable JSON"),
    ],
)
def test_loads_object_refuses(data: bytes, detail: str) -> None:
    with pytest.raises(Malformed) as err:
        loads_object(data, "payload")
    assert err.value.detail.startswith(detail)


def test_loads_object_accepts_a_surrogate_pair_and_unicode() -> None:
    assert loads_object('{"e":"\\ud83d\\ude00","k":"Мысал"}'.encode(), "p") == {
        "e": "😀",
        "k": "Мысал",
    }


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=5,
    )
)
def test_loads_object_agrees_with_json_on_valid_objects(obj: dict[str, object]) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode()
    assert loads_object(data, "p") == obj
