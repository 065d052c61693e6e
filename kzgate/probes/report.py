"""The verification report: every check of a sweep, signed with the operator's receipt key.

Pure. Like a receipt (kzgate/protocol/receipts.py), the JWS payload is the
canonical JSON of the report without its ``signature`` member, so anyone with
the operator's public key can check that the visible fields are the signed ones.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kzgate.errors import BadSignature, TaskError
from kzgate.probes.model import OUTCOMES, Check
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import parse_compact, sign_compact
from kzgate.protocol.receipts import canonical_json
from kzgate.protocol.verifier import Ed25519Verifier

VERIFICATION_TYP = "kzgate-verification+json"
REPORT_VERSION = 1
_ED25519 = Ed25519Verifier()


def _timestamp(value: dt.datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError("report timestamps must carry a UTC offset")
    return value.isoformat(timespec="microseconds")


def _check(check: Check) -> dict[str, Any]:
    t, ref = check.target, check.target.instruction
    return {
        "target": t.value,
        "target_kind": t.kind,
        "source": t.source,
        "instruction": {"iss": ref.iss, "number": ref.number, "date": ref.date},
        "place": {"kind": check.place.kind, "name": check.place.name},
        "expected": t.expect,
        "observed": check.observed,
        "outcome": check.outcome,
        "at": _timestamp(check.at),
    }


def build_report(
    checks: Sequence[Check],
    *,
    operator: str,
    scope: str,
    started: dt.datetime,
    finished: dt.datetime,
) -> dict[str, Any]:
    """The report's body, without ``signature``. ``scope`` says what was swept
    ("sample", "instruction mci No. 12 of 2026-11-01", "all")."""
    counts = Counter(c.outcome for c in checks)
    places = sorted({c.place for c in checks})
    return {
        "v": REPORT_VERSION,
        "operator": operator,
        "scope": scope,
        "started_at": _timestamp(started),
        "finished_at": _timestamp(finished),
        "places": [{"kind": p.kind, "name": p.name} for p in places],
        "summary": {"checks": len(checks), **{o: counts.get(o, 0) for o in OUTCOMES}},
        "checks": [_check(c) for c in checks],
    }


def sign_report(body: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    """``body`` plus ``signature``: a compact JWS over its canonical JSON."""
    if "signature" in body:
        raise ValueError("report is already signed")
    header = {"alg": "EdDSA", "kid": kid, "typ": VERIFICATION_TYP}
    return {**body, "signature": sign_compact(header, canonical_json(body), key)}


def verify_report(report: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise BadSignature unless ``report`` is signed by ``public_key`` and unaltered."""
    compact = report.get("signature")
    if not isinstance(compact, str):
        raise BadSignature("report: signature missing or not a string")
    try:
        jws = parse_compact(compact.encode("ascii", "replace"))
        signed = loads_object(jws.payload, "report payload")
    except TaskError as exc:
        raise BadSignature(f"report: {exc.detail}") from None
    if jws.header.get("alg") not in _ED25519.algs or jws.header.get("typ") != VERIFICATION_TYP:
        raise BadSignature("report: not an EdDSA kzgate verification report")
    if not _ED25519.verify(public_key, jws.signing_input, jws.signature):
        raise BadSignature("report: signature does not verify")
    rest = {k: v for k, v in report.items() if k != "signature"}
    # Bytes, not ==: 1 == 1.0 == True in Python, and evidence must not be that loose.
    if canonical_json(rest) != canonical_json(signed) or canonical_json(signed) != jws.payload:
        raise BadSignature("report: the visible fields differ from the signed ones")
