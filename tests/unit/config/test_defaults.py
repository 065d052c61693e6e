"""One source for every default: a key left out takes its dataclass field's default.

The section parsers read defaults from the dataclasses (kzgate/config/model.py)
and never write one themselves; these tests hold both sides to that, so that
the default of a value built in code (``DnsTcpConfig()``) and of a key left out
of the file cannot drift apart. What the defaults are is test_load.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kzgate.config import (
    TSIG_DEFAULT_ALGORITHM,
    ApiConfig,
    Config,
    ConfigError,
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
    parse_config,
)

SOURCE = Path("/etc/kzgate/kzgate.yaml")

# Only the required keys: every other key of every section is left out.
MINIMAL = {
    "operator": {"id": "op", "receipt_key": "k/op.key"},
    "issuers": [{"id": "mci", "keys": [{"kid": "k1", "public_key": "k/k1.pub"}]}],
    "api": {"tls_cert": "t/s.crt", "tls_key": "t/s.key"},
}

# Each section of a parsed Config, and its dataclass.
SECTIONS: list[tuple[str, Callable[[Config], Any], type]] = [
    ("(top level)", lambda c: c, Config),
    ("operator", lambda c: c.operator, OperatorConfig),
    ("issuers[0]", lambda c: c.issuers[0], IssuerConfig),
    ("issuers[0].keys[0]", lambda c: c.issuers[0].keys[0], IssuerKeyConfig),
    ("api", lambda c: c.api, ApiConfig),
    ("api.rate_limit", lambda c: c.api.rate_limit, RateLimitConfig),
    ("dns", lambda c: c.dns, DnsConfig),
    ("dns.tcp", lambda c: c.dns.tcp, DnsTcpConfig),
    ("nftables", lambda c: c.nftables, NftConfig),
    ("register", lambda c: c.register, RegisterConfig),
    ("metrics", lambda c: c.metrics, MetricsConfig),
    ("log", lambda c: c.log, LogConfig),
    ("rpz", lambda c: c.rpz, RpzConfig),
    ("routes", lambda c: c.routes, RoutesConfig),
    ("probes", lambda c: c.probes, ProbesConfig),
]

# Fields without a dataclass default: the required keys, and the two whose
# default the parser computes (an issuer's name is its id; TsigConfig is built
# positionally, its algorithm between two required fields).
NO_DEFAULT: dict[type, set[str]] = {
    Config: {"source", "operator", "issuers", "api", "dns", "nftables", "register"}
    | {"metrics", "log"},
    OperatorConfig: {"id", "receipt_key"},
    IssuerConfig: {"id", "name", "keys"},
    IssuerKeyConfig: {"kid", "public_key"},
    FeedConfig: {"url", "ca"},
    ApiConfig: {"tls_cert", "tls_key"},
    RateLimitConfig: set(),
    DnsConfig: set(),
    DnsTcpConfig: set(),
    NftConfig: set(),
    RegisterConfig: set(),
    MetricsConfig: set(),
    LogConfig: set(),
    RpzConfig: set(),
    RoutesConfig: set(),
    ProbesConfig: set(),
    TsigConfig: {"name", "algorithm", "secret_file"},
}


def field_defaults(cls: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def with_empty_sections(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with every optional section written out as an empty mapping."""
    out = dict(doc, dns={"tcp": {}}, nftables={}, register={}, metrics={}, log={}, rpz={})
    out["routes"] = {}
    out["probes"] = {}
    out["api"] = dict(doc["api"], rate_limit={})
    return out


@pytest.mark.parametrize("written", ["left out", "empty"])
@pytest.mark.parametrize(("where", "section", "cls"), SECTIONS, ids=[s[0] for s in SECTIONS])
def test_a_key_left_out_takes_its_dataclass_default(
    written: str, where: str, section: Callable[[Config], Any], cls: type
) -> None:
    doc = MINIMAL if written == "left out" else with_empty_sections(MINIMAL)
    parsed = section(parse_config(doc, SOURCE))
    defaults = field_defaults(cls)
    assert defaults or cls in (OperatorConfig, IssuerConfig)
    for name, default in defaults.items():
        assert getattr(parsed, name) == default, f"{where}.{name}"


def test_the_whole_parsed_default_equals_the_built_default() -> None:
    cfg = parse_config(MINIMAL, SOURCE)
    assert cfg.dns == DnsConfig()
    assert cfg.nftables == NftConfig()
    assert cfg.register == RegisterConfig()
    assert cfg.metrics == MetricsConfig()
    assert cfg.log == LogConfig()
    assert cfg.rpz == RpzConfig()
    assert cfg.routes == RoutesConfig()
    assert cfg.probes == ProbesConfig()
    assert cfg.api == ApiConfig(tls_cert=cfg.api.tls_cert, tls_key=cfg.api.tls_key)


def test_tsig_algorithm_default() -> None:
    doc = dict(MINIMAL, rpz={"tsig": {"name": "xfr.", "secret_file": "k/xfr.b64"}})
    tsig = parse_config(doc, SOURCE).rpz.tsig
    assert tsig is not None and tsig.algorithm == TSIG_DEFAULT_ALGORITHM


@pytest.mark.parametrize("cls", list(NO_DEFAULT), ids=lambda c: c.__name__)
def test_only_required_keys_lack_a_dataclass_default(cls: type) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    assert names - set(field_defaults(cls)) == NO_DEFAULT[cls]


def test_the_required_keys_are_those_without_a_default() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_load("issuers: [{keys: [{}], feed: {}}]\nrpz: {tsig: {}}\n"), SOURCE)
    required = {e.split(": ")[1] for e in info.value.errors if e.endswith(": required")}
    assert required == {
        "operator.id",
        "operator.receipt_key",
        "issuers[0].id",
        "issuers[0].keys[0].kid",
        "issuers[0].keys[0].public_key",
        "issuers[0].feed.url",
        "issuers[0].feed.ca",
        "api.tls_cert",
        "api.tls_key",
        "rpz.tsig.name",
        "rpz.tsig.secret_file",
    }
