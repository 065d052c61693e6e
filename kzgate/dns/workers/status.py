"""What the pool says about its workers: `kzgate status` and the crash and engine counts."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

from kzgate.config import DnsConfig
from kzgate.dns.crashes import WorkerHealth
from kzgate.dns.fastpath import FAST
from kzgate.dns.telemetry import WorkerCounts
from kzgate.dns.workers.handle import WorkerHandle


def worker_counts(health: Sequence[WorkerHealth]) -> WorkerCounts:
    engines = collections.Counter[str](h.engine for h in health)
    return WorkerCounts(sum(h.crashes for h in health), dict(engines))


def pool_status(
    health: Sequence[WorkerHealth], workers: Mapping[int, WorkerHandle], cfg: DnsConfig
) -> dict[str, object]:
    """For `kzgate status`: each worker's process, engine and crashes."""
    rows = []
    for slot, slot_health in enumerate(health):
        worker = workers.get(slot)
        if worker is None or worker.dead:
            state = "down"  # waiting to be forked again
        else:
            state = "up" if worker.ready.done() else "starting"
        rows.append(
            {
                "slot": slot,
                "pid": worker.pid if worker is not None else None,
                "engine": slot_health.engine,
                "state": state,
                "crashes": slot_health.crashes,
            }
        )
    return {
        "dns": {
            "fast_path": "built" if FAST is not None else "not built",
            "crash_limit": cfg.crash_limit,
            "crash_window": cfg.crash_window,
            "workers": rows,
        }
    }
