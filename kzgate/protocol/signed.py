"""A JSON document signed by the operator: a receipt (§5), a verification report.

The document carries its own signature in one member (``field``): a compact
JWS whose payload is the canonical JSON of the document without that member
(and without any member named ``unsigned``, added after signing). Anyone with
the operator's public key can check that the visible fields are exactly the
signed ones.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kzgate.errors import BadSignature, TaskError
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import parse_compact, sign_compact
from kzgate.protocol.verifier import Ed25519Verifier

_ED25519 = Ed25519Verifier()


def canonical_json(body: dict[str, Any]) -> bytes:
    """The one byte form of ``body`` that a signature covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sign_document(
    body: dict[str, Any], key: Ed25519PrivateKey, kid: str, *, typ: str, field: str
) -> dict[str, Any]:
    """``body`` plus ``field``: a compact JWS over its canonical JSON."""
    if field in body:
        raise ValueError(f"{field}: the document is already signed")
    header = {"alg": "EdDSA", "kid": kid, "typ": typ}
    return {**body, field: sign_compact(header, canonical_json(body), key)}


def verify_document(
    document: dict[str, Any],
    public_key: Ed25519PublicKey,
    *,
    typ: str,
    field: str,
    what: str,
    unsigned: frozenset[str] = frozenset(),
) -> None:
    """Raise BadSignature (its detail starting with ``what``) unless ``document`` is
    signed by ``public_key`` with header ``typ`` and unaltered."""
    compact = document.get(field)
    if not isinstance(compact, str):
        raise BadSignature(f"{what}: {field} missing or not a string")
    try:
        jws = parse_compact(compact.encode("ascii", "replace"))
        signed = loads_object(jws.payload, f"{what} payload")
    except TaskError as exc:
        raise BadSignature(f"{what}: {exc.detail}") from None
    if jws.header.get("alg") not in _ED25519.algs or jws.header.get("typ") != typ:
        raise BadSignature(f"{what}: not an EdDSA kzgate {what}")
    if not _ED25519.verify(public_key, jws.signing_input, jws.signature):
        raise BadSignature(f"{what}: signature does not verify")
    rest = {k: v for k, v in document.items() if k != field and k not in unsigned}
    # Bytes, not ==: in Python 1 == 1.0 == True, and evidence must not be that loose.
    if canonical_json(rest) != canonical_json(signed) or canonical_json(signed) != jws.payload:
        raise BadSignature(f"{what}: the visible fields differ from the signed ones")
