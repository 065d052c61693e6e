"""The configuration file: YAML read into frozen dataclasses.

The format is a contract (DESIGN.md, "Configuration (YAML)"): outside tools write
it, so every documented key keeps its meaning and unknown keys are errors. One
run reports every mistake at once, each naming the file and the dotted key path,
so that an operator can fix the whole file in one pass.

Key files are only named here, never read: ``check-config`` must work on a host
where the keys are not yet installed. ``missing_files`` says which are absent.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml

T = TypeVar("T")

BlockMode = Literal["nxdomain", "sinkhole", "refused"]
NftAction = Literal["drop", "reject"]
NftMode = Literal["full", "set-only"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]

BLOCK_MODES: tuple[BlockMode, ...] = ("nxdomain", "sinkhole", "refused")
NFT_ACTIONS: tuple[NftAction, ...] = ("drop", "reject")
NFT_HOOKS: tuple[str, ...] = ("forward", "output")
NFT_MODES: tuple[NftMode, ...] = ("full", "set-only")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
RpzActionSetting = Literal["from_block_mode", "nxdomain", "nodata", "sinkhole"]
RPZ_ACTIONS: tuple[RpzActionSetting, ...] = ("from_block_mode", "nxdomain", "nodata", "sinkhole")
# HMAC algorithms of RFC 8945 section 6 that dnspython implements; MD5 and SHA-1 left out
TSIG_ALGORITHMS: tuple[str, ...] = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224")

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NFT_TABLE = re.compile(r"[A-Za-z0-9_]{1,64}")
_NETNS = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


class ConfigError(Exception):
    """The configuration is wrong; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class HostPort:
    """A socket address; ``host`` is an IP address or a host name, without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, allow_port_zero: bool = False) -> HostPort:
        """Parse ``host:port`` or ``[ipv6]:port``; raise ValueError saying what is wrong."""
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"expected '[IPv6 address]:port' (got {text!r})")
            _check_ipv6(host)
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"expected 'host:port' (got {text!r})")
            if ":" in host:
                raise ValueError(
                    f"put an IPv6 address in brackets, e.g. '[::1]:8443' (got {text!r})"
                )
            _check_host(host)
        return cls(host, _parse_port(port_text, allow_port_zero))


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv6 address") from None


def _check_host(host: str) -> None:
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit():  # all-numeric last label: only an IPv4 address can look like this
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif not (len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)):
        raise ValueError(f"{host!r} is not an IP address or host name")


def _parse_port(text: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if not _PORT.fullmatch(text) or not low <= int(text) <= 65535:
        raise ValueError(f"port must be a number {low}-65535 (got {text!r})")
    return int(text)


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    id: str
    receipt_key: Path


@dataclass(frozen=True, slots=True)
class IssuerKeyConfig:
    kid: str
    public_key: Path
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    id: str
    name: str
    keys: tuple[IssuerKeyConfig, ...]


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    per_second: float = 50.0
    burst: int = 100


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: HostPort
    tls_cert: Path
    tls_key: Path
    client_ca: Path | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    drain_seconds: float = 10.0
    # Limits one client cannot exhaust for the others (README, "Listener limits").
    max_connections: int = 256
    max_per_client: int = 32
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 8190
    max_headers: int = 32


@dataclass(frozen=True, slots=True)
class DnsTcpConfig:
    """DNS over TCP, per DNS process (each worker has its own connections)."""

    max_connections: int = 1000
    max_per_client: int = 16  # an IPv4 address or an IPv6 /64
    idle_timeout: float = 10.0
    max_pipeline: int = 32  # queries in flight on one connection


@dataclass(frozen=True, slots=True)
class DnsConfig:
    listen: tuple[HostPort, ...]
    upstreams: tuple[HostPort, ...]
    block_mode: BlockMode
    sinkhole_ipv4: ipaddress.IPv4Address
    sinkhole_ipv6: ipaddress.IPv6Address
    block_ttl: int
    workers: int
    enabled: bool
    tcp: DnsTcpConfig = field(default_factory=DnsTcpConfig)
    max_pending_upstream: int = 4096  # per DNS process
    max_pending_upstream_per_client: int = 256
    # A worker that crashes crash_limit times within crash_window seconds is
    # forked again on the pure-Python engine (kzgate/dns/crashes.py).
    crash_limit: int = 5
    crash_window: float = 60.0


@dataclass(frozen=True, slots=True)
class NftConfig:
    enabled: bool
    table: str
    hooks: tuple[str, ...]
    action: NftAction
    # full: kzgate owns the chains and rules; set-only: the operator's own
    # chains in our table look the sets up, and kzgate keeps only the sets.
    mode: NftMode = "full"
    netns: str | None = None  # a name under /var/run/netns: sockets and nft run there


@dataclass(frozen=True, slots=True)
class RegisterConfig:
    path: Path


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: HostPort
    enabled: bool
    max_connections: int = 32
    max_per_client: int = 8
    header_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel
    format: LogFormat


@dataclass(frozen=True, slots=True)
class TsigConfig:
    name: str  # absolute key name, lower case, with the trailing dot
    algorithm: str
    secret_file: Path  # base64 text; read when the RPZ enforcer starts


@dataclass(frozen=True, slots=True)
class RpzConfig:
    """The RPZ primary: a zone served to the operator's resolvers by AXFR/IXFR."""

    enabled: bool = False
    origin: str = "rpz.kzgate."  # absolute, lower case, with the trailing dot
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 5300),)
    notify: tuple[HostPort, ...] = (HostPort("127.0.0.1", 5301),)
    allow_transfer: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    tsig: TsigConfig | None = None
    ip_triggers: bool = False
    ixfr_history: int = 100
    action: RpzActionSetting = "from_block_mode"
    max_connections: int = 64
    max_per_client: int = 8
    idle_timeout: float = 30.0  # only an answer served (not a refusal) restarts it
    max_transfers: int = 10  # AXFR/IXFR streamed at once; more wait for a slot


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    operator: OperatorConfig
    issuers: tuple[IssuerConfig, ...]
    api: ApiConfig
    dns: DnsConfig
    nftables: NftConfig
    register: RegisterConfig
    metrics: MetricsConfig
    log: LogConfig
    rpz: RpzConfig = field(default_factory=RpzConfig)


