"""Fuzz the strict JSON reader of kzgate/protocol/jsonstrict.py: loads_object.

The bytes are a JWS header or a task payload after base64 (the header is read before the
signature is checked). Only ``Malformed`` (HTTP 400) may escape. What it accepts must be an
object that is JSON again: no NaN or Infinity, no string that cannot be UTF-8 (what we store
and log must be writable), and reading it back gives the same value.
"""

from __future__ import annotations

import json

from _harness import fuzz, instrumented

with instrumented(__name__):
    from kzgate.errors import Malformed
    from kzgate.protocol.jsonstrict import loads_object

# Bodies reach 16 MiB (api.max_body_bytes), a payload 12 MiB after base64. json is C code and
# linear; the fuzzer works up to 1 MiB and tests/fuzz/test_replay.py covers 12 MiB payloads.
MAX_LEN = 1 << 20
TIMEOUT = 10  # seconds per input


def target(data: bytes) -> None:
    try:
        value = loads_object(data, "payload")
    except Malformed:
        return
    assert isinstance(value, dict)
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)  # ValueError: NaN or Infinity
    again = loads_object(text.encode("utf-8"), "payload")  # UnicodeEncodeError: a lone surrogate
    assert again == value


if __name__ == "__main__":
    fuzz(target)
