"""Shared helpers for the protocol tests: keys, a trust store, task builders.

Not a conftest (others own those); test modules import it by name.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.protocol.build import new_task
from kzgate.protocol.jws import b64url_encode
from kzgate.protocol.trust import IssuerKey, TrustStore

NOW = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5)))
OPERATOR = "op-kz-1"

MCI_KEY = Ed25519PrivateKey.generate()
STS_KEY = Ed25519PrivateKey.generate()
OLD_KEY = Ed25519PrivateKey.generate()
NEXT_KEY = Ed25519PrivateKey.generate()
REVOKED_KEY = Ed25519PrivateKey.generate()

TRUST = TrustStore(
    [
        IssuerKey("mci-1", "mci", MCI_KEY.public_key()),
        IssuerKey("sts-1", "sts", STS_KEY.public_key()),
        IssuerKey("mci-old", "mci", OLD_KEY.public_key(), not_after=NOW - dt.timedelta(days=1)),
        IssuerKey("mci-next", "mci", NEXT_KEY.public_key(), not_before=NOW + dt.timedelta(days=1)),
        IssuerKey("mci-revoked", "mci", REVOKED_KEY.public_key(), revoked=True),
    ]
)


def restrict(**overrides: Any) -> dict[str, Any]:
    """A valid restrict task object; ``overrides`` replace fields (None deletes one)."""
    task = new_task(
        iss="mci",
        id="2026-11-22-0001",
        seq=42,
        type="restrict",
        authority="Ministry of Culture and Information",
        number="04-1/123",
        date="2026-11-20",
        aud=("*",),
        targets=[("domain", "example.kz"), ("ip", "192.0.2.1"), ("cidr", "10.0.0.0/24")],
        ground="Law On Communications, art. 41-1",
        reason="illegal_content",
        issued_at=NOW,
    )
    return _apply(task, overrides)


def resume(**overrides: Any) -> dict[str, Any]:
    """A valid resume task object; ``overrides`` replace fields (None deletes one)."""
    task = new_task(
        iss="mci",
        id="2026-12-01-0007",
        seq=43,
        type="resume",
        authority="Ministry of Culture and Information",
        number="04-1/123",
        date="2026-11-20",
        applicant="owner of example.kz",
        removed_links=["https://example.kz/a", "https://example.kz/b"],
        removed_as_of="2026-11-30",
        issued_at=NOW,
    )
    return _apply(task, overrides)


def _apply(task: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is None:
            task.pop(key, None)
        else:
            task[key] = value
    return task


def compact(header: dict[str, Any] | bytes, payload: bytes, key: Ed25519PrivateKey) -> bytes:
    """A compact JWS over arbitrary header and payload bytes, correctly signed."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64url_encode(raw_header)}.{b64url_encode(payload)}".encode()
    return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode()


def task_header(kid: str = "mci-1", **extra: Any) -> dict[str, Any]:
    return {"alg": "EdDSA", "kid": kid, "typ": "kzgate-task+json", **extra}