# --- reading: errors are collected, never raised one by one ------------------


class _Bad(Exception):
    """A value is wrong; the message says how. The table adds file and key."""


class _Errors:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        where = f"{self.source}: {key}" if key else str(self.source)
        self.items.append(f"{where}: {message}")


_ABSENT: Any = object()


class _Table:
    """One YAML mapping being read.

    Every key asked for becomes known; ``close`` reports the keys nobody asked
    for. A wrong value is recorded and replaced by the default (or a
    placeholder), so that reading goes on and finds the other mistakes too.
    """

    def __init__(self, errors: _Errors, path: str, data: object) -> None:
        self._errors = errors
        self.path = path
        self._data: dict[str, object] = {}
        self._known: list[str] = []
        if data is not None and not isinstance(data, dict):
            errors.add(path, f"must be a mapping (got {_describe(data)})")
        elif data:
            for key, value in data.items():
                if isinstance(key, str):
                    self._data[key] = value
                else:
                    errors.add(path, f"key {_describe(key)} must be a string")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _raw(self, name: str) -> object:
        self._known.append(name)
        return self._data.get(name, _ABSENT)

    def _convert(self, key: str, value: object, conv: Callable[[object], T], fallback: T) -> T:
        try:
            return conv(value)
        except _Bad as exc:
            self._errors.add(key, str(exc))
            return fallback

    def get(self, name: str, conv: Callable[[object], T], default: T) -> T:
        value = self._raw(name)
        if value is _ABSENT:
            return default
        return self._convert(self.key(name), value, conv, default)

    def optional(self, name: str, conv: Callable[[object], T]) -> T | None:
        """A key whose absence, or an explicit null, means "not set"."""
        value = self._raw(name)
        if value is _ABSENT or value is None:
            return None
        return self._convert(self.key(name), value, conv, None)

    def require(self, name: str, conv: Callable[[object], T], placeholder: T) -> T:
        value = self._raw(name)
        if value is _ABSENT or value is None:
            self._errors.add(self.key(name), "required")
            return placeholder
        return self._convert(self.key(name), value, conv, placeholder)

    def get_list(
        self, name: str, item: Callable[[object], T], default: tuple[T, ...]
    ) -> tuple[T, ...]:
        """A list whose items are checked one by one, each error naming its index."""
        value = self._raw(name)
        if value is _ABSENT:
            return default
        if isinstance(value, str):  # one address written without brackets is a one-item list
            value = [value]
        if not isinstance(value, list):
            self._errors.add(self.key(name), f"must be a list (got {_describe(value)})")
            return default
        items = [
            self._convert(f"{self.key(name)}[{i}]", v, item, _ABSENT) for i, v in enumerate(value)
        ]
        return tuple(v for v in items if v is not _ABSENT)

    def child(self, name: str) -> _Table:
        value = self._raw(name)
        return _Table(self._errors, self.key(name), None if value is _ABSENT else value)

    def optional_child(self, name: str) -> _Table | None:
        """A mapping whose absence, or an explicit null, means "not set"."""
        value = self._raw(name)
        return (
            None
            if value is _ABSENT or value is None
            else _Table(self._errors, self.key(name), value)
        )

    def children(self, name: str) -> list[_Table]:
        """A required, non-empty list of mappings."""
        value = self._raw(name)
        if value is _ABSENT or value is None:
            self._errors.add(self.key(name), "required (a list with at least one item)")
            return []
        if not isinstance(value, list) or not value:
            self._errors.add(self.key(name), f"must be a non-empty list (got {_describe(value)})")
            return []
        return [_Table(self._errors, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def error(self, name: str, message: str) -> None:
        self._errors.add(self.key(name), message)

    def close(self) -> None:
        for key in self._data:
            if key not in self._known:
                near = difflib.get_close_matches(key, self._known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self._errors.add(self.key(key), f"unknown key {key!r}{hint}")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, dt.datetime | dt.date):
        return f"{type(value).__name__} {value.isoformat()}"
    return type(value).__name__


# --- value converters: each takes the YAML value and returns it or raises _Bad


def _string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"must be a non-empty string (got {_describe(value)})")
    return value


def _ident(value: object) -> str:
    text = value if isinstance(value, str) else None
    if text is None or not _ID.fullmatch(text):
        raise _Bad(f"must be 1-128 characters of A-Z a-z 0-9 . _ : - (got {_describe(value)})")
    return text


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false (got {_describe(value)})")
    return value


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def conv(value: object) -> int:
        # bool is an int in Python, but "burst: true" is a mistake, not 1
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < low
            or (high is not None and value > high)
        ):
            span = f"{low}-{high}" if high is not None else f">= {low}"
            raise _Bad(f"must be an integer {span} (got {_describe(value)})")
        return value

    return conv


