"""STAND-INS, TO BE DELETED AT MERGE: P-core writes sample.py and sweep.py.

Only so that the daemon side (prober.py, ports.py, kzgate/wiring.py) imports
and type-checks on its own branch. Each raises NotImplementedError, which the
prober catches and counts as a fault: with these, probes.enabled runs no
probe at all. The integrator replaces the one import in
kzgate/wiring.py (``build_prober``) by kzgate.probes.sample / sweep and
deletes this file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence

from kzgate.config import Config
from kzgate.probes.model import Candidate, Check, ProbeTarget


def monitoring_start(today: dt.date, working_days: int = 15) -> dt.date:
    del today, working_days
    raise NotImplementedError("stand-in: kzgate.probes.sample.monitoring_start (P-core)")


def choose(
    candidates: Sequence[Candidate],
    n: int,
    round_no: int,
    blocked_name: Callable[[str], bool],
    blocked_address: Callable[[str], bool],
    since: dt.datetime,
) -> list[ProbeTarget]:
    del candidates, n, round_no, blocked_name, blocked_address, since
    raise NotImplementedError("stand-in: kzgate.probes.sample.choose (P-core)")


def targets_of(
    candidates: Iterable[Candidate],
    blocked_name: Callable[[str], bool],
    blocked_address: Callable[[str], bool],
) -> Iterator[ProbeTarget]:
    del candidates, blocked_name, blocked_address
    raise NotImplementedError("stand-in: kzgate.probes.sample.targets_of (P-core)")


async def sweep_for(cfg: Config, targets: Sequence[ProbeTarget]) -> list[Check]:
    """At merge: sweep.sweep(targets, Places(kzgate=list(cfg.dns.listen),
    resolvers=list(cfg.probes.resolvers), nft=cfg.nftables if enabled, routes=cfg.routes
    if enabled, connect="output" in cfg.nftables.hooks), Kernel(...) or None,
    (block_answer_for_kzgate(cfg.dns), block_answer_for_resolvers(cfg.dns, cfg.rpz)),
    rate=ROUND_RATE)."""
    raise NotImplementedError("stand-in: kzgate.probes.sweep.sweep (P-core)")
