"""Fuzz the JWS compact reader of kzgate/protocol/jws.py: parse_compact and b64url_decode.

The bytes are a POST /v1/tasks body, read before anything is authenticated. Only ``Malformed``
(HTTP 400, the module's documented error) may escape. What it accepts must be canonical, as
the module promises: every part re-encodes to exactly the bytes received, and the signing
input is the first two parts as received.
"""

from __future__ import annotations

from _harness import fuzz, instrumented

with instrumented(__name__):
    from kzgate.errors import Malformed
    from kzgate.protocol import jws

# The API takes bodies up to api.max_body_bytes (16 MiB). This parser is a split, a regex and
# base64, linear in the input; libFuzzer's mutations on 16 MiB inputs would run a few hundred
# times a minute, so the fuzzer works up to 1 MiB and tests/fuzz/test_replay.py feeds it
# 16 MiB bodies explicitly.
MAX_LEN = 1 << 20
TIMEOUT = 10  # seconds per input


def target(data: bytes) -> None:
    try:
        parsed = jws.parse_compact(data)
    except Malformed:
        return
    parts = data.strip(b" \t\r\n").split(b".")
    assert len(parts) == 3 and isinstance(parsed.header, dict)
    assert parsed.signing_input == parts[0] + b"." + parts[1]
    for part, decoded in zip(parts, (None, parsed.payload, parsed.signature), strict=True):
        if decoded is not None:
            assert jws.b64url_encode(decoded).encode() == part, "a non-canonical encoding passed"


if __name__ == "__main__":
    fuzz(target)
