"""The configuration file: the DESIGN.md example is a contract; errors name key and file."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
import yaml

from kzgate.config import (
    ConfigError,
    HostPort,
    RateLimitConfig,
    load_config,
    missing_files,
    parse_config,
)

# Verbatim from DESIGN.md, section "Configuration (YAML)".
DESIGN_EXAMPLE = """\
operator:
  id: op-example                      # this operator's id, matched against a task's "aud"
  receipt_key: keys/operator.key      # Ed25519 private key, PEM (PKCS#8), signs receipts
issuers:
  - id: mci                           # a task's "iss"
    name: Ministry of Culture and Information of the Republic of Kazakhstan
    keys:
      - kid: mci-2026
        public_key: keys/mci-2026.pub # Ed25519 public key, PEM (SubjectPublicKeyInfo)
        not_before: 2026-01-01T00:00:00Z   # optional
        not_after: 2027-12-31T23:59:59Z    # optional
        revoked: false                     # optional
api:
  listen: 127.0.0.1:8443              # host:port; [::1]:8443 for IPv6
  tls_cert: tls/server.crt
  tls_key: tls/server.key
  client_ca: tls/ca.crt               # when set, a client certificate from this CA is required
  max_body_bytes: 16777216
dns:
  listen: [127.0.0.1:5353]            # UDP and TCP on each
  upstreams: [127.0.0.1:5354]         # forwarded to, in order of preference
  block_mode: nxdomain                # nxdomain | sinkhole | refused
  sinkhole_ipv4: 192.0.2.1            # for block_mode: sinkhole
  sinkhole_ipv6: "2001:db8::1"
  block_ttl: 60
  workers: 1                          # processes sharing the port (SO_REUSEPORT)
nftables:
  enabled: false
  table: kzgate                       # family inet
  hooks: [forward]                    # forward and/or output
  action: drop                        # drop | reject
register:
  path: var/kzgate.db
metrics:
  listen: 127.0.0.1:9108
log:
  level: info                         # debug | info | warning | error
  format: json                        # json | text
"""

MINIMAL = """\
operator: {id: op, receipt_key: k/op.key}
issuers:
  - id: mci
    keys: [{kid: k1, public_key: k/k1.pub}]
