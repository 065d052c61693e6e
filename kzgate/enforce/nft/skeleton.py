"""Our table's skeleton (the table, its sets, chains and rules), written by ``nft -f``.

It is small and rare, and nft says clearly what is wrong; the elements go
another way (one netlink batch, enforcer.py), because nft re-reads the whole
set before each element change (minutes at 100k elements).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kzgate.config import NftConfig
from kzgate.enforce.nft.drift import Monitor
from kzgate.enforce.nft.encode import INTERVALS, ElementKeys
from kzgate.enforce.nft.errors import NftError

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


# By IP version: each prefix goes to the set of its version.
SETS = {
    4: NftSet("blocked_v4", "ipv4", "ip daddr", INTERVALS),
    6: NftSet("blocked_v6", "ipv6", "ip6 daddr", INTERVALS),
}


def skeleton(cfg: NftConfig) -> str:
    """The nft script that creates what is missing and leaves elements alone.

    ``add`` keeps an existing table and its elements (fail closed across
    restarts). In full mode each hook chain is flushed and refilled, which makes
    the rules exactly the configured ones; chains for hooks no longer configured
    are created-if-missing, flushed and deleted, the only idempotent delete nft
    1.0.6 has. In set-only mode chains are the operator's and are not touched.
    """
    t = f"inet {cfg.table}"
    lines = [f"add table {t}", *(s.declaration(t) for s in SETS.values())]
    if cfg.mode == "set-only":
        return "\n".join(lines) + "\n"
    verdict = "drop" if cfg.action == "drop" else "reject with icmpx admin-prohibited"
    sets = SETS.values()
    for hook in ("forward", "output"):
        if hook in cfg.hooks:
            lines += [
                f"add chain {t} {hook} {{ type filter hook {hook} priority {PRIORITY}; "
                "policy accept; }",
                f"flush chain {t} {hook}",
                *(f"add rule {t} {hook} {s.daddr} @{s.name} counter {verdict}" for s in sets),
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
