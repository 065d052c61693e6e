"""The task-intake world shared by the task harnesses: a trust store, the clock, signing.

The keys are fixed (see _harness), so signed tasks in the committed corpus verify in every run.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from _harness import OPERATOR, TASK_ISSUER, TASK_KEY, TASK_KID
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.protocol.intake import TASK_TYP
from kzgate.protocol.jws import b64url_encode
from kzgate.protocol.trust import IssuerKey, TrustStore

NOW = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5)))
# A second issuer's key, so that a task claiming "mci" but signed by "sts" reaches the 403.
STS_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
STS_KID = "fuzz-sts-1"
TRUST = TrustStore(
    [
        IssuerKey(TASK_KID, TASK_ISSUER, TASK_KEY.public_key()),
        IssuerKey(STS_KID, "sts", STS_KEY.public_key()),
        IssuerKey("fuzz-old", TASK_ISSUER, STS_KEY.public_key(), not_after=NOW - dt.timedelta(1)),
        IssuerKey("fuzz-revoked", TASK_ISSUER, TASK_KEY.public_key(), revoked=True),
    ]
)
HEADER = {"alg": "EdDSA", "kid": TASK_KID, "typ": TASK_TYP}
ENCODED_HEADER = b64url_encode(json.dumps(HEADER, separators=(",", ":")).encode())
OPERATOR_ID = OPERATOR


def sign(
    payload: bytes, header: dict[str, Any] | None = None, key: Ed25519PrivateKey = TASK_KEY
) -> bytes:
    """The compact JWS of ``payload`` (any bytes) under ``header``, signed with ``key``."""
    head = (
        ENCODED_HEADER
        if header is None
        else b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    )
    signing_input = f"{head}.{b64url_encode(payload)}".encode()
    return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode()
