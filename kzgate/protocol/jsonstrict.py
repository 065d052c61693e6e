"""Strict JSON decoding for bytes that came off the wire.

``json.loads`` alone is too lenient for signed data: it takes the last of two
duplicate keys (so a signer and a reader can see different values), accepts
NaN/Infinity, and decodes lone-surrogate escapes into strings that cannot be
stored as UTF-8 later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from kzgate.errors import Malformed

_BOM = b"\xef\xbb\xbf"
# A \uD800-\uDFFF escape: only then can the decoded text hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class _Refused(ValueError):
    """Raised inside json.loads hooks; turned into Malformed by loads_object."""


def _pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # the cheap check first: this runs once per object
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # json.loads reads 1e999 as inf: the Infinity that parse_constant refuses, spelled otherwise.
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:40]} is out of range")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def loads_object(data: bytes, what: str) -> dict[str, Any]:
    """Decode ``data`` as a UTF-8 JSON object, or raise Malformed naming ``what``."""
    if data.startswith(_BOM):
        raise Malformed(f"{what}: starts with a UTF-8 byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"{what}: not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_to_dict,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _Refused as exc:
        raise Malformed(f"{what}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"{what}: not valid JSON ({exc.msg} at char {exc.pos})") from None
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer beyond sys.int_info.str_digits_check_threshold.
        raise Malformed(f"{what}: not acceptable JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise Malformed(f"{what}: top level must be a JSON object, not {json_type(value)}")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise Malformed(f"{what}: a \\u escape encodes a lone surrogate")
    return value
