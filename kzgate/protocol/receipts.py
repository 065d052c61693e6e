"""The signed answer to a task (task-protocol.md §5).

The receipt's JWS payload is the canonical JSON of the answer without its
``receipt`` member, so anyone holding the operator's public key can check that
the visible fields are exactly the signed ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kzgate.errors import BadSignature, TaskError
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import parse_compact, sign_compact
from kzgate.protocol.verifier import Ed25519Verifier

RECEIPT_TYP = "kzgate-receipt+json"
UNSIGNED = frozenset({"receipt", "verified_at"})  # members of an answer outside the signature
STATUSES = frozenset({"applied", "partial", "pending", "cancelled", "accepted"})
_ED25519 = Ed25519Verifier()


def _timestamp(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError("receipt timestamps must carry a UTC offset")
    return value.isoformat(timespec="microseconds")


def canonical_json(body: dict[str, Any]) -> bytes:
    """The one byte form of ``body`` that a receipt signs."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def build_receipt(
    *,
    status: str,
    task_iss: str,
    task_id: str,
    seq: int,
    sha256: str,
    operator: str,
    received_at: datetime,
    applied_at: datetime | None,
    not_enforced: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The answer object of §5, without ``receipt``.

    ``not_enforced`` (enforcer -> target values it cannot represent) goes with,
    and only with, status ``partial``.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown receipt status {status!r}")
    missing = {name: list(values) for name, values in (not_enforced or {}).items() if values}
    if (status == "partial") != bool(missing):
        raise ValueError("status 'partial' goes with a non-empty not_enforced, and only it")
    body: dict[str, Any] = {
        "status": status,
        "task": {"iss": task_iss, "id": task_id, "seq": seq},
        "sha256": sha256,
        "operator": operator,
        "received_at": _timestamp(received_at),
        "applied_at": None if applied_at is None else _timestamp(applied_at),
    }
    if missing:
        body["not_enforced"] = missing
    return body


def sign_receipt(body: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    """``body`` plus ``receipt``: a compact JWS over its canonical JSON."""
    if "receipt" in body:
        raise ValueError("body is already signed")
    header = {"alg": "EdDSA", "kid": kid, "typ": RECEIPT_TYP}
    return {**body, "receipt": sign_compact(header, canonical_json(body), key)}


def verify_receipt(receipt: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise BadSignature unless ``receipt`` is signed by ``public_key`` and unaltered."""
    compact = receipt.get("receipt")
    if not isinstance(compact, str):
        raise BadSignature("receipt: missing or not a string")
    try:
        jws = parse_compact(compact.encode("ascii", "replace"))
        signed = loads_object(jws.payload, "receipt payload")
    except TaskError as exc:
        raise BadSignature(f"receipt: {exc.detail}") from None
    if jws.header.get("alg") not in _ED25519.algs or jws.header.get("typ") != RECEIPT_TYP:
        raise BadSignature("receipt: not an EdDSA kzgate receipt")
    if not _ED25519.verify(public_key, jws.signing_input, jws.signature):
        raise BadSignature("receipt: signature does not verify")
    # verified_at (a resume's, GET /v1/tasks) is added after signing: not signed
    rest = {k: v for k, v in receipt.items() if k not in UNSIGNED}
    # Bytes, not ==: in Python 1 == 1.0 == True, and a receipt must not be that loose.
    if canonical_json(rest) != canonical_json(signed) or canonical_json(signed) != jws.payload:
        raise BadSignature("receipt: the visible fields differ from the signed ones")
