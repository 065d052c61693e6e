"""The regulator's side: build and sign a task (CLI ``task new|sign``, tests).

``new_task`` only assembles the object; it does not validate, so tests can
build deliberately wrong tasks. Run ``schema.parse_task`` to check one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.model import Target
from kzgate.protocol.intake import TASK_TYP
from kzgate.protocol.jws import sign_compact


def _day(value: str | dt.date) -> str:
    return value if isinstance(value, str) else value.isoformat()


def new_task(
    *,
    iss: str,
    id: str,
    seq: int,
    type: str,
    authority: str,
    number: str,
    date: str | dt.date,
    aud: Iterable[str] = ("*",),
    targets: Iterable[tuple[str, str] | Target] = (),
    ground: str | None = None,
    reason: str | None = None,
    applicant: str | None = None,
    removed_links: Iterable[str] = (),
    removed_as_of: str | dt.date | None = None,
    issued_at: dt.datetime,
) -> dict[str, Any]:
    """A task object (task-protocol.md §3); fields of the other type are left out.

    ``id`` and ``type`` shadow builtins on purpose: they are the protocol's names.
    """
    task: dict[str, Any] = {
        "v": 1,
        "id": id,
        "iss": iss,
        "aud": list(aud),
        "seq": seq,
        "issued_at": issued_at.isoformat(),
        "type": type,
        "authority": authority,
        "instruction": {"number": number, "date": _day(date)},
    }
    if type == "restrict":
        task["ground"] = ground
        if reason is not None:
            task["reason"] = reason
        task["targets"] = [
            {"type": t.kind, "value": t.value}
            if isinstance(t, Target)
            else {"type": t[0], "value": t[1]}
            for t in targets
        ]
    else:
        task["applicant"] = applicant
        task["removed_links"] = list(removed_links)
        task["removed_as_of"] = None if removed_as_of is None else _day(removed_as_of)
    return task


def sign_task(task: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    """The compact JWS a regulator would POST to /v1/tasks."""
    payload = json.dumps(task, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return sign_compact({"alg": "EdDSA", "kid": kid, "typ": TASK_TYP}, payload, key)
