"""The signed answer to a task (task-protocol.md §5).

The receipt's JWS payload is the canonical JSON of the answer without its
``receipt`` member, so anyone holding the operator's public key can check that
the visible fields are exactly the signed ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kzgate.protocol.signed import sign_document, verify_document

RECEIPT_TYP = "kzgate-receipt+json"
UNSIGNED = frozenset({"verified_at"})  # a member of an answer added after signing
STATUSES = frozenset({"applied", "partial", "pending", "cancelled", "accepted"})


def _timestamp(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError("receipt timestamps must carry a UTC offset")
    return value.isoformat(timespec="microseconds")


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
    return sign_document(body, key, kid, typ=RECEIPT_TYP, field="receipt")


def verify_receipt(receipt: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise BadSignature unless ``receipt`` is signed by ``public_key`` and unaltered.

    ``verified_at`` (a resume's, GET /v1/tasks) is added after signing: not signed.
    """
    verify_document(
        receipt, public_key, typ=RECEIPT_TYP, field="receipt", what="receipt", unsigned=UNSIGNED
    )