api: {tls_cert: t/s.crt, tls_key: t/s.key}
"""

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "kzgate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.errors


def doc(text: str) -> dict[str, object]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


# --- the contract --------------------------------------------------------------


def test_design_example_has_exactly_its_documented_meaning(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))
    utc = dt.UTC
    assert cfg.source == tmp_path / "kzgate.yaml"
    assert cfg.operator.id == "op-example"
    assert cfg.operator.receipt_key == tmp_path / "keys/operator.key"
    [mci] = cfg.issuers
    assert (mci.id, mci.name) == (
        "mci",
        "Ministry of Culture and Information of the Republic of Kazakhstan",
    )
    [key] = mci.keys
    assert key.kid == "mci-2026"
    assert key.public_key == tmp_path / "keys/mci-2026.pub"
    assert key.not_before == dt.datetime(2026, 1, 1, tzinfo=utc)
    assert key.not_after == dt.datetime(2027, 12, 31, 23, 59, 59, tzinfo=utc)
    assert key.not_before.tzinfo is not None and key.not_after.tzinfo is not None
    assert key.revoked is False
    assert cfg.api.listen == HostPort("127.0.0.1", 8443)
    assert cfg.api.tls_cert == tmp_path / "tls/server.crt"
    assert cfg.api.tls_key == tmp_path / "tls/server.key"
    assert cfg.api.client_ca == tmp_path / "tls/ca.crt"
    assert cfg.api.max_body_bytes == 16777216
    assert cfg.dns.listen == (HostPort("127.0.0.1", 5353),)
    assert cfg.dns.upstreams == (HostPort("127.0.0.1", 5354),)
    assert cfg.dns.block_mode == "nxdomain"
    assert cfg.dns.sinkhole_ipv4 == ipaddress.IPv4Address("192.0.2.1")
    assert cfg.dns.sinkhole_ipv6 == ipaddress.IPv6Address("2001:db8::1")
    assert (cfg.dns.block_ttl, cfg.dns.workers, cfg.dns.enabled) == (60, 1, True)
    assert cfg.nftables.enabled is False
    assert cfg.nftables.table == "kzgate"
    assert cfg.nftables.hooks == ("forward",)
    assert cfg.nftables.action == "drop"
    assert cfg.register.path == tmp_path / "var/kzgate.db"
    assert cfg.metrics.listen == HostPort("127.0.0.1", 9108)
    assert cfg.metrics.enabled is True
    assert (cfg.log.level, cfg.log.format) == ("info", "json")


def test_shipped_configs_load() -> None:
    example = load_config(REPO / "configs/example.yaml")
    assert example.register.path == Path("/var/lib/kzgate/kzgate.db")
    assert example.operator.receipt_key == Path("/etc/kzgate/keys/operator.key")
    dev = load_config(REPO / "configs/dev.yaml")
    assert dev.operator.id == "op-dev"
    assert [i.id for i in dev.issuers] == ["mci", "sts"]
    assert dev.issuers[1].name == "State Technical Service"
    assert [k.kid for i in dev.issuers for k in i.keys] == ["mci-dev", "sts-dev"]
    assert dev.register.path == REPO / "var/kzgate.db"
    assert dev.api.client_ca == REPO / "var/dev/tls/ca.crt"
    assert dev.nftables.enabled is False
    assert dev.dns.upstreams == (HostPort("127.0.0.1", 5354),)
    assert (dev.log.level, dev.log.format) == ("info", "text")


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.issuers[0].name == "mci"  # the id stands in for a missing name
    k = cfg.issuers[0].keys[0]
    assert (k.not_before, k.not_after, k.revoked) == (None, None, False)
    assert cfg.api.listen == HostPort("127.0.0.1", 8443)
    assert cfg.api.client_ca is None
    assert cfg.api.max_body_bytes == 16777216
    assert cfg.api.rate_limit == RateLimitConfig(per_second=50.0, burst=100)
    assert cfg.api.drain_seconds == 10.0
    assert cfg.dns.enabled is True
    assert cfg.dns.listen == (HostPort("127.0.0.1", 5353),)
    assert cfg.dns.upstreams == ()
    assert cfg.dns.block_mode == "nxdomain"
    assert str(cfg.dns.sinkhole_ipv4) == "192.0.2.1"
    assert str(cfg.dns.sinkhole_ipv6) == "2001:db8::1"
    assert (cfg.dns.block_ttl, cfg.dns.workers) == (60, 1)
    assert (cfg.dns.crash_limit, cfg.dns.crash_window) == (5, 60.0)
    assert cfg.nftables.enabled is False
    assert (cfg.nftables.table, cfg.nftables.hooks, cfg.nftables.action) == (
        "kzgate",
        ("forward",),
        "drop",
    )
    assert cfg.register.path == Path("/var/lib/kzgate/kzgate.db")
    assert cfg.metrics.listen == HostPort("127.0.0.1", 9108)
    assert cfg.metrics.enabled is True
    assert (cfg.log.level, cfg.log.format) == ("info", "json")


def test_extra_keys_beyond_the_example(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "api: {tls_cert: t/s.crt, tls_key: t/s.key}",
        "api:\n  tls_cert: t/s.crt\n  tls_key: t/s.key\n"
        "  rate_limit: {per_second: 2.5, burst: 7}\n  drain_seconds: 0\n"
        "dns: {enabled: false, listen: []}\n"
        "metrics: {enabled: false, listen: '[::1]:0'}\n"
        "nftables: {hooks: [forward, output], action: reject, table: kz_1}",
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.api.rate_limit == RateLimitConfig(per_second=2.5, burst=7)
    assert cfg.api.drain_seconds == 0.0
    assert (cfg.dns.enabled, cfg.dns.listen) == (False, ())
    assert cfg.metrics == type(cfg.metrics)(listen=HostPort("::1", 0), enabled=False)
    assert cfg.nftables.hooks == ("forward", "output")
    assert (cfg.nftables.action, cfg.nftables.table) == ("reject", "kz_1")


def test_nftables_mode_and_netns(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert (cfg.nftables.mode, cfg.nftables.netns) == ("full", None)
    text = MINIMAL + "nftables: {mode: set-only, netns: kzg-test_1.a}\n"
    cfg = load_config(write(tmp_path, text))
    assert (cfg.nftables.mode, cfg.nftables.netns) == ("set-only", "kzg-test_1.a")
    cfg = load_config(write(tmp_path, MINIMAL + "nftables: {netns: null}\n"))
    assert cfg.nftables.netns is None


# --- HostPort --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8443", "127.0.0.1", 8443),
        ("[::1]:8443", "::1", 8443),
        ("localhost:53", "localhost", 53),
        ("[2001:db8::5]:65535", "2001:db8::5", 65535),
        ("dns.example.kz:853", "dns.example.kz", 853),
    ],
)
def test_hostport_round_trip(text: str, host: str, port: int) -> None:
    parsed = HostPort.parse(text)
    assert parsed == HostPort(host, port)
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1", "::1:53", "[::1]53", "[zz]:53", "host:0", "host:65536", "host:-1", ":53",
     "300.1.1.1:53", "a_b:53", "host: 53"],
)  # fmt: skip
def test_hostport_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        HostPort.parse(text)


def test_port_zero_only_for_listen(tmp_path: Path) -> None:
    ok = MINIMAL + "dns: {listen: ['127.0.0.1:0']}\n"
    assert load_config(write(tmp_path, ok)).dns.listen == (HostPort("127.0.0.1", 0),)
    errs = errors_of(tmp_path, MINIMAL + "dns: {upstreams: ['127.0.0.1:0']}\n")
    assert len(errs) == 1
    assert "dns.upstreams[0]: port must be a number 1-65535" in errs[0]


# --- errors ----------------------------------------------------------------------


def test_unknown_top_level_key_names_file_and_key(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL + "lgo: {level: info}\n")
    assert errs == [f"{tmp_path / 'kzgate.yaml'}: lgo: unknown key 'lgo' (did you mean 'log'?)"]


def test_unknown_nested_keys_name_their_path(tmp_path: Path) -> None:
    text = MINIMAL.replace("api: {", "api: {lisen: '127.0.0.1:1', ").replace(
        "kid: k1,", "kid: k1, revoke: true,"
    )
    errs = errors_of(tmp_path, text)
    source = tmp_path / "kzgate.yaml"
    assert sorted(errs) == sorted(
        [
            f"{source}: api.lisen: unknown key 'lisen' (did you mean 'listen'?)",
            f"{source}: issuers[0].keys[0].revoke: unknown key 'revoke' (did you mean 'revoked'?)",
        ]
    )


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = """\
operator: {receipt_key: k.key}
issuers:
  - id: mci
    keys:
      - {kid: a, public_key: a.pub}
      - {public_key: b.pub}
