"""The whole pure intake pipeline: request body bytes and ``now`` in, a Task out.

The order is the point. Everything before the signature check is as small and
dumb as possible (split, decode, read the header), because it runs on
unauthenticated input; the payload is not even decoded as JSON until the
signature over the exact received bytes has verified. ``verify_signed`` is that
part alone, shared with every other signed document (the feed's heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kzgate.errors import BadSignature, Forbidden, Malformed
from kzgate.model import Task
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import parse_compact
from kzgate.protocol.schema import parse_task
from kzgate.protocol.trust import IssuerKey, TrustStore
from kzgate.protocol.verifier import VERIFIERS

TASK_TYP = "kzgate-task+json"
MAX_KID_CHARS = 256  # a kid is echoed in error details; keep those short


@dataclass(frozen=True)
class Signed:
    """A verified JWS: the key that signed it, its exact payload bytes, and that payload
    read as a JSON object (strictly: UTF-8, no duplicate keys)."""

    key: IssuerKey
    payload: bytes
    obj: dict[str, Any]


def verify_signed(body: bytes, typ: str, trust: TrustStore, now: datetime) -> Signed:
    """Check a compact JWS of header ``typ`` signed by a trusted key; the payload is
    returned as the exact bytes received, decoded as a JSON object only once the
    signature over them has verified. Raises the TaskError that says why not."""
    jws = parse_compact(body)  # 400: not a JWS, bad base64, bad header JSON
    header = jws.header

    # 401 before anything else about the header: an unaccepted alg ("none",
    # "HS256" with the public key as secret) is an attempt to skip verification.
    alg = header.get("alg")
    verifier = VERIFIERS.get(alg) if isinstance(alg, str) else None
    if verifier is None:
        raise BadSignature(f"alg {alg!r:.40} is not accepted (use {', '.join(sorted(VERIFIERS))})")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID_CHARS:
        raise Malformed(f"header.kid: expected a string of 1-{MAX_KID_CHARS} characters")
    if header.get("typ") != typ:
        raise Malformed(f"header.typ: must be {typ!r}")
    # We understand no extensions, and RFC 7515 §4.1.11 says a listed one we do
    # not understand makes the JWS invalid; "b64": false (RFC 7797) rides on it.
    if "crit" in header:
        raise Malformed("header.crit: no critical extensions are supported")
    # Other header parameters (jwk, jku, x5u, x5c ...) are ignored: the key
    # comes from the trust store only, never from the message.

    key = trust.key_for(kid, now)  # 401 unknown_key: unknown, revoked, outside window
    if not verifier.verify(key.public_key, jws.signing_input, jws.signature):
        raise BadSignature(f"signature does not verify with key {kid!r}")
    obj = loads_object(jws.payload, "payload")  # 400: not UTF-8 JSON, duplicate keys
    return Signed(key, jws.payload, obj)


def verify_task(body: bytes, trust: TrustStore, operator_id: str, now: datetime) -> Task:
    """Verify and parse one task, or raise the TaskError that says why not."""
    signed = verify_signed(body, TASK_TYP, trust, now)
    key = signed.key
    task = parse_task(signed.obj, signed.payload, key.kid)  # 422: schema and values

    # 403 last: these need the verified, parsed task.
    if task.iss != key.issuer:
        raise Forbidden(f"iss {task.iss!r} is not the issuer of key {key.kid!r}")
    if operator_id not in task.aud and "*" not in task.aud:
        raise Forbidden(f"aud does not include this operator ({operator_id!r}) or '*'")
    return task
