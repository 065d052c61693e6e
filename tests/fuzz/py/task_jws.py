"""Fuzz task intake on raw request bodies: verify_task, exactly as POST /v1/tasks calls it.

The bytes are the whole body from an unauthenticated client: the JWS split, the header, the
algorithm and key choice, the signature check, then the payload. The corpus holds real signed
tasks and near misses (alg "none", HS256, unknown, expired and revoked keys, crit, padding),
so mutations start next to every refusal. Only ``TaskError`` may escape. A task that comes out
must carry a signature that verifies, checked here independently of kzgate/protocol/jws.py:
stdlib base64 and the trust store's public key over the first two parts as received.
"""

from __future__ import annotations

import base64
import json

from _harness import OPERATOR, fuzz, instrumented

with instrumented(__name__):
    from _taskworld import NOW, TRUST

    from kzgate.errors import TaskError
    from kzgate.protocol.intake import verify_task

# Bodies up to 16 MiB reach verify_task; see task_signed.py for why the fuzzer stops at 1 MiB
# and where the 16 MiB bodies are tested.
MAX_LEN = 1 << 20
TIMEOUT = 20  # seconds per input


def _b64(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def target(data: bytes) -> None:
    try:
        task = verify_task(data, TRUST, OPERATOR, NOW)
    except TaskError:
        return
    head, payload, signature = data.strip(b" \t\r\n").split(b".")
    kid = json.loads(_b64(head))["kid"]
    # raises InvalidSignature (a finding) if intake accepted a body the key did not sign
    TRUST.key_for(kid, NOW).public_key.verify(_b64(signature), head + b"." + payload)
    assert task.payload == _b64(payload) and task.kid == kid


if __name__ == "__main__":
    fuzz(target)
