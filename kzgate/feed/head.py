"""The signed head of an issuer's log (task-protocol.md §6): verified, parsed, built; pure.

A head is a JWS signed exactly as tasks are (a key of that issuer, alg
EdDSA), header ``typ`` ``kzgate-head+json``, whose payload names the log's
session, its highest seq, the chain over all its payloads, and when it was
issued and goes stale. What to do with a head (rollback, new session, stale)
is feed/judge.py's; this module only says whether it is one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.errors import Forbidden, InvalidTask
from kzgate.protocol.intake import verify_signed
from kzgate.protocol.jws import sign_compact
from kzgate.protocol.schema import MAX_SEQ, parse_timestamp
from kzgate.protocol.trust import TrustStore

HEAD_TYP = "kzgate-head+json"
FIELDS = frozenset({"v", "iss", "session", "seq", "chain", "issued_at", "expires"})
_CHAIN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Head:
    """An accepted head; ``jws`` is the compact serialization as received (kept as proof)."""

    iss: str
    session: str  # a UUID in its canonical lower-case text form
    seq: int  # the highest task seq in the log (0: an empty log)
    chain: bytes  # c(seq), 32 octets
    issued_at: dt.datetime
    expires: dt.datetime
    jws: str

    def stale(self, now: dt.datetime) -> bool:
        return now > self.expires


def _fail(field: str, message: str) -> NoReturn:
    raise InvalidTask(f"head.{field}: {message}")


def verify_head(body: bytes, iss: str, trust: TrustStore, now: dt.datetime) -> Head:
    """The head in ``body``, published by issuer ``iss``, or the TaskError saying why not.

    Signature and key as for tasks (§2, a key current at ``now``); the signer must be
    ``iss`` and so must the payload's ``iss``. A stale head is still a head: the caller
    decides (it is alarmed, not accepted).
    """
    signed = verify_signed(body, HEAD_TYP, trust, now)
    obj = signed.obj
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        _fail(unknown[0][:80], "unknown field")
    for name in sorted(FIELDS):
        if name not in obj:
            _fail(name, "required")
    if type(obj["v"]) is not int or obj["v"] != 1:
        _fail("v", f"unsupported version {obj['v']!r:.40}")
    if obj["iss"] != iss or signed.key.issuer != iss:
        raise Forbidden(
            f"head of {obj['iss']!r:.80} signed with key {signed.key.kid!r} of "
            f"{signed.key.issuer!r}; this feed is {iss!r}'s"
        )
    session = obj["session"]
    try:
        canonical = str(uuid.UUID(session)) if isinstance(session, str) else None
    except ValueError:
        canonical = None
    if canonical is None or canonical != session.lower():
        _fail("session", "expected a UUID")
    seq = obj["seq"]
    # bool is an int in Python, but true is not a sequence number.
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        _fail("seq", f"must be an integer >= 0, got {seq!r:.40}")
    chain = obj["chain"]
    if not isinstance(chain, str) or _CHAIN.fullmatch(chain) is None:
        _fail("chain", "expected 64 lower-case hex digits")
    issued_at = parse_timestamp(obj["issued_at"], "head.issued_at")
    expires = parse_timestamp(obj["expires"], "head.expires")
    if expires < issued_at:
        _fail("expires", "before issued_at")
    text = body.strip(b" \t\r\n").decode("ascii")  # verified: base64url and dots only
    return Head(iss, canonical, seq, bytes.fromhex(chain), issued_at, expires, text)


def build_head(
    *,
    iss: str,
    session: str,
    seq: int,
    chain: bytes,
    issued_at: dt.datetime,
    expires: dt.datetime,
) -> dict[str, Any]:
    """A head payload (the issuer's side: the reference feed server, tests)."""
    return {
        "v": 1,
        "iss": iss,
        "session": session,
        "seq": seq,
        "chain": chain.hex(),
        "issued_at": issued_at.isoformat(),
        "expires": expires.isoformat(),
    }


def sign_head(head: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    payload = json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return sign_compact({"alg": "EdDSA", "kid": kid, "typ": HEAD_TYP}, payload, key)
