"""One DNS worker's resolver: engine, upstream client and listeners, wired together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kzgate.config import DnsConfig, HostPort
from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.server import DnsServer, Limits
from kzgate.dns.telemetry import DnsSnapshot, UpstreamTimer
from kzgate.dns.types import BlockSettings, DnsStats
from kzgate.dns.upstream import Upstreams
from kzgate.policy import PolicyIndex

UPSTREAM_GRACE_SECONDS = 10.0


def block_settings(cfg: DnsConfig) -> BlockSettings:
    return BlockSettings(
        mode=cfg.block_mode,
        ttl=cfg.block_ttl,
        sinkhole_ipv4=cfg.sinkhole_ipv4,
        sinkhole_ipv6=cfg.sinkhole_ipv6,
    )


class LocalDns:
    """One resolver instance over a PolicyIndex that the caller keeps current."""

    def __init__(
        self,
        index: PolicyIndex,
        cfg: DnsConfig,
        listen: Sequence[HostPort] | None = None,
        *,
        fast: FastModule | None = FAST,
    ) -> None:
        self.stats = DnsStats()
        self.timer = UpstreamTimer()
        self.engine = Engine(index, block_settings(cfg), stats=self.stats)
        self.upstreams = Upstreams(
            [(u.host, u.port) for u in cfg.upstreams], observe=self.timer.observe
        )
        self.fast = fast
        # fast=None: every UDP query through the Python engine (a worker that
        # crashed too often in the C fast path, see crashes.py).
        self.server = DnsServer(
            self.engine, self.upstreams, listen or cfg.listen, limits=Limits.of(cfg), fast=fast
        )

    async def start(self) -> list[tuple[str, int]]:
        await self.upstreams.start()
        return await self.server.start()

    async def close(self) -> None:
        await self.server.close()
        await self.upstreams.close()

    def snapshot(self) -> DnsSnapshot:
        return DnsSnapshot.of(self.stats, self.timer)

    async def set_settings(self, settings: BlockSettings) -> None:
        self.engine.settings = settings

    async def set_upstreams(self, servers: Sequence[HostPort]) -> None:
        fresh = Upstreams([(u.host, u.port) for u in servers], observe=self.timer.observe)
        await fresh.start()
        old, self.upstreams = self.upstreams, fresh
        self.server.use_upstreams(fresh)
        # Let queries already waiting on the old sockets finish before closing them.
        asyncio.get_running_loop().call_later(
            UPSTREAM_GRACE_SECONDS, lambda: asyncio.ensure_future(old.close())
        )
