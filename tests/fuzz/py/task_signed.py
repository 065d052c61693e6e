"""Fuzz task intake behind a valid signature: the payload is signed, then verify_task reads it.

The fuzzed bytes are a task payload (the JSON a regulator signs). The harness signs them with
a key the trust store holds, so every input gets past the signature to the strict JSON reader,
the schema (kzgate/protocol/schema.py) and the issuer/audience checks: the code a stolen or
buggy regulator key would reach. Only ``TaskError`` (the API's 4xx errors) may escape.

What is accepted must be what the operator stores: the exact payload and its digest, the
signing key's issuer, target values that are already normal (normalizing one again gives the
same value, so a resume matches the restrict it lifts), domains in letters-digits-hyphen form,
URLs whose authority urllib reads as [userinfo@]host[:port], and free text on one line without
control characters (it reaches logs, DNS EDE text and nft comments).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import urlsplit

from _harness import OPERATOR, TASK_ISSUER, TASK_KID, fuzz, instrumented

with instrumented(__name__):
    from _taskworld import NOW, TRUST, sign

    from kzgate.errors import TaskError
    from kzgate.protocol import schema
    from kzgate.protocol.intake import verify_task

# A body may be 16 MiB (api.max_body_bytes), so a payload about 12 MiB. The fuzzer works up
# to 1 MiB (an Ed25519 signature and a JSON parse per input; larger inputs would run a few
# hundred times a minute); tests/fuzz/test_replay.py sends payloads at the 16 MiB limit.
MAX_LEN = 1 << 20
TIMEOUT = 20  # seconds per input: 100,000 targets of the largest kind stay far below it


def target(data: bytes) -> None:
    try:
        task = verify_task(sign(data), TRUST, OPERATOR, NOW)
    except TaskError:
        return
    assert task.payload == data and task.sha256 == hashlib.sha256(data).hexdigest()
    assert task.iss == TASK_ISSUER and task.kid == TASK_KID
    assert OPERATOR in task.aud or "*" in task.aud
    assert (task.type == "restrict") == bool(task.targets)
    for text in (task.iss, task.authority, task.instruction.number, task.ground, task.applicant):
        _one_line(text)
    for t in task.targets:
        assert schema._TARGET_VALUE[t.kind](t.value) == t.value, f"{t} is not normal"
        if t.kind == "domain":  # what the DNS and RPZ enforcers put on the wire
            assert _HOSTNAME.fullmatch(t.value), t
        if t.kind == "url":
            _authority(t.value)
            _one_line(t.value)
    for link in task.removed_links:
        assert schema.url(link) == link, f"{link!r} is not normal"
        _authority(link)
        _one_line(link)


_HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*", re.ASCII)


def _one_line(text: str | None) -> None:
    """Free text goes to logs, DNS EDE text and nft comments: one line, no control characters
    (schema.py says so), in any of Unicode's senses of both."""
    if text is not None:
        assert text.splitlines() == [text], f"{text!r} is not one line"
        assert not any(unicodedata.category(c) == "Cc" for c in text), f"{text!r}: a control"


def _authority(value: str) -> None:
    """An accepted URL's authority is [userinfo@]host[:port], as urllib reads it."""
    parts = urlsplit(value)
    assert parts.hostname, value
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    hostport = parts.netloc.rpartition("@")[2]
    assert re.fullmatch(re.escape(host) + r"(:[0-9]*)?", hostport, re.IGNORECASE), value


if __name__ == "__main__":
    fuzz(target)
