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

from kzgate.probes.model import OUTCOMES, Check
from kzgate.protocol.signed import sign_document, verify_document

VERIFICATION_TYP = "kzgate-verification+json"
REPORT_VERSION = 1


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
    return sign_document(body, key, kid, typ=VERIFICATION_TYP, field="signature")


def verify_report(report: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise BadSignature unless ``report`` is signed by ``public_key`` and unaltered."""
    verify_document(
        report, public_key, typ=VERIFICATION_TYP, field="signature", what="verification report"
    )
