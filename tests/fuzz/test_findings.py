"""What the fuzz harnesses found, one test each, next to the fix in the parser.

Each input is also in the corpus of the harness that found it (tests/fuzz/corpus/<name>/),
so test_replay.py replays it through the whole harness too.
"""

from __future__ import annotations

import pytest

from kzgate.errors import Malformed
from kzgate.protocol.jsonstrict import loads_object


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1.8e308", b"9" * 400 + b".0"])
def test_json_number_that_overflows_to_infinity_is_refused(number: bytes) -> None:
    # json_strict (seed overflow-1e999): json.loads reads 1e999 as inf, which is the Infinity
    # the reader refuses by name and which json.dumps cannot write back as JSON.
    with pytest.raises(Malformed, match="out of range"):
        loads_object(b'{"a": ' + number + b"}", "payload")


def test_json_numbers_at_the_float_limits_are_read() -> None:
    value = loads_object(b'{"max": 1.7976931348623157e308, "tiny": 5e-324, "under": 1e-999}', "p")
    assert value == {"max": 1.7976931348623157e308, "tiny": 5e-324, "under": 0.0}
