"""The task schema of task-protocol.md §3: a decoded JSON object in, a Task out.

Every refusal is an InvalidTask whose detail starts with the path of the field
at fault (``targets[3].value: ...``), so the issuer can fix its own data.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

from kzgate.errors import InvalidTask
from kzgate.model import REASONS, InstructionRef, Target, TargetKind, Task, TaskType
from kzgate.names import NameError_, normalize_cidr, normalize_domain, normalize_ip
from kzgate.protocol.jsonstrict import json_type

MAX_TARGETS = 100_000
MAX_URL_CHARS = 8192
MAX_SEQ = 2**63 - 1  # what a SQLite INTEGER holds
# Free text is stored, logged and echoed (EDE text, nft comments), so each field has a
# limit, in characters: generous for what the paper form holds (README, "Where the
# protocol is silent"). iss and aud items are ids, as long as kzgate/config lets ids be.
MAX_CHARS = {
    "iss": 128,
    "aud": 128,
    "authority": 512,
    "instruction.number": 64,
    "ground": 1024,
    "applicant": 512,
}
MAX_AUD = 1000
MAX_REMOVED_LINKS = MAX_TARGETS

_COMMON = frozenset(
    {"v", "id", "iss", "aud", "seq", "issued_at", "type", "authority", "instruction"}
)
_RESTRICT_ONLY = ("targets", "ground", "reason")
_RESUME_ONLY = ("applicant", "removed_links", "removed_as_of")
_KNOWN = _COMMON | frozenset(_RESTRICT_ONLY) | frozenset(_RESUME_ONLY)

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_APP_CHARS = 255
_APP = re.compile(r"[A-Za-z0-9._-]{1,255}")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
# Free text ends up in logs, DNS EDE text and nft comments: one line, no controls
# (C0, DEL, C1 such as NEL and CSI, and Unicode's line and paragraph separators).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# URLs must arrive percent-encoded; urlsplit would silently drop tabs and newlines.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


def _fail(path: str, message: str) -> NoReturn:
    raise InvalidTask(f"{path}: {message}")


def _text(obj: dict[str, Any], key: str, path: str | None = None) -> str:
    """A required one-line, non-blank string of at most MAX_CHARS[path] characters."""
    path = path or key
    if key not in obj:
        _fail(path, "required")
    value = obj[key]
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {json_type(value)}")
    if len(value) > MAX_CHARS[path]:
        _fail(path, f"at most {MAX_CHARS[path]} characters, got {len(value)}")
    if not value.strip():
        _fail(path, "must not be empty")
    if _CONTROL.search(value):
        _fail(path, "must not contain control characters")
    return value


def _date(value: Any, path: str) -> date:
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _fail(path, "expected YYYY-MM-DD")
    try:
        return date(*map(int, match.groups()))
    except ValueError as exc:
        _fail(path, f"not a calendar date ({exc})")


def parse_timestamp(value: Any, path: str) -> datetime:
    """RFC 3339 date-time; the offset is required (a naive time is ambiguous)."""
    match = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _fail(path, "expected an RFC 3339 timestamp with offset, e.g. 2026-11-22T10:15:00+05:00")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    # datetime cannot hold a leap second; 23:59:60 becomes the last microsecond before it.
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if second == "60":
        second, micro = "59", 999_999
    try:
        if zulu:
            tz = UTC
        else:
            if int(off_h) > 23 or int(off_m) > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
    except ValueError as exc:
        _fail(path, f"not a valid timestamp ({exc})")


def _seq(value: Any) -> int:
    # bool is an int in Python, but true is not a sequence number.
    if type(value) is not int or not 1 <= value <= MAX_SEQ:
        _fail("seq", f"must be an integer >= 1 (and < 2**63), got {value!r:.40}")
    return value


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    if key not in obj:
        _fail(key, "required")
    value = obj[key]
    if not isinstance(value, list):
        _fail(key, f"expected a list, got {json_type(value)}")
    return value


# -- target values: each returns the normalized value or raises ValueError ----------


def _domain(value: str) -> str:
    name = normalize_domain(value)
    # An all-digit top-level label is never a domain (RFC 3696 §2): it is an address.
    if name.rpartition(".")[2].isdigit():
        raise NameError_(f"{value!r} is not a domain name (use type 'ip' for addresses)")
    return name


def _no_zone(normalize: Callable[[str], str]) -> Callable[[str], str]:
    def checked(value: str) -> str:
        # ipaddress accepts "fe80::1%eth0"; a zone means nothing to a remote operator.
        if "%" in value:
            raise NameError_(f"{value!r}: an IPv6 zone index is not allowed")
        return normalize(value)

    return checked


def url(value: str) -> str:
    """Check an absolute http(s) URL; lower-case its scheme and normalize its host.

    The rest is kept exactly as given: the URL is recorded and exported, not matched.
    """
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"URL of {len(value)} characters ({MAX_URL_CHARS} allowed)")
    if _URL_FORBIDDEN.search(value):
        raise ValueError("URL contains whitespace or control characters (percent-encode them)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or value[len(scheme) : len(scheme) + 3] != "://":
        raise ValueError(f"not an absolute http(s) URL: {value[:80]!r}")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        ipaddress.IPv6Address(host)  # a literal stays as given; it must be valid
        if port[:1] not in ("", ":"):  # urlsplit skips text between "]" and the port
            raise ValueError(f"URL has text after its IPv6 address: {value[:80]!r}")
        host = f"[{host}{bracket}"
    else:
        host, colon, port = hostport.partition(":")
        port = colon + port
        if not host:
            raise ValueError(f"URL has no host: {value[:80]!r}")
        # Only an all-digit last label can be an IPv4 literal; testing that first
        # spares a raised exception per URL (a 100k-URL task pays for each one).
        if host.rpartition(".")[2].isdigit():
            ipaddress.IPv4Address(host)  # an IPv4 literal stays as given; it must be valid
        else:
            host = normalize_domain(host)
    # urlsplit reads a port only after the last ":" it trusts (and a host from a
    # "[...]" anywhere in the authority): anything but digits here would make the
    # recorded host differ from the one every URL parser reads.
    if port not in ("", ":") and not (port[1:].isascii() and port[1:].isdigit()):
        raise ValueError(f"URL has a port that is not a number: {value[:80]!r}")
    rest = value[len(scheme) + 3 + len(parts.netloc) :]
    return f"{scheme}://{userinfo}{at}{host}{port}{rest}"


def _app(value: str) -> str:
    if len(value) > MAX_APP_CHARS:
        raise ValueError(f"application id of {len(value)} characters ({MAX_APP_CHARS} allowed)")
    if _APP.fullmatch(value) is None or "." not in value:
        raise ValueError(f"not an application id like 'kz.example.app': {value[:80]!r}")
    return value


_TARGET_VALUE: dict[str, Callable[[str], str]] = {
    "domain": _domain,
    "ip": _no_zone(normalize_ip),
    "cidr": _no_zone(normalize_cidr),
    "url": url,
    "app": _app,
}


def _targets(items: list[Any]) -> tuple[Target, ...]:
    if not 1 <= len(items) <= MAX_TARGETS:
        _fail("targets", f"must hold 1 to {MAX_TARGETS} items, got {len(items)}")
    seen: dict[tuple[str, str], None] = {}  # insertion-ordered: the first occurrence wins
    normalizers = _TARGET_VALUE
    for i, item in enumerate(items):
        if type(item) is not dict or len(item) != 2 or "type" not in item or "value" not in item:
            _fail(f"targets[{i}]", 'expected exactly {"type": ..., "value": ...}')
        kind, value = item["type"], item["value"]
        normalize = normalizers.get(kind) if isinstance(kind, str) else None
        if normalize is None:
            _fail(f"targets[{i}].type", f"unknown target type {kind!r:.40}")
        if not isinstance(value, str):
            _fail(f"targets[{i}].value", f"expected a string, got {json_type(value)}")
        try:
            seen[kind, normalize(value)] = None
        except ValueError as exc:  # NameError_ is a ValueError
            _fail(f"targets[{i}].value", str(exc))
    return tuple(Target(cast(TargetKind, kind), value) for kind, value in seen)


def _removed_links(items: list[Any]) -> tuple[str, ...]:
    if len(items) > MAX_REMOVED_LINKS:
        _fail("removed_links", f"at most {MAX_REMOVED_LINKS} items, got {len(items)}")
    links: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            _fail(f"removed_links[{i}]", f"expected a string, got {json_type(item)}")
        try:
            links.append(url(item))
        except ValueError as exc:
            _fail(f"removed_links[{i}]", str(exc))
    return tuple(links)


def _aud(obj: dict[str, Any]) -> tuple[str, ...]:
    items = _list(obj, "aud")
    if not items:
        _fail("aud", "must name at least one operator (or '*')")
    if len(items) > MAX_AUD:
        _fail("aud", f"at most {MAX_AUD} items, got {len(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            _fail(f"aud[{i}]", "expected a non-empty string")
        if len(item) > MAX_CHARS["aud"]:
            _fail(f"aud[{i}]", f"at most {MAX_CHARS['aud']} characters, got {len(item)}")
    return tuple(dict.fromkeys(items))


def _instruction(obj: dict[str, Any], iss: str) -> InstructionRef:
    if "instruction" not in obj:
        _fail("instruction", "required")
    value = obj["instruction"]
    if not isinstance(value, dict):
        _fail("instruction", f"expected an object, got {json_type(value)}")
    for key in value:
        if key not in ("number", "date"):
            _fail(f"instruction.{key}", "unknown field")
    number = _text(value, "number", "instruction.number")
    if "date" not in value:
        _fail("instruction.date", "required")
    day = _date(value["date"], "instruction.date")
    return InstructionRef(iss=iss, number=number, date=day.isoformat())


def _forbid(obj: dict[str, Any], keys: tuple[str, ...], kind: str) -> None:
    for key in keys:
        if key in obj:
            _fail(key, f"not allowed in a {kind} task")


def parse_task(obj: dict[str, Any], payload: bytes, kid: str) -> Task:
    """Check ``obj`` (the decoded ``payload``) against the schema; return a normalized Task."""
    # The version first: a v2 task's other fields may legitimately differ.
    if "v" not in obj:
        _fail("v", "required")
    if type(obj["v"]) is not int or obj["v"] != 1:
        _fail("v", f"unsupported protocol version {obj['v']!r:.40}")
    for key in obj:
        if key not in _KNOWN:
            _fail(key[:80], "unknown field")

    task_id = obj.get("id")
    if not isinstance(task_id, str) or _ID.fullmatch(task_id) is None:
        _fail("id", "required: 1-128 characters from [A-Za-z0-9._:-]")
    iss = _text(obj, "iss")
    aud = _aud(obj)
    if "seq" not in obj:
        _fail("seq", "required")
    seq = _seq(obj["seq"])
    if "issued_at" not in obj:
        _fail("issued_at", "required")
    issued_at = parse_timestamp(obj["issued_at"], "issued_at")
    task_type = obj.get("type")
    if task_type not in ("restrict", "resume"):
        _fail("type", f"must be 'restrict' or 'resume', got {task_type!r:.40}")
    authority = _text(obj, "authority")
    instruction = _instruction(obj, iss)
    sha256 = hashlib.sha256(payload).hexdigest()
    ground: str | None = None
    reason: str | None = None
    targets: tuple[Target, ...] = ()
    applicant: str | None = None
    links: tuple[str, ...] = ()
    removed_as_of: date | None = None
    if task_type == "restrict":
        _forbid(obj, _RESUME_ONLY, "restrict")
        ground = _text(obj, "ground")
        reason = obj.get("reason")
        if "reason" in obj and reason not in REASONS:
            _fail("reason", f"must be one of {', '.join(REASONS)}; got {reason!r:.40}")
        targets = _targets(_list(obj, "targets"))
    else:
        _forbid(obj, _RESTRICT_ONLY, "resume")
        applicant = _text(obj, "applicant")
        links = _removed_links(_list(obj, "removed_links"))
        if "removed_as_of" not in obj:
            _fail("removed_as_of", "required")
        removed_as_of = _date(obj["removed_as_of"], "removed_as_of")

    return Task(
        v=1,
        id=task_id,
        iss=iss,
        aud=aud,
        seq=seq,
        issued_at=issued_at,
        type=cast(TaskType, task_type),
        authority=authority,
        instruction=instruction,
        payload=payload,
        sha256=sha256,
        kid=kid,
        ground=ground,
        reason=reason,
        targets=targets,
        applicant=applicant,
        removed_links=links,
        removed_as_of=removed_as_of,
    )