def _number(low: float, *, inclusive: bool) -> Callable[[object], float]:
    def conv(value: object) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        number = float(cast(float, value)) if ok else 0.0
        if not ok or number < low or (number == low and not inclusive) or number != number:
            span = f">= {low:g}" if inclusive else f"> {low:g}"
            raise _Bad(f"must be a number {span} (got {_describe(value)})")
        return number

    return conv


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def conv(value: object) -> str:
        if value not in options:
            raise _Bad(f"must be one of {', '.join(options)} (got {_describe(value)})")
        return value

    return conv


def _hostport(*, listen: bool) -> Callable[[object], HostPort]:
    def conv(value: object) -> HostPort:
        if not isinstance(value, str):
            # an unquoted [::1]:53 reads as a YAML list, hence the hint
            raise _Bad(
                f"must be a 'host:port' string (got {_describe(value)}); "
                'quote IPv6 addresses, e.g. "[::1]:53"'
            )
        try:
            return HostPort.parse(value, allow_port_zero=listen)
        except ValueError as exc:
            raise _Bad(str(exc)) from None

    return conv


def _path(base: Path) -> Callable[[object], Path]:
    def conv(value: object) -> Path:
        return Path(os.path.normpath(base / _string(value)))

    return conv


def _timestamp(value: object) -> dt.datetime:
    # YAML turns an unquoted timestamp into a datetime; a quoted one stays text.
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _Bad(f"must be an RFC 3339 timestamp (got {_describe(value)})") from None
    if not isinstance(value, dt.datetime):
        raise _Bad(f"must be a timestamp such as 2026-01-01T00:00:00Z (got {_describe(value)})")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _ipv4(value: object) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(_string(value))
    except ValueError:
        raise _Bad(f"must be an IPv4 address (got {_describe(value)})") from None


def _ipv6(value: object) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(_string(value))
    except ValueError:
        raise _Bad(f"must be an IPv6 address (got {_describe(value)})") from None


def _netns_name(value: object) -> str:
    # `ip netns` names are file names under /var/run/netns
    if not isinstance(value, str) or not _NETNS.fullmatch(value) or value in (".", ".."):
        raise _Bad(
            "must be a network namespace name: 1-64 characters of A-Z a-z 0-9 . _ - "
            f"(got {_describe(value)})"
        )
    return value


