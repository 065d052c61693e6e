"""What a SIGHUP may change in a running daemon, and what needs a restart.

Pure: two Config values in, a plan out. The daemon applies the live part and
logs the rest, naming each setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kzgate.config import Config

# Dotted prefixes of the settings a running daemon takes over on reload.
LIVE = (
    "issuers",  # issuer keys, windows and revocations; feeds (feed/pullers.py replaces one)
    "dns.upstreams",
    "dns.block_mode",
    "dns.sinkhole_ipv4",
    "dns.sinkhole_ipv6",
    "dns.block_ttl",
    "api.rate_limit",
    "log.level",
    "log.format",
)
# Not live, on purpose: routes.* (a new table, protocol or type would leave the
# old routes behind, which only a start-up reconcile of the old table removes),
# nftables.* and rpz.* (sockets and the zone are built at start).


@dataclass(frozen=True)
class ReloadPlan:
    live: tuple[str, ...]  # changed, and applied now
    restart: tuple[str, ...]  # changed, but only a restart applies them
    merged: Config  # the running config after the reload: old values where a restart is needed


# The RPZ zone is rendered with these when its action follows the block mode; the
# fleet's zone and the built-in resolver must not disagree, so then they wait for a restart.
BLOCK_ACTION = ("dns.block_mode", "dns.sinkhole_ipv4", "dns.sinkhole_ipv6")


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    changed = sorted(_changed(_flatten(old), _flatten(new)))
    pinned = BLOCK_ACTION if old.rpz.enabled and old.rpz.action == "from_block_mode" else ()
    live = tuple(path for path in changed if _is_live(path) and path not in pinned)
    restart = tuple(path for path in changed if path not in live)
    source = old if pinned else new
    merged = dataclasses.replace(
        old,
        issuers=new.issuers,
        dns=dataclasses.replace(
            old.dns,
            upstreams=new.dns.upstreams,
            block_mode=source.dns.block_mode,
            sinkhole_ipv4=source.dns.sinkhole_ipv4,
            sinkhole_ipv6=source.dns.sinkhole_ipv6,
            block_ttl=new.dns.block_ttl,
        ),
        api=dataclasses.replace(old.api, rate_limit=new.api.rate_limit),
        log=new.log,
    )
    return ReloadPlan(live, restart, merged)


def _is_live(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in LIVE)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    # "issuers" is compared whole: a key added, removed or revoked is one change.
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def _flatten(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if section.name == "source":
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for item in dataclasses.fields(value):
                out[f"{section.name}.{item.name}"] = getattr(value, item.name)
        else:
            out[section.name] = value
    return out