api: {tls_cert: c, tls_key: k, listen: 'localhost:99999'}
dns: {block_mode: block, workers: 0, block_ttl: 86401, enabled: "yes"}
nftables: {hooks: [input], table: "in-valid"}
log: {level: loud}
"""
    errs = errors_of(tmp_path, text)
    p = str(tmp_path / "kzgate.yaml")
    expected = [
        f"{p}: operator.id: required",
        f"{p}: issuers[0].keys[1].kid: required",
        f"{p}: api.listen: port must be a number 0-65535 (got '99999')",
        f"{p}: dns.block_mode: must be one of nxdomain, sinkhole, refused (got 'block')",
        f"{p}: dns.block_ttl: must be an integer 0-86400 (got 86401)",
        f"{p}: dns.workers: must be an integer >= 1 (got 0)",
        f"{p}: dns.enabled: must be true or false (got 'yes')",
        f"{p}: nftables.hooks[0]: must be one of forward, output (got 'input')",
        f"{p}: nftables.table: must be 1-64 characters of A-Z a-z 0-9 _ (got 'in-valid')",
        f"{p}: log.level: must be one of debug, info, warning, error (got 'loud')",
    ]
    for line in expected:
        assert line in errs
    # hooks became empty once its only item was refused: reported as well
    assert len(errs) == len(expected) + 1
    assert str(ConfigError(errs)) == "\n".join(errs)


@pytest.mark.parametrize(
    ("patch", "key", "message"),
    [
        ("api: {max_body_bytes: '16M'}", "api.max_body_bytes", "must be an integer >= 1"),
        ("api: {max_body_bytes: true}", "api.max_body_bytes", "must be an integer >= 1"),
        ("api: {rate_limit: {per_second: 0}}", "api.rate_limit.per_second", "must be a number > 0"),
        ("api: {rate_limit: {burst: 1.5}}", "api.rate_limit.burst", "must be an integer >= 1"),
        ("api: {rate_limit: 5}", "api.rate_limit", "must be a mapping (got 5)"),
        ("api: {drain_seconds: -1}", "api.drain_seconds", "must be a number >= 0"),
        ("api: {listen: 8443}", "api.listen", "must be a 'host:port' string (got 8443)"),
        ("api: {listen: [::1]:8443}", "", "invalid YAML"),
        ("dns: {listen: 5}", "dns.listen", "must be a list (got 5)"),
        ("dns: {listen: []}", "dns.listen", "must name at least one address"),
        ("dns: {sinkhole_ipv4: '2001:db8::1'}", "dns.sinkhole_ipv4", "must be an IPv4 address"),
        ("dns: {sinkhole_ipv6: 192.0.2.1}", "dns.sinkhole_ipv6", "must be an IPv6 address"),
        ("dns: {upstreams: ['::1:53']}", "dns.upstreams[0]", "put an IPv6 address in brackets"),
        ("dns: {crash_limit: 0}", "dns.crash_limit", "must be an integer >= 1 (got 0)"),
        ("dns: {crash_window: 0}", "dns.crash_window", "must be a number > 0 (got 0)"),
        ("nftables: {enabled: 1}", "nftables.enabled", "must be true or false (got 1)"),
        ("nftables: {hooks: []}", "nftables.hooks", "must name at least one of forward, output"),
        ("nftables: {hooks: [output, output]}", "nftables.hooks", "lists a hook twice"),
        ("nftables: {action: accept}", "nftables.action", "must be one of drop, reject"),
        ("nftables: {mode: sets}", "nftables.mode", "must be one of full, set-only (got 'sets')"),
        ("nftables: {netns: ../etc}", "nftables.netns", "must be a network namespace name"),
        ("nftables: {netns: '..'}", "nftables.netns", "must be a network namespace name"),
        ("nftables: {netns: 5}", "nftables.netns", "must be a network namespace name"),
        ("nftables: {netns: ''}", "nftables.netns", "must be a network namespace name"),
        ("metrics: {enabled: 'false'}", "metrics.enabled", "must be true or false"),
        ("log: {format: xml}", "log.format", "must be one of json, text (got 'xml')"),
        ("log: []", "log", "must be a mapping (got a list)"),
        ("register: {path: ''}", "register.path", "must be a non-empty string"),
    ],
)
def test_bad_values(tmp_path: Path, patch: str, key: str, message: str) -> None:
    # the section replaces the minimal one where both name it (YAML keeps the last)
    base = MINIMAL.replace("api: {tls_cert: t/s.crt, tls_key: t/s.key}\n", "")
    if not patch.startswith("api:"):
        base += "api: {tls_cert: t/s.crt, tls_key: t/s.key}\n"
    else:
        patch = patch.replace("api: {", "api: {tls_cert: t/s.crt, tls_key: t/s.key, ")
    errs = errors_of(tmp_path, base + patch + "\n")
    prefix = f"{tmp_path / 'kzgate.yaml'}: {key}: " if key else f"{tmp_path / 'kzgate.yaml'}: "
    assert len(errs) == 1, errs
    assert errs[0].startswith(prefix) and message in errs[0], errs


def test_ids_are_checked(tmp_path: Path) -> None:
    text = MINIMAL.replace("id: op,", "id: 'op dev',").replace("kid: k1", "kid: 12")
    errs = errors_of(tmp_path, text)
    assert len(errs) == 2
    assert "operator.id: must be 1-128 characters of A-Z a-z 0-9 . _ : - (got 'op dev')" in errs[0]
    assert "issuers[0].keys[0].kid: must be 1-128 characters" in errs[1]
    assert "(got 12)" in errs[1]
    long_id = "x" * 129
    assert errors_of(tmp_path, MINIMAL.replace("id: op,", f"id: {long_id},"))


def test_duplicate_issuers_and_kids(tmp_path: Path) -> None:
    text = """\
