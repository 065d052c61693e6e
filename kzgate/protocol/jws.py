"""JWS Compact Serialization (RFC 7515 §7.1): split, strictly decode, sign.

Decoding is strict on purpose: one signed message must have exactly one
textual form, so padding, characters outside the base64url alphabet and
non-canonical encodings (non-zero unused trailing bits) are all refused.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.errors import Malformed
from kzgate.protocol.jsonstrict import loads_object

_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
# Bits of the last character that carry no data, by (length % 4); they must be zero.
_UNUSED_BITS_MASK = {2: 0x0F, 3: 0x03}


@dataclass(frozen=True)
class CompactJWS:
    """A split and decoded compact JWS; nothing in it is verified yet."""

    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes  # b64header "." b64payload, exactly as received


def b64url_encode(b: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def b64url_decode(s: bytes | str, part: str) -> bytes:
    """Strictly decode unpadded base64url, or raise Malformed naming ``part``."""
    raw = s.encode("ascii", "replace") if isinstance(s, str) else s
    if _B64URL.fullmatch(raw) is None:
        what = "padding '='" if b"=" in raw else "a character outside the base64url alphabet"
        raise Malformed(f"{part}: bad base64url ({what})")
    rest = len(raw) % 4
    if rest == 1:
        raise Malformed(f"{part}: bad base64url (impossible length {len(raw)})")
    if rest and _VALUE[raw[-1]] & _UNUSED_BITS_MASK[rest]:
        raise Malformed(f"{part}: bad base64url (non-canonical trailing bits)")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def parse_compact(body: bytes) -> CompactJWS:
    """Split ``body`` into a CompactJWS, or raise Malformed naming the bad part."""
    # Clients commonly end a file or a curl body with a newline; that is not data.
    text = body.strip(b" \t\r\n")
    parts = text.split(b".")
    if len(parts) != 3:
        raise Malformed(f"not a JWS compact serialization: {len(parts)} parts, expected 3")
    if not parts[0]:
        raise Malformed("header: empty")
    # The header first: it is small, and its errors are the most telling.
    header = loads_object(b64url_decode(parts[0], "header"), "header")
    return CompactJWS(
        header=header,
        payload=b64url_decode(parts[1], "payload"),
        signature=b64url_decode(parts[2], "signature"),
        signing_input=text[: len(parts[0]) + 1 + len(parts[1])],
    )


def sign_compact(header: dict[str, Any], payload: bytes, key: Ed25519PrivateKey) -> str:
    """Sign ``payload`` under ``header`` and return the compact serialization."""
    encoded_header = b64url_encode(
        json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    )
    signing_input = f"{encoded_header}.{b64url_encode(payload)}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"
