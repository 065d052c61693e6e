"""Where probes ask, from the config: kzgate's listeners, the operator's resolvers, the kernel.

Shared by the daemon's rounds (kzgate/wiring.py) and ``kzgate verify``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kzgate.config import Config
from kzgate.config.hostport import HostPort
from kzgate.probes.model import Check, ProbeTarget
from kzgate.probes.sweep import KernelProbe, Places, sweep
from kzgate.probes.verdict import BlockAnswer, block_answer_for_kzgate, block_answer_for_resolvers

_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def reachable(hp: HostPort) -> HostPort:
    """A listener on every address is asked on loopback."""
    return HostPort(_WILDCARD.get(hp.host, hp.host), hp.port)


def places_for(cfg: Config, warn: Callable[[str], None]) -> tuple[Places, KernelProbe | None]:
    """The configured places, and the kernel probe when nftables or routes is on and it opens.

    The connect() place needs ``output`` in ``nftables.hooks``: with forward only,
    the host's own packets are not filtered and a blocked address would look open.
    """
    kzgate = []
    for hp in cfg.dns.listen if cfg.dns.enabled else ():
        if hp.port == 0:  # a port the kernel picks when the daemon binds: not known here
            warn(f"dns.listen {hp.host}:0: the daemon's port is not in the config; not checked")
        else:
            kzgate.append(reachable(hp))
    nft = cfg.nftables if cfg.nftables.enabled else None
    routes = cfg.routes if cfg.routes.enabled else None
    connect = nft is not None and "output" in nft.hooks
    kernel: KernelProbe | None = None
    if nft is not None or routes is not None:
        from kzgate.probes.kernel import Kernel

        try:
            kernel = Kernel(nft, routes)
        except OSError as exc:
            warn(f"cannot open the kernel probe ({exc}): nftables, routes and connect() unchecked")
            nft, routes, connect = None, None, False
    return Places(kzgate, list(cfg.probes.resolvers), nft, routes, connect), kernel


def blocks_for(cfg: Config) -> tuple[BlockAnswer, BlockAnswer]:
    """What a block looks like at kzgate's listeners, and at the operator's resolvers."""
    return block_answer_for_kzgate(cfg.dns), block_answer_for_resolvers(cfg.dns, cfg.rpz)


class ConfiguredSweep:
    """``sweep.sweep`` bound to the configured places, at ``rate`` targets a second."""

    def __init__(self, cfg: Config, rate: float, warn: Callable[[str], None]) -> None:
        self.places, self.kernel = places_for(cfg, warn)
        self.blocks = blocks_for(cfg)
        self.rate = rate

    async def __call__(self, targets: Sequence[ProbeTarget]) -> list[Check]:
        return await sweep(targets, self.places, self.kernel, self.blocks, rate=self.rate)

    def close(self) -> None:
        close = getattr(self.kernel, "close", None)
        if close is not None:
            close()
