"""Value converters: each takes a YAML value and returns it checked, or raises Bad.

A converter says what is wrong and what was found; the table it is used from
adds the file and the key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from kzgate.config.hostport import HostPort, is_ldh_name
from kzgate.config.reader import Bad, describe

S = TypeVar("S", bound=str)

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NFT_TABLE = re.compile(r"[A-Za-z0-9_]{1,64}")
_NETNS = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The longest rpz-ip owner, 128.ffff.(x8).rpz-ip, is 50 characters (rpz/zone.py): with the
# origin it must fit a 255-octet name, and so must the SOA's hostmaster.<origin>.
RPZ_ORIGIN_MAX_CHARS = 203


def string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Bad(f"must be a non-empty string (got {describe(value)})")
    return value


def ident(value: object) -> str:
    text = value if isinstance(value, str) else None
    if text is None or not _ID.fullmatch(text):
        raise Bad(f"must be 1-128 characters of A-Z a-z 0-9 . _ : - (got {describe(value)})")
    return text


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"must be true or false (got {describe(value)})")
    return value


def integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def conv(value: object) -> int:
        # bool is an int in Python, but "burst: true" is a mistake, not 1
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < low
            or (high is not None and value > high)
        ):
            span = f"{low}-{high}" if high is not None else f">= {low}"
            raise Bad(f"must be an integer {span} (got {describe(value)})")
        return value

    return conv


def number(low: float, *, inclusive: bool) -> Callable[[object], float]:
    def conv(value: object) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        n = float(cast(float, value)) if ok else 0.0
        if not ok or n < low or (n == low and not inclusive) or n != n:
            span = f">= {low:g}" if inclusive else f"> {low:g}"
            raise Bad(f"must be a number {span} (got {describe(value)})")
        return n

    return conv


def choice(options: tuple[S, ...]) -> Callable[[object], S]:
    def conv(value: object) -> S:
        if value not in options:
            raise Bad(f"must be one of {', '.join(options)} (got {describe(value)})")
        return value

    return conv


def hostport(*, listen: bool) -> Callable[[object], HostPort]:
    def conv(value: object) -> HostPort:
        if not isinstance(value, str):
            # an unquoted [::1]:53 reads as a YAML list, hence the hint
            raise Bad(
                f"must be a 'host:port' string (got {describe(value)}); "
                'quote IPv6 addresses, e.g. "[::1]:53"'
            )
        try:
            return HostPort.parse(value, allow_port_zero=listen)
        except ValueError as exc:
            raise Bad(str(exc)) from None

    return conv


def https_url(value: object) -> str:
    """An https base URL with a host and nothing after the path; no trailing slash."""
    text = string(value)
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise Bad(f"must be an https URL ({exc}; got {describe(value)})") from None
    if parts.scheme.lower() != "https":
        raise Bad(f"must be an https URL (got {describe(value)})")
    if not parts.hostname:
        raise Bad(f"must name a host (got {describe(value)})")
    if parts.username is not None or parts.password is not None:
        raise Bad("must not carry a user or password: use client_cert and client_key")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise Bad(f"must have no query or fragment (got {describe(value)})")
    if any(c.isspace() for c in text) or port == 0:
        raise Bad(f"must be an https URL (got {describe(value)})")
    return text.rstrip("/")


def path(base: Path) -> Callable[[object], Path]:
    """A file name; a relative one is relative to ``base``, the config file's directory."""

    def conv(value: object) -> Path:
        return Path(os.path.normpath(base / string(value)))

    return conv


def timestamp(value: object) -> dt.datetime:
    # YAML turns an unquoted timestamp into a datetime; a quoted one stays text.
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise Bad(f"must be an RFC 3339 timestamp (got {describe(value)})") from None
    if not isinstance(value, dt.datetime):
        raise Bad(f"must be a timestamp such as 2026-01-01T00:00:00Z (got {describe(value)})")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def ipv4(value: object) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(string(value))
    except ValueError:
        raise Bad(f"must be an IPv4 address (got {describe(value)})") from None


def ipv6(value: object) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(string(value))
    except ValueError:
        raise Bad(f"must be an IPv6 address (got {describe(value)})") from None


def netns_name(value: object) -> str:
    # `ip netns` names are file names under /var/run/netns
    if not isinstance(value, str) or not _NETNS.fullmatch(value) or value in (".", ".."):
        raise Bad(
            "must be a network namespace name: 1-64 characters of A-Z a-z 0-9 . _ - "
            f"(got {describe(value)})"
        )
    return value


def table_name(value: object) -> str:
    if not isinstance(value, str) or not _NFT_TABLE.fullmatch(value):
        raise Bad(f"must be 1-64 characters of A-Z a-z 0-9 _ (got {describe(value)})")
    return value


def dns_name(value: object) -> str:
    """An absolute DNS name (LDH labels, as zone and key names are), lower case, dot-ended."""
    text = string(value).lower()
    if not is_ldh_name(text):
        raise Bad(f"must be a domain name such as rpz.example. (got {describe(value)})")
    return text.removesuffix(".") + "."


def rpz_origin(value: object) -> str:
    origin = dns_name(value)
    if len(origin) > RPZ_ORIGIN_MAX_CHARS:
        raise Bad(
            f"must be at most {RPZ_ORIGIN_MAX_CHARS} characters, to leave room for every "
            f"rpz-ip trigger in a 255-octet owner name (got {len(origin)})"
        )
    return origin


def prefix(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(string(value), strict=True)
    except ValueError as exc:
        raise Bad(f"must be an IP prefix such as 192.0.2.0/24 ({exc})") from None