def _table_name(value: object) -> str:
    if not isinstance(value, str) or not _NFT_TABLE.fullmatch(value):
        raise _Bad(f"must be 1-64 characters of A-Z a-z 0-9 _ (got {_describe(value)})")
    return value


def _dns_name(value: object) -> str:
    """An absolute DNS name (LDH labels, as zone and key names are), lower case, dot-ended."""
    text = _string(value).lower()
    labels = text.removesuffix(".").split(".")
    if not (len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)):
        raise _Bad(f"must be a domain name such as rpz.example. (got {_describe(value)})")
    return text.removesuffix(".") + "."


# The longest rpz-ip owner, 128.ffff.(x8).rpz-ip, is 50 characters (rpz/zone.py): with the
# origin it must fit a 255-octet name, and so must the SOA's hostmaster.<origin>.
RPZ_ORIGIN_MAX_CHARS = 203


def _rpz_origin(value: object) -> str:
    origin = _dns_name(value)
    if len(origin) > RPZ_ORIGIN_MAX_CHARS:
        raise _Bad(
            f"must be at most {RPZ_ORIGIN_MAX_CHARS} characters, to leave room for every "
            f"rpz-ip trigger in a 255-octet owner name (got {len(origin)})"
        )
    return origin


def _prefix(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(_string(value), strict=True)
    except ValueError as exc:
        raise _Bad(f"must be an IP prefix such as 192.0.2.0/24 ({exc})") from None


# --- sections ----------------------------------------------------------------


def _operator(t: _Table, base: Path) -> OperatorConfig:
    cfg = OperatorConfig(
        id=t.require("id", _ident, ""),
        receipt_key=t.require("receipt_key", _path(base), Path()),
    )
    t.close()
    return cfg


def _issuer_key(t: _Table, base: Path) -> IssuerKeyConfig:
    key = IssuerKeyConfig(
        kid=t.require("kid", _ident, ""),
        public_key=t.require("public_key", _path(base), Path()),
        not_before=t.optional("not_before", _timestamp),
        not_after=t.optional("not_after", _timestamp),
        revoked=t.get("revoked", _boolean, False),
    )
    if key.not_before and key.not_after and key.not_before >= key.not_after:
        t.error("not_after", "must be later than not_before")
    t.close()
    return key


def _issuer(t: _Table, base: Path) -> IssuerConfig:
    issuer_id = t.require("id", _ident, "")
    issuer = IssuerConfig(
        id=issuer_id,
        name=t.get("name", _string, issuer_id),
        keys=tuple(_issuer_key(k, base) for k in t.children("keys")),
    )
    t.close()
    return issuer


def _issuers(root: _Table, base: Path) -> tuple[IssuerConfig, ...]:
    tables = root.children("issuers")
    issuers = tuple(_issuer(t, base) for t in tables)
    _no_duplicates(root, [(f"issuers[{i}].id", x.id) for i, x in enumerate(issuers)], "issuer id")
    kids = [
        (f"issuers[{i}].keys[{j}].kid", k.kid)
        for i, x in enumerate(issuers)
        for j, k in enumerate(x.keys)
    ]
    # kids are unique across issuers: a task's header names only the kid
    _no_duplicates(root, kids, "kid")
    return issuers


def _no_duplicates(root: _Table, named: list[tuple[str, str]], what: str) -> None:
    first: dict[str, str] = {}
    for key, value in named:
        if value and value in first:
            root.error(key, f"duplicate {what} {value!r} (also at {first[value]})")
        first.setdefault(value, key)


def _rate_limit(t: _Table) -> RateLimitConfig:
    cfg = RateLimitConfig(
        per_second=t.get("per_second", _number(0, inclusive=False), 50.0),
        burst=t.get("burst", _integer(1), 100),
    )
    t.close()
    return cfg


_SECONDS = _number(0, inclusive=False)


def _api(t: _Table, base: Path) -> ApiConfig:
    d = ApiConfig(HostPort("127.0.0.1", 8443), Path(), Path())
    cfg = ApiConfig(
        listen=t.get("listen", _hostport(listen=True), HostPort("127.0.0.1", 8443)),
        tls_cert=t.require("tls_cert", _path(base), Path()),
        tls_key=t.require("tls_key", _path(base), Path()),
        client_ca=t.optional("client_ca", _path(base)),
        max_body_bytes=t.get("max_body_bytes", _integer(1), 16 * 1024 * 1024),
        rate_limit=_rate_limit(t.child("rate_limit")),
        drain_seconds=t.get("drain_seconds", _number(0, inclusive=True), 10.0),
        max_connections=t.get("max_connections", _integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", _integer(1), d.max_per_client),
        handshake_timeout=t.get("handshake_timeout", _SECONDS, d.handshake_timeout),
        header_timeout=t.get("header_timeout", _SECONDS, d.header_timeout),
        body_timeout=t.get("body_timeout", _SECONDS, d.body_timeout),
        max_header_bytes=t.get("max_header_bytes", _integer(256, 65536), d.max_header_bytes),
        max_headers=t.get("max_headers", _integer(8, 1024), d.max_headers),
    )
    t.close()
    return cfg


def _dns(t: _Table) -> DnsConfig:
    default_listen = (HostPort("127.0.0.1", 5353),)
    cfg = DnsConfig(
        listen=t.get_list("listen", _hostport(listen=True), default_listen),
        upstreams=t.get_list("upstreams", _hostport(listen=False), ()),
        block_mode=cast(BlockMode, t.get("block_mode", _choice(BLOCK_MODES), "nxdomain")),
        sinkhole_ipv4=t.get("sinkhole_ipv4", _ipv4, ipaddress.IPv4Address("192.0.2.1")),
        sinkhole_ipv6=t.get("sinkhole_ipv6", _ipv6, ipaddress.IPv6Address("2001:db8::1")),
        block_ttl=t.get("block_ttl", _integer(0, 86400), 60),
        workers=t.get("workers", _integer(1), 1),
        enabled=t.get("enabled", _boolean, True),
        tcp=_dns_tcp(t.child("tcp")),
        max_pending_upstream=t.get("max_pending_upstream", _integer(1), 4096),
        max_pending_upstream_per_client=t.get("max_pending_upstream_per_client", _integer(1), 256),
        crash_limit=t.get("crash_limit", _integer(1), 5),
        crash_window=t.get("crash_window", _number(0, inclusive=False), 60.0),
    )
    if cfg.enabled and not cfg.listen:
        t.error("listen", "must name at least one address when dns is enabled")
    t.close()
    return cfg


def _dns_tcp(t: _Table) -> DnsTcpConfig:
    d = DnsTcpConfig()
    cfg = DnsTcpConfig(
        max_connections=t.get("max_connections", _integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", _integer(1), d.max_per_client),
        idle_timeout=t.get("idle_timeout", _SECONDS, d.idle_timeout),
        max_pipeline=t.get("max_pipeline", _integer(1, 65535), d.max_pipeline),
    )
    t.close()
    return cfg


def _nftables(t: _Table) -> NftConfig:
    hooks = t.get_list("hooks", _choice(NFT_HOOKS), ("forward",))
    if not hooks:
        t.error("hooks", f"must name at least one of {', '.join(NFT_HOOKS)}")
    elif len(set(hooks)) != len(hooks):
        t.error("hooks", "lists a hook twice")
    cfg = NftConfig(
        enabled=t.get("enabled", _boolean, False),
        table=t.get("table", _table_name, "kzgate"),
        hooks=hooks,
        action=cast(NftAction, t.get("action", _choice(NFT_ACTIONS), "drop")),
        mode=cast(NftMode, t.get("mode", _choice(NFT_MODES), "full")),
        netns=t.optional("netns", _netns_name),
    )
    t.close()
    return cfg


def _register(t: _Table, base: Path) -> RegisterConfig:
    cfg = RegisterConfig(path=t.get("path", _path(base), Path("/var/lib/kzgate/kzgate.db")))
    t.close()
    return cfg


def _metrics(t: _Table) -> MetricsConfig:
    d = MetricsConfig(HostPort("127.0.0.1", 9108), True)
    cfg = MetricsConfig(
        listen=t.get("listen", _hostport(listen=True), HostPort("127.0.0.1", 9108)),
        enabled=t.get("enabled", _boolean, True),
        max_connections=t.get("max_connections", _integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", _integer(1), d.max_per_client),
        header_timeout=t.get("header_timeout", _SECONDS, d.header_timeout),
    )
    t.close()
    return cfg


def _log(t: _Table) -> LogConfig:
    cfg = LogConfig(
        level=cast(LogLevel, t.get("level", _choice(LOG_LEVELS), "info")),
        format=cast(LogFormat, t.get("format", _choice(LOG_FORMATS), "json")),
    )
    t.close()
    return cfg


def _tsig(t: _Table, base: Path) -> TsigConfig:
    cfg = TsigConfig(
        name=t.require("name", _dns_name, ""),
        algorithm=t.get("algorithm", _choice(TSIG_ALGORITHMS), "hmac-sha256"),
        secret_file=t.require("secret_file", _path(base), Path()),
    )
    t.close()
    return cfg


def _rpz(t: _Table, base: Path) -> RpzConfig:
    d = RpzConfig()
    tsig = t.optional_child("tsig")
    cfg = RpzConfig(
        enabled=t.get("enabled", _boolean, d.enabled),
        origin=t.get("origin", _rpz_origin, d.origin),
        listen=t.get_list("listen", _hostport(listen=True), d.listen),
        notify=t.get_list("notify", _hostport(listen=False), d.notify),
        allow_transfer=t.get_list("allow_transfer", _prefix, d.allow_transfer),
        tsig=_tsig(tsig, base) if tsig is not None else None,
        ip_triggers=t.get("ip_triggers", _boolean, d.ip_triggers),
        ixfr_history=t.get("ixfr_history", _integer(0, 100_000), d.ixfr_history),
        action=cast(RpzActionSetting, t.get("action", _choice(RPZ_ACTIONS), "from_block_mode")),
        max_connections=t.get("max_connections", _integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", _integer(1), d.max_per_client),
        idle_timeout=t.get("idle_timeout", _SECONDS, d.idle_timeout),
        max_transfers=t.get("max_transfers", _integer(1), d.max_transfers),
    )
    if cfg.enabled and not cfg.listen:
        t.error("listen", "must name at least one address when rpz is enabled")
    t.close()
    return cfg


def parse_config(data: object, source: Path) -> Config:
    """Build a Config from an already-parsed YAML document, or raise ConfigError.

    ``source`` names the file in messages; relative paths resolve against its directory.
    """
    errors = _Errors(source)
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (got {_describe(data)})"])
    absolute = Path(os.path.abspath(source))
    base = absolute.parent
    root = _Table(errors, "", data)
    cfg = Config(
        source=absolute,
        operator=_operator(root.child("operator"), base),
        issuers=_issuers(root, base),
        api=_api(root.child("api"), base),
        dns=_dns(root.child("dns")),
        nftables=_nftables(root.child("nftables")),
        register=_register(root.child("register"), base),
        metrics=_metrics(root.child("metrics")),
        log=_log(root.child("log")),
        rpz=_rpz(root.child("rpz"), base),
    )
    root.close()
    if errors.items:
        raise ConfigError(errors.items)
    return cfg


# --- the file ----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes duplicate mapping keys, which plain YAML silently drops."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
                seen.add(ident)
        return super().construct_mapping(node, deep)


def _read_yaml(source: Path) -> tuple[object, list[str]]:
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    dups = [f"{source}: line {line}: duplicate key {key!r}" for line, key in loader.duplicates]
    return data, dups


def load_config(path: Path | str) -> Config:
    """Read and check a configuration file; raise ConfigError listing every error found."""
    source = Path(path)
    data, problems = _read_yaml(source)
    try:
        cfg = parse_config(data, source)
    except ConfigError as exc:
        raise ConfigError(problems + exc.errors) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def missing_files(cfg: Config) -> list[str]:
    """Every file the configuration names that is not there, naming key and file."""
    named: list[tuple[str, Path | None]] = [
        ("operator.receipt_key", cfg.operator.receipt_key),
        ("api.tls_cert", cfg.api.tls_cert),
        ("api.tls_key", cfg.api.tls_key),
        ("api.client_ca", cfg.api.client_ca),
    ]
    if cfg.rpz.enabled and cfg.rpz.tsig is not None:
        named.append(("rpz.tsig.secret_file", cfg.rpz.tsig.secret_file))
    for i, issuer in enumerate(cfg.issuers):
        for j, issuer_key in enumerate(issuer.keys):
            named.append((f"issuers[{i}].keys[{j}].public_key", issuer_key.public_key))
    out: list[str] = []
    for name, path in named:
        if path is not None and not path.is_file():
            problem = "not a regular file" if path.exists() else "no such file"
            out.append(f"{cfg.source}: {name}: {problem}: {path}")
    return out
