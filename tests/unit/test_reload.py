from pathlib import Path

import yaml

from kzgate.config import Config, parse_config
from kzgate.reload import plan_reload

BASE = """
operator: {id: op, receipt_key: op.key}
issuers:
  - id: mci
    keys: [{kid: mci-1, public_key: mci-1.pub}]
api: {listen: 127.0.0.1:8443, tls_cert: s.crt, tls_key: s.key}
dns: {listen: [127.0.0.1:5353], upstreams: [127.0.0.1:5354], block_mode: nxdomain}
"""


def cfg(**changes: object) -> Config:
    data = yaml.safe_load(BASE)
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            data.setdefault(section, {})[key] = value
        else:
            data[section] = value
    return parse_config(data, Path("/etc/kzgate/kzgate.yaml"))


def test_nothing_changed() -> None:
    plan = plan_reload(cfg(), cfg())
    assert plan.live == () and plan.restart == ()


def test_live_settings_are_taken_over() -> None:
    new = cfg(dns__block_mode="refused", dns__upstreams=["127.0.0.1:53"], log__level="debug")
    plan = plan_reload(cfg(), new)
    assert plan.live == ("dns.block_mode", "dns.upstreams", "log.level")
    assert plan.restart == ()
    assert plan.merged.dns.block_mode == "refused"
    assert plan.merged.log.level == "debug"


def test_revoking_a_key_is_live() -> None:
    keys = [{"kid": "mci-1", "public_key": "mci-1.pub", "revoked": True}]
    plan = plan_reload(cfg(), cfg(issuers=[{"id": "mci", "keys": keys}]))
    assert plan.live == ("issuers",)
    assert plan.merged.issuers[0].keys[0].revoked


def test_settings_that_need_a_restart_are_named_and_not_taken_over() -> None:
    new = cfg(api__listen="127.0.0.1:9443", dns__workers=4, dns__block_ttl=30)
    plan = plan_reload(cfg(), new)
    assert plan.restart == ("api.listen", "dns.workers")
    assert plan.live == ("dns.block_ttl",)
    assert str(plan.merged.api.listen) == "127.0.0.1:8443"
    assert plan.merged.dns.workers == 1


def test_block_mode_waits_for_a_restart_when_the_rpz_zone_follows_it() -> None:
    rpz = {"enabled": True, "notify": []}
    plan = plan_reload(cfg(rpz=rpz), cfg(rpz=rpz, dns__block_mode="sinkhole", dns__block_ttl=5))
    assert plan.restart == ("dns.block_mode",)
    assert plan.live == ("dns.block_ttl",)
    assert plan.merged.dns.block_mode == "nxdomain"


def test_every_routes_setting_waits_for_a_restart() -> None:
    old = cfg(routes={"enabled": True})
    new = cfg(routes={"enabled": True, "table": 667, "type": "prohibit", "protocol": 251})
    plan = plan_reload(old, new)
    assert plan.restart == ("routes.protocol", "routes.table", "routes.type")
    assert plan.live == ()
    assert (plan.merged.routes.table, plan.merged.routes.type) == (666, "blackhole")