operator: {id: op, receipt_key: k}
issuers:
  - id: mci
    keys: [{kid: a, public_key: a.pub}, {kid: b, public_key: b.pub}]
  - id: mci
    keys: [{kid: c, public_key: c.pub}]
  - id: sts
    keys: [{kid: b, public_key: b2.pub}]
api: {tls_cert: c, tls_key: k}
"""
    errs = errors_of(tmp_path, text)
    p = tmp_path / "kzgate.yaml"
    assert errs == [
        f"{p}: issuers[1].id: duplicate issuer id 'mci' (also at issuers[0].id)",
        f"{p}: issuers[2].keys[0].kid: duplicate kid 'b' (also at issuers[0].keys[1].kid)",
    ]


def test_issuers_are_required_and_need_keys(tmp_path: Path) -> None:
    base = "operator: {id: op, receipt_key: k}\napi: {tls_cert: c, tls_key: k}\n"
    assert errors_of(tmp_path, base)[0].endswith(
        "issuers: required (a list with at least one item)"
    )
    assert "issuers: must be a non-empty list" in errors_of(tmp_path, base + "issuers: []\n")[0]
    errs = errors_of(tmp_path, base + "issuers: [{id: mci}]\n")
    assert errs == [
        f"{tmp_path / 'kzgate.yaml'}: issuers[0].keys: required (a list with at least one item)"
    ]


def test_required_keys(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, "")
    keys = [e.split(": ")[1] for e in errs]
    assert keys == ["operator.id", "operator.receipt_key", "issuers", "api.tls_cert", "api.tls_key"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "- a\n- b\n") == [
        f"{tmp_path / 'kzgate.yaml'}: the top level must be a mapping (got a list)"
    ]


# --- timestamps --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("'2026-01-01T05:00:00+05:00'", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-01-01 00:00:00", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),  # naive: UTC
        ("'2026-01-01T00:00:00'", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_timestamps(tmp_path: Path, value: str, expected: dt.datetime) -> None:
    text = MINIMAL.replace("kid: k1,", f"kid: k1, not_before: {value},")
    not_before = load_config(write(tmp_path, text)).issuers[0].keys[0].not_before
    assert not_before == expected
    assert not_before is not None and not_before.utcoffset() is not None


@pytest.mark.parametrize("value", ["2026-01-01", "'yesterday'", "5"])
def test_bad_timestamps(tmp_path: Path, value: str) -> None:
    text = MINIMAL.replace("kid: k1,", f"kid: k1, not_after: {value},")
    [err] = errors_of(tmp_path, text)
    assert "issuers[0].keys[0].not_after: must be" in err


def test_not_before_must_precede_not_after(tmp_path: Path) -> None:
    window = "not_before: 2027-01-01T00:00:00Z, not_after: 2026-01-01T00:00:00Z,"
    [err] = errors_of(tmp_path, MINIMAL.replace("kid: k1,", f"kid: k1, {window}"))
    assert err.endswith("issuers[0].keys[0].not_after: must be later than not_before")


# --- the file ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.errors == [f"{tmp_path / 'nope.yaml'}: no such file"]


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, "operator:\n  id: op\n  receipt_key: [unclosed\napi: {}\n")
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path / 'kzgate.yaml'}: line ")
    assert "invalid YAML" in errs[0]
    tab = errors_of(tmp_path, "operator:\n\tid: op\n")
    assert tab[0].startswith(f"{tmp_path / 'kzgate.yaml'}: line 2, column 1: invalid YAML")


def test_duplicate_yaml_keys_are_reported_with_line(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL + "log: {level: info}\nlog: {level: debug}\n")
    assert errs == [f"{tmp_path / 'kzgate.yaml'}: line 7: duplicate key 'log'"]


def test_relative_paths_resolve_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    text = MINIMAL.replace("k/op.key", "../keys/op.key").replace("t/s.key", "/abs/s.key")
    cfg = load_config(write(tmp_path / "etc", text))
    assert cfg.operator.receipt_key == tmp_path / "keys/op.key"
    assert cfg.issuers[0].keys[0].public_key == tmp_path / "etc/k/k1.pub"
    assert cfg.api.tls_cert == tmp_path / "etc/t/s.crt"
    assert cfg.api.tls_key == Path("/abs/s.key")
    relative = load_config(Path("etc") / "kzgate.yaml")
    assert relative.source == tmp_path / "etc/kzgate.yaml"
    assert relative.operator.receipt_key == tmp_path / "keys/op.key"


def test_parse_config_is_pure() -> None:
    cfg = parse_config(doc(MINIMAL), Path("/srv/kz/conf.yaml"))
    assert cfg.operator.receipt_key == Path("/srv/kz/k/op.key")
    with pytest.raises(ConfigError) as info:
        parse_config({"bogus": 1, **doc(MINIMAL)}, Path("x/y.yaml"))
    assert info.value.errors == ["x/y.yaml: bogus: unknown key 'bogus'"]


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        cfg.log.level = "debug"  # type: ignore[misc]


# --- missing_files -------------------------------------------------------------------


def test_missing_files(tmp_path: Path) -> None:
    text = MINIMAL.replace("api: {", "api: {client_ca: t/ca.crt, ")
    cfg = load_config(write(tmp_path, text))
    source = tmp_path / "kzgate.yaml"
    assert missing_files(cfg) == [
        f"{source}: operator.receipt_key: no such file: {tmp_path / 'k/op.key'}",
        f"{source}: api.tls_cert: no such file: {tmp_path / 't/s.crt'}",
        f"{source}: api.tls_key: no such file: {tmp_path / 't/s.key'}",
        f"{source}: api.client_ca: no such file: {tmp_path / 't/ca.crt'}",
        f"{source}: issuers[0].keys[0].public_key: no such file: {tmp_path / 'k/k1.pub'}",
    ]
    for rel in ("k/op.key", "t/s.crt", "t/s.key", "k/k1.pub"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "t/ca.crt").mkdir()
    assert missing_files(cfg) == [
        f"{source}: api.client_ca: not a regular file: {tmp_path / 't/ca.crt'}"
    ]


# --- rpz -------------------------------------------------------------------------


def test_rpz_defaults_leave_it_off(tmp_path: Path) -> None:
    from kzgate.config import RpzConfig

    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.rpz == RpzConfig()
    assert cfg.rpz.enabled is False and cfg.rpz.tsig is None
    assert cfg.rpz.origin == "rpz.kzgate."
    assert cfg.rpz.listen == (HostPort("127.0.0.1", 5300),)
    assert cfg.rpz.notify == (HostPort("127.0.0.1", 5301),)
    assert [str(n) for n in cfg.rpz.allow_transfer] == ["127.0.0.1/32", "::1/128"]
    assert (cfg.rpz.ip_triggers, cfg.rpz.ixfr_history, cfg.rpz.action) == (
        False,
        100,
        "from_block_mode",
    )


def test_rpz_section(tmp_path: Path) -> None:
    text = MINIMAL + (
        "rpz:\n"
        "  enabled: true\n"
        "  origin: RPZ.Example.KZ\n"
        "  listen: ['127.0.0.1:0', '[::1]:5300']\n"
        "  notify: [192.0.2.53:53]\n"
        "  allow_transfer: [10.0.0.0/8, '2001:db8::/32']\n"
        "  tsig: {name: kzgate-xfr, secret_file: keys/xfr.tsig}\n"
        "  ip_triggers: true\n"
        "  ixfr_history: 5\n"
        "  action: nodata\n"
    )
    cfg = load_config(write(tmp_path, text)).rpz
    assert cfg.origin == "rpz.example.kz."
    assert cfg.listen == (HostPort("127.0.0.1", 0), HostPort("::1", 5300))
    assert cfg.notify == (HostPort("192.0.2.53", 53),)
    assert [str(n) for n in cfg.allow_transfer] == ["10.0.0.0/8", "2001:db8::/32"]
    assert cfg.tsig is not None
    assert (cfg.tsig.name, cfg.tsig.algorithm) == ("kzgate-xfr.", "hmac-sha256")
    assert cfg.tsig.secret_file == tmp_path / "keys/xfr.tsig"
    assert (cfg.ip_triggers, cfg.ixfr_history, cfg.action) == (True, 5, "nodata")


def test_rpz_errors_name_the_key(tmp_path: Path) -> None:
    text = MINIMAL + (
        "rpz:\n"
        "  origin: 'not a name'\n"
        "  allow_transfer: [10.0.0.1/8]\n"
        "  tsig: {name: k., algorithm: hmac-md5, secrets: x}\n"
        "  action: drop\n"
        "  ixfr_history: -1\n"
        "  colour: blue\n"
    )
    errors = "\n".join(errors_of(tmp_path, text))
    for key in (
        "rpz.origin",
        "rpz.allow_transfer[0]",
        "rpz.tsig.algorithm",
        "rpz.tsig.secret_file: required",
        "rpz.tsig.secrets: unknown key",
        "rpz.action",
        "rpz.ixfr_history",
        "rpz.colour: unknown key",
    ):
        assert f"kzgate.yaml: {key}" in errors, key


def test_rpz_origin_leaves_room_for_every_ip_trigger(tmp_path: Path) -> None:
    from kzgate.config import RPZ_ORIGIN_MAX_CHARS
    from kzgate.rpz.zone import LONGEST_IP_TRIGGER, MAX_NAME_OCTETS, owner_octets

    longest = ".".join(["a" * 63] * 3) + "." + "b" * 10 + "."
    assert len(longest) == RPZ_ORIGIN_MAX_CHARS
    # The limit is exact: at it every trigger fits, one more character and one would not.
    assert owner_octets(LONGEST_IP_TRIGGER, longest) == MAX_NAME_OCTETS
    cfg = load_config(write(tmp_path, MINIMAL + f"rpz: {{origin: {longest}}}\n"))
    assert cfg.rpz.origin == longest
    errors = errors_of(tmp_path, MINIMAL + f"rpz: {{origin: c.{longest[1:]}}}\n")
    assert any("rpz.origin: must be at most 203 characters" in e for e in errors), errors


def test_rpz_tsig_secret_is_a_needed_file(tmp_path: Path) -> None:
    text = MINIMAL + "rpz: {enabled: true, tsig: {name: k., secret_file: xfr.tsig}}\n"
    cfg = load_config(write(tmp_path, text))
    assert any("rpz.tsig.secret_file: no such file" in m for m in missing_files(cfg))


# --- listener limits ---------------------------------------------------------------


def test_listener_limits_have_defaults(tmp_path: Path) -> None:
    from kzgate.config import DnsTcpConfig

    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.dns.tcp == DnsTcpConfig(
        max_connections=1000, max_per_client=16, idle_timeout=10.0, max_pipeline=32
    )
    assert (cfg.dns.max_pending_upstream, cfg.dns.max_pending_upstream_per_client) == (4096, 256)
    api = cfg.api
    assert (api.max_connections, api.max_per_client) == (256, 32)
    assert (api.handshake_timeout, api.header_timeout, api.body_timeout) == (10.0, 10.0, 30.0)
    assert (api.max_header_bytes, api.max_headers) == (8190, 32)
    m = cfg.metrics
    assert (m.max_connections, m.max_per_client, m.header_timeout) == (32, 8, 10.0)
    r = cfg.rpz
    assert (r.max_connections, r.max_per_client, r.idle_timeout, r.max_transfers) == (
        64,
        8,
        30.0,
        10,
    )


def test_listener_limits_are_read(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "api: {tls_cert: t/s.crt, tls_key: t/s.key}\n",
        "api:\n"
        "  tls_cert: t/s.crt\n"
        "  tls_key: t/s.key\n"
        "  max_connections: 10\n"
        "  max_per_client: 2\n"
        "  handshake_timeout: 1.5\n"
        "  header_timeout: 2\n"
        "  body_timeout: 3\n"
        "  max_header_bytes: 1024\n"
        "  max_headers: 16\n",
    ) + (
        "dns:\n"
        "  tcp: {max_connections: 5, max_per_client: 1, idle_timeout: 0.5, max_pipeline: 4}\n"
        "  max_pending_upstream: 100\n"
        "  max_pending_upstream_per_client: 7\n"
        "metrics: {max_connections: 3, max_per_client: 1, header_timeout: 4}\n"
        "rpz: {max_connections: 6, max_per_client: 2, idle_timeout: 5, max_transfers: 1}\n"
    )
    cfg = load_config(write(tmp_path, text))
    api = cfg.api
    assert (api.max_connections, api.max_per_client, api.handshake_timeout) == (10, 2, 1.5)
    assert (api.header_timeout, api.body_timeout) == (2.0, 3.0)
    assert (api.max_header_bytes, api.max_headers) == (1024, 16)
    tcp = cfg.dns.tcp
    assert (tcp.max_connections, tcp.max_per_client, tcp.idle_timeout, tcp.max_pipeline) == (
        5,
        1,
        0.5,
        4,
    )
    assert (cfg.dns.max_pending_upstream, cfg.dns.max_pending_upstream_per_client) == (100, 7)
    m = cfg.metrics
    assert (m.max_connections, m.max_per_client, m.header_timeout) == (3, 1, 4.0)
    r = cfg.rpz
    assert (r.max_connections, r.max_per_client, r.idle_timeout, r.max_transfers) == (6, 2, 5, 1)


def test_listener_limit_errors_name_file_and_key(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "api: {tls_cert: t/s.crt, tls_key: t/s.key}\n",
        "api:\n"
        "  tls_cert: t/s.crt\n"
        "  tls_key: t/s.key\n"
        "  max_connections: 0\n"
        "  max_per_client: true\n"
        "  handshake_timeout: 0\n"
        "  header_timeout: -1\n"
        "  body_timeout: soon\n"
        "  max_header_bytes: 100\n"
        "  max_headers: 5000\n",
    ) + (
        "dns:\n"
        "  tcp: {max_connections: -1, max_per_client: 0, idle_timeout: 0, max_pipeline: 0,"
        " max_lifetime: 9}\n"
        "  max_pending_upstream: 0\n"
        "  max_pending_upstream_per_client: 1.5\n"
        "metrics: {max_connections: 0, max_per_client: 0, header_timeout: 0}\n"
        "rpz: {max_connections: 0, max_per_client: 0, idle_timeout: 0, max_transfers: 0}\n"
    )
    errors = errors_of(tmp_path, text)
    joined = "\n".join(errors)
    keys = [
        "api.max_connections",
        "api.max_per_client",
        "api.handshake_timeout",
        "api.header_timeout",
        "api.body_timeout",
        "api.max_header_bytes",
        "api.max_headers",
        "dns.tcp.max_connections",
        "dns.tcp.max_per_client",
        "dns.tcp.idle_timeout",
        "dns.tcp.max_pipeline",
        "dns.tcp.max_lifetime: unknown key",
        "dns.max_pending_upstream",
        "dns.max_pending_upstream_per_client",
        "metrics.max_connections",
        "metrics.max_per_client",
        "metrics.header_timeout",
        "rpz.max_connections",
        "rpz.max_per_client",
        "rpz.idle_timeout",
        "rpz.max_transfers",
    ]
    for key in keys:
        assert f"kzgate.yaml: {key}" in joined, key
    assert len(errors) == len(keys)
