"""What a configuration is: one frozen dataclass per section of the file.

A key the file may leave out has its default here, on its field, and only here:
the section parsers read every default from these classes, never restate one
(tests/unit/config/test_defaults.py holds them to it). A field without a
default is a required key, with two exceptions whose default the parser must
compute: an issuer's ``name`` (its ``id``) and ``TsigConfig.algorithm``
(its required neighbours come after it, and callers build it positionally).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kzgate.config.hostport import HostPort

BlockMode = Literal["nxdomain", "sinkhole", "refused"]
NftAction = Literal["drop", "reject"]
NftMode = Literal["full", "set-only"]
RouteType = Literal["blackhole", "unreachable", "prohibit"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]

BLOCK_MODES: tuple[BlockMode, ...] = ("nxdomain", "sinkhole", "refused")
NFT_ACTIONS: tuple[NftAction, ...] = ("drop", "reject")
NFT_HOOKS: tuple[str, ...] = ("forward", "output")
NFT_MODES: tuple[NftMode, ...] = ("full", "set-only")
ROUTE_TYPES: tuple[RouteType, ...] = ("blackhole", "unreachable", "prohibit")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
RpzActionSetting = Literal["from_block_mode", "nxdomain", "nodata", "sinkhole"]
RPZ_ACTIONS: tuple[RpzActionSetting, ...] = ("from_block_mode", "nxdomain", "nodata", "sinkhole")
# HMAC algorithms of RFC 8945 section 6 that dnspython implements; MD5 and SHA-1 left out
TSIG_ALGORITHMS: tuple[str, ...] = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224")
TSIG_DEFAULT_ALGORITHM = "hmac-sha256"


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
class FeedConfig:
    """Pulling the issuer's signed log (task-protocol.md §6)."""

    url: str  # https base URL, without a trailing slash: {url}/head, {url}/tasks
    ca: Path  # the CA of the feed server's certificate
    client_cert: Path | None = None  # mutual TLS: both or neither
    client_key: Path | None = None
    interval: float = 30.0  # seconds between rounds
    wait: float = 0.0  # long-poll seconds; 0: plain polling


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    id: str
    name: str  # the id when the file gives none
    keys: tuple[IssuerKeyConfig, ...]
    feed: FeedConfig | None = None


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    per_second: float = 50.0
    burst: int = 100


# Keyword-only: listen has a default, the TLS files after it do not.
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    listen: HostPort = HostPort("127.0.0.1", 8443)
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
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 5353),)
    upstreams: tuple[HostPort, ...] = ()
    block_mode: BlockMode = "nxdomain"
    sinkhole_ipv4: ipaddress.IPv4Address = ipaddress.IPv4Address("192.0.2.1")
    sinkhole_ipv6: ipaddress.IPv6Address = ipaddress.IPv6Address("2001:db8::1")
    block_ttl: int = 60
    workers: int = 1
    enabled: bool = True
    tcp: DnsTcpConfig = field(default_factory=DnsTcpConfig)
    max_pending_upstream: int = 4096  # per DNS process
    max_pending_upstream_per_client: int = 256
    # A worker that crashes crash_limit times within crash_window seconds is
    # forked again on the pure-Python engine (kzgate/dns/crashes.py).
    crash_limit: int = 5
    crash_window: float = 60.0


@dataclass(frozen=True, slots=True)
class NftConfig:
    enabled: bool = False
    table: str = "kzgate"
    hooks: tuple[str, ...] = ("forward",)
    action: NftAction = "drop"
    # full: kzgate owns the chains and rules; set-only: the operator's own
    # chains in our table look the sets up, and kzgate keeps only the sets.
    mode: NftMode = "full"
    netns: str | None = None  # a name under /var/run/netns: sockets and nft run there


@dataclass(frozen=True, slots=True)
class RoutesConfig:
    """kzgate's own kernel routing table, which BIRD announces as RTBH routes (issue 13)."""

    enabled: bool = False
    table: int = 666  # 1..2^32-1, not 253 (default), 254 (main) or 255 (local)
    type: RouteType = "blackhole"
    # rtm_protocol of every route kzgate writes, and the only one it reads or
    # deletes; BIRD's filter matches it as krt_source (values BIRD or the
    # kernel treat specially are refused in config/sections.py)
    protocol: int = 252
    netns: str | None = None  # a name under /var/run/netns: the sockets are opened there


@dataclass(frozen=True, slots=True)
class RegisterConfig:
    path: Path = Path("/var/lib/kzgate/kzgate.db")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: HostPort = HostPort("127.0.0.1", 9108)
    enabled: bool = True
    max_connections: int = 32
    max_per_client: int = 8
    header_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "json"


@dataclass(frozen=True, slots=True)
class TsigConfig:
    name: str  # absolute key name, lower case, with the trailing dot
    algorithm: str  # TSIG_DEFAULT_ALGORITHM when the file gives none
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
class ProbesConfig:
    """Proof of enforcement (issue 14): rounds of probes of a sample of targets."""

    enabled: bool = False
    resolvers: tuple[HostPort, ...] = ()  # the operator's resolvers (fed by RPZ) to check
    interval: float = 60.0  # seconds between rounds
    sample: int = 20  # restricted, and recently resumed, targets per round (each)


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
    routes: RoutesConfig = field(default_factory=RoutesConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
