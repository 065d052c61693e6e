"""The sections of the file, read into their dataclasses; ``parse_config`` reads them all.

The format is a contract (DESIGN.md, "Configuration (YAML)"): outside tools write
it, so every documented key keeps its meaning and unknown keys are errors.
A key left out takes its dataclass field's default: each parser reads the
defaults from a default instance ``d`` and never writes one itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from kzgate.config.model import (
    BLOCK_MODES,
    LOG_FORMATS,
    LOG_LEVELS,
    NFT_ACTIONS,
    NFT_HOOKS,
    NFT_MODES,
    ROUTE_TYPES,
    RPZ_ACTIONS,
    TSIG_ALGORITHMS,
    TSIG_DEFAULT_ALGORITHM,
    ApiConfig,
    Config,
    DnsConfig,
    DnsTcpConfig,
    FeedConfig,
    IssuerConfig,
    IssuerKeyConfig,
    LogConfig,
    MetricsConfig,
    NftConfig,
    OperatorConfig,
    ProbesConfig,
    RateLimitConfig,
    RegisterConfig,
    RoutesConfig,
    RpzConfig,
    TsigConfig,
)
from kzgate.config.reader import ConfigError, Errors, Table, describe
from kzgate.config.values import (
    boolean,
    choice,
    dns_name,
    hostport,
    https_url,
    ident,
    integer,
    ipv4,
    ipv6,
    netns_name,
    number,
    path,
    prefix,
    rpz_origin,
    string,
    table_name,
    timestamp,
)

_SECONDS = number(0, inclusive=False)


def parse_config(data: object, source: Path) -> Config:
    """Build a Config from an already-parsed YAML document, or raise ConfigError.

    ``source`` names the file in messages; relative paths resolve against its directory.
    """
    errors = Errors(source)
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (got {describe(data)})"])
    absolute = Path(os.path.abspath(source))
    base = absolute.parent
    root = Table(errors, "", data)
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
        routes=_routes(root.child("routes")),
        probes=_probes(root.child("probes")),
    )
    root.close()
    if errors.items:
        raise ConfigError(errors.items)
    return cfg


def _operator(t: Table, base: Path) -> OperatorConfig:
    cfg = OperatorConfig(
        id=t.require("id", ident, ""),
        receipt_key=t.require("receipt_key", path(base), Path()),
    )
    t.close()
    return cfg


def _issuer_key(t: Table, base: Path) -> IssuerKeyConfig:
    d = IssuerKeyConfig("", Path())
    key = IssuerKeyConfig(
        kid=t.require("kid", ident, ""),
        public_key=t.require("public_key", path(base), Path()),
        not_before=t.optional("not_before", timestamp),
        not_after=t.optional("not_after", timestamp),
        revoked=t.get("revoked", boolean, d.revoked),
    )
    if key.not_before and key.not_after and key.not_before >= key.not_after:
        t.error("not_after", "must be later than not_before")
    t.close()
    return key


def _issuer(t: Table, base: Path) -> IssuerConfig:
    issuer_id = t.require("id", ident, "")
    feed = t.optional_child("feed")
    issuer = IssuerConfig(
        id=issuer_id,
        name=t.get("name", string, issuer_id),
        keys=tuple(_issuer_key(k, base) for k in t.children("keys")),
        feed=_feed(feed, base) if feed is not None else None,
    )
    t.close()
    return issuer


def _feed(t: Table, base: Path) -> FeedConfig:
    d = FeedConfig("", Path())
    cfg = FeedConfig(
        url=t.require("url", https_url, ""),
        ca=t.require("ca", path(base), Path()),
        client_cert=t.optional("client_cert", path(base)),
        client_key=t.optional("client_key", path(base)),
        interval=t.get("interval", _SECONDS, d.interval),
        wait=t.get("wait", number(0, inclusive=True), d.wait),
    )
    if (cfg.client_cert is None) != (cfg.client_key is None):
        missing = "client_key" if cfg.client_key is None else "client_cert"
        t.error(missing, "required when client_cert or client_key is set (both or neither)")
    t.close()
    return cfg


def _issuers(root: Table, base: Path) -> tuple[IssuerConfig, ...]:
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


def _no_duplicates(root: Table, named: list[tuple[str, str]], what: str) -> None:
    first: dict[str, str] = {}
    for key, value in named:
        if value and value in first:
            root.error(key, f"duplicate {what} {value!r} (also at {first[value]})")
        first.setdefault(value, key)


def _rate_limit(t: Table) -> RateLimitConfig:
    d = RateLimitConfig()
    cfg = RateLimitConfig(
        per_second=t.get("per_second", number(0, inclusive=False), d.per_second),
        burst=t.get("burst", integer(1), d.burst),
    )
    t.close()
    return cfg


def _api(t: Table, base: Path) -> ApiConfig:
    d = ApiConfig(tls_cert=Path(), tls_key=Path())
    cfg = ApiConfig(
        listen=t.get("listen", hostport(listen=True), d.listen),
        tls_cert=t.require("tls_cert", path(base), Path()),
        tls_key=t.require("tls_key", path(base), Path()),
        client_ca=t.optional("client_ca", path(base)),
        max_body_bytes=t.get("max_body_bytes", integer(1), d.max_body_bytes),
        rate_limit=_rate_limit(t.child("rate_limit")),
        drain_seconds=t.get("drain_seconds", number(0, inclusive=True), d.drain_seconds),
        max_connections=t.get("max_connections", integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", integer(1), d.max_per_client),
        handshake_timeout=t.get("handshake_timeout", _SECONDS, d.handshake_timeout),
        header_timeout=t.get("header_timeout", _SECONDS, d.header_timeout),
        body_timeout=t.get("body_timeout", _SECONDS, d.body_timeout),
        max_header_bytes=t.get("max_header_bytes", integer(256, 65536), d.max_header_bytes),
        max_headers=t.get("max_headers", integer(8, 1024), d.max_headers),
    )
    t.close()
    return cfg


def _dns(t: Table) -> DnsConfig:
    d = DnsConfig()
    cfg = DnsConfig(
        listen=t.get_list("listen", hostport(listen=True), d.listen),
        upstreams=t.get_list("upstreams", hostport(listen=False), d.upstreams),
        block_mode=t.get("block_mode", choice(BLOCK_MODES), d.block_mode),
        sinkhole_ipv4=t.get("sinkhole_ipv4", ipv4, d.sinkhole_ipv4),
        sinkhole_ipv6=t.get("sinkhole_ipv6", ipv6, d.sinkhole_ipv6),
        block_ttl=t.get("block_ttl", integer(0, 86400), d.block_ttl),
        workers=t.get("workers", integer(1), d.workers),
        enabled=t.get("enabled", boolean, d.enabled),
        tcp=_dns_tcp(t.child("tcp")),
        max_pending_upstream=t.get("max_pending_upstream", integer(1), d.max_pending_upstream),
        max_pending_upstream_per_client=t.get(
            "max_pending_upstream_per_client", integer(1), d.max_pending_upstream_per_client
        ),
        crash_limit=t.get("crash_limit", integer(1), d.crash_limit),
        crash_window=t.get("crash_window", number(0, inclusive=False), d.crash_window),
    )
    if cfg.enabled and not cfg.listen:
        t.error("listen", "must name at least one address when dns is enabled")
    t.close()
    return cfg


def _dns_tcp(t: Table) -> DnsTcpConfig:
    d = DnsTcpConfig()
    cfg = DnsTcpConfig(
        max_connections=t.get("max_connections", integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", integer(1), d.max_per_client),
        idle_timeout=t.get("idle_timeout", _SECONDS, d.idle_timeout),
        max_pipeline=t.get("max_pipeline", integer(1, 65535), d.max_pipeline),
    )
    t.close()
    return cfg


def _nftables(t: Table) -> NftConfig:
    d = NftConfig()
    hooks = t.get_list("hooks", choice(NFT_HOOKS), d.hooks)
    if not hooks:
        t.error("hooks", f"must name at least one of {', '.join(NFT_HOOKS)}")
    elif len(set(hooks)) != len(hooks):
        t.error("hooks", "lists a hook twice")
    cfg = NftConfig(
        enabled=t.get("enabled", boolean, d.enabled),
        table=t.get("table", table_name, d.table),
        hooks=hooks,
        action=t.get("action", choice(NFT_ACTIONS), d.action),
        mode=t.get("mode", choice(NFT_MODES), d.mode),
        netns=t.optional("netns", netns_name),
    )
    t.close()
    return cfg


def _register(t: Table, base: Path) -> RegisterConfig:
    d = RegisterConfig()
    cfg = RegisterConfig(path=t.get("path", path(base), d.path))
    t.close()
    return cfg


def _metrics(t: Table) -> MetricsConfig:
    d = MetricsConfig()
    cfg = MetricsConfig(
        listen=t.get("listen", hostport(listen=True), d.listen),
        enabled=t.get("enabled", boolean, d.enabled),
        max_connections=t.get("max_connections", integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", integer(1), d.max_per_client),
        header_timeout=t.get("header_timeout", _SECONDS, d.header_timeout),
    )
    t.close()
    return cfg


def _log(t: Table) -> LogConfig:
    d = LogConfig()
    cfg = LogConfig(
        level=t.get("level", choice(LOG_LEVELS), d.level),
        format=t.get("format", choice(LOG_FORMATS), d.format),
    )
    t.close()
    return cfg


def _tsig(t: Table, base: Path) -> TsigConfig:
    cfg = TsigConfig(
        name=t.require("name", dns_name, ""),
        algorithm=t.get("algorithm", choice(TSIG_ALGORITHMS), TSIG_DEFAULT_ALGORITHM),
        secret_file=t.require("secret_file", path(base), Path()),
    )
    t.close()
    return cfg


def _rpz(t: Table, base: Path) -> RpzConfig:
    d = RpzConfig()
    tsig = t.optional_child("tsig")
    cfg = RpzConfig(
        enabled=t.get("enabled", boolean, d.enabled),
        origin=t.get("origin", rpz_origin, d.origin),
        listen=t.get_list("listen", hostport(listen=True), d.listen),
        notify=t.get_list("notify", hostport(listen=False), d.notify),
        allow_transfer=t.get_list("allow_transfer", prefix, d.allow_transfer),
        tsig=_tsig(tsig, base) if tsig is not None else d.tsig,
        ip_triggers=t.get("ip_triggers", boolean, d.ip_triggers),
        ixfr_history=t.get("ixfr_history", integer(0, 100_000), d.ixfr_history),
        action=t.get("action", choice(RPZ_ACTIONS), d.action),
        max_connections=t.get("max_connections", integer(1), d.max_connections),
        max_per_client=t.get("max_per_client", integer(1), d.max_per_client),
        idle_timeout=t.get("idle_timeout", _SECONDS, d.idle_timeout),
        max_transfers=t.get("max_transfers", integer(1), d.max_transfers),
    )
    if cfg.enabled and not cfg.listen:
        t.error("listen", "must name at least one address when rpz is enabled")
    t.close()
    return cfg


# Tables the kernel keeps for itself: kzgate's routes there would mix with the
# host's own (and "main" is what the host routes by).
_RESERVED_TABLES = {253: "default", 254: "main", 255: "local"}
# rtm_protocol values BIRD or the kernel give a meaning (bird-research.md,
# BIRD 2.0.12 sysdep/linux/netlink.c): routes with them would not be learned
# or announced as kzgate's, or would be deleted by BIRD.
_RESERVED_PROTOCOLS = {
    0: "unspec: BIRD skips such routes",
    1: "redirect: BIRD deletes such routes",
    2: "kernel: the kernel's own routes, BIRD ignores them",
    3: "boot: what `ip route add` uses when no proto is given, so an operator's "
    "hand-made routes would look like kzgate's",
    12: "bird: BIRD treats such routes as its own",
}


def _routes(t: Table) -> RoutesConfig:
    d = RoutesConfig()
    table = t.get("table", integer(1, 2**32 - 1), d.table)
    if table in _RESERVED_TABLES:
        t.error("table", f"must not be {table}: the kernel's {_RESERVED_TABLES[table]} table")
    protocol = t.get("protocol", integer(0, 255), d.protocol)
    if protocol in _RESERVED_PROTOCOLS:
        t.error(
            "protocol", f"must not be {protocol} ({_RESERVED_PROTOCOLS[protocol]}); 252 is free"
        )
    cfg = RoutesConfig(
        enabled=t.get("enabled", boolean, d.enabled),
        table=table,
        type=t.get("type", choice(ROUTE_TYPES), d.type),
        protocol=protocol,
        netns=t.optional("netns", netns_name),
    )
    t.close()
    return cfg


def _probes(t: Table) -> ProbesConfig:
    d = ProbesConfig()
    resolvers = t.get_list("resolvers", hostport(listen=False), d.resolvers)
    if len(set(resolvers)) != len(resolvers):
        t.error("resolvers", "lists a resolver twice")
    cfg = ProbesConfig(
        enabled=t.get("enabled", boolean, d.enabled),
        resolvers=resolvers,
        interval=t.get("interval", number(1, inclusive=True), d.interval),
        sample=t.get("sample", integer(1, 10_000), d.sample),
    )
    t.close()
    return cfg
