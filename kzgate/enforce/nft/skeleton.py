"""Our table's skeleton (the table, its sets, chains and rules), written by ``nft -f``.

It is small and rare, and nft says clearly what is wrong; the elements go
another way (one netlink batch, enforcer.py), because nft re-reads the whole
set before each element change (minutes at 100k elements).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from ipaddress import IPv4Network

from kzgate.config import NftConfig
from kzgate.enforce.nft.drift import Monitor
from kzgate.enforce.nft.encode import HOSTS, INTERVALS, ElementKeys
from kzgate.enforce.nft.errors import NftError
from kzgate.names import IPNetwork

NFT_TIMEOUT = 30.0
PRIORITY = -10  # before the usual filter chains (0), so that our counters see every blocked packet


@dataclass(frozen=True, slots=True)
class NftSet:
    """One set of our table: its name, its key type, and how its elements are encoded."""

    name: str
    family: str  # "ipv4" or "ipv6": the key type is <family>_addr; also the metric label
    daddr: str  # what a rule matches against the set: "ip daddr", "ip6 daddr"
    keys: ElementKeys

    def declaration(self, table: str) -> str:
        flags = " flags interval;" if self.keys.interval else ""
        return f"add set {table} {self.name} {{ type {self.family}_addr;{flags} }}"

    def rule(self, verdict: str) -> str:
        """The rule body that applies ``verdict`` to packets for this set's addresses."""
        return f"{self.daddr} @{self.name} counter {verdict}"


# Host addresses (/32, /128) go to hash sets, whose commit costs the diff;
# proper prefixes to interval sets, whose commit walks the whole set. The
# interval sets keep the names they had when they held everything.
SETS = (
    NftSet("blocked_hosts_v4", "ipv4", "ip daddr", HOSTS),
    NftSet("blocked_v4", "ipv4", "ip daddr", INTERVALS),
    NftSet("blocked_hosts_v6", "ipv6", "ip6 daddr", HOSTS),
    NftSet("blocked_v6", "ipv6", "ip6 daddr", INTERVALS),
)


def slot(net: IPNetwork) -> int:
    """The index in ``SETS`` of the set that holds ``net`` (called once per element of a reload)."""
    if type(net) is IPv4Network:
        return 0 if net.prefixlen == 32 else 1
    return 2 if net.prefixlen == 128 else 3


def verdict_of(cfg: NftConfig) -> str:
    return "drop" if cfg.action == "drop" else "reject with icmpx admin-prohibited"


def operator_rules(cfg: NftConfig) -> list[str]:
    """What an operator's own chain in our table needs in ``set-only`` mode: one rule per set."""
    return [s.rule(verdict_of(cfg)) for s in SETS]


def skeleton(cfg: NftConfig) -> str:
    """The nft script that creates what is missing and leaves elements alone.

    ``add`` keeps an existing table and its elements (fail closed across
    restarts). In full mode each hook chain is flushed and refilled, which makes
    the rules exactly the configured ones; chains for hooks no longer configured
    are created-if-missing, flushed and deleted, the only idempotent delete nft
    1.0.6 has. In set-only mode chains are the operator's and are not touched.

    Over a table of the old layout (interval sets that held hosts too, no host
    sets), this one transaction adds the host sets and, in full mode, the rules
    that match them; the hosts stay in the interval sets until the enforcer's
    reconcile moves them in one batch, so no restricted address passes between.
    """
    t = f"inet {cfg.table}"
    lines = [f"add table {t}", *(s.declaration(t) for s in SETS)]
    if cfg.mode == "set-only":
        return "\n".join(lines) + "\n"
    for hook in ("forward", "output"):
        if hook in cfg.hooks:
            lines += [
                f"add chain {t} {hook} {{ type filter hook {hook} priority {PRIORITY}; "
                "policy accept; }",
                f"flush chain {t} {hook}",
                *(f"add rule {t} {hook} {rule}" for rule in operator_rules(cfg)),
            ]
        else:
            lines += [
                f"add chain {t} {hook}",
                f"flush chain {t} {hook}",
                f"delete chain {t} {hook}",
            ]
    return "\n".join(lines) + "\n"


def nft_command(netns: str | None) -> list[str]:
    """The argv that runs ``nft -f -`` in network namespace ``netns``."""
    base = ["nft", "-f", "-"]
    return base if netns is None else ["ip", "netns", "exec", netns, *base]


async def write_skeleton(cfg: NftConfig, monitor: Monitor | None) -> None:
    """Run ``nft -f`` on ``skeleton(cfg)``; what it changes is not drift to ``monitor``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *nft_command(cfg.netns),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NftError(f"cannot run nft: {exc}") from exc
    if monitor is not None:
        monitor.ours(proc.pid)
    try:
        _, err = await asyncio.wait_for(proc.communicate(skeleton(cfg).encode()), NFT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NftError(f"nft did not finish within {NFT_TIMEOUT:g} s") from None
    finally:
        if monitor is not None:
            monitor.forget_later(proc.pid)
    if proc.returncode != 0:
        raise NftError(f"nft -f failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
