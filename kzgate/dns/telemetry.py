"""DNS counters as Prometheus metrics, summed over the worker processes.

The hot path only bumps plain ints (DnsStats) and bucket counts (UpstreamTimer);
a collector turns snapshots of them into the families of kzgate/metrics.py at
scrape time. Workers send their snapshots to the control process, which adds
them up; it also counts the workers' crashes and which engine each runs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from kzgate.dns.types import VERDICTS, DnsStats
from kzgate.metrics import (
    DNS_CACHE_HITS,
    DNS_QUERIES,
    DNS_UPSTREAM_SECONDS,
    DNS_WORKER_CRASHES,
    DNS_WORKERS,
    UPSTREAM_BUCKETS,
    Collector,
    Metric,
)


@dataclass(slots=True)
class UpstreamTimer:
    """A histogram of upstream round trips, cheap enough to call per query."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(UPSTREAM_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(UPSTREAM_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(frozen=True, slots=True)
class DnsSnapshot:
    verdicts: dict[str, int]
    cache_hits: int
    upstream_counts: tuple[int, ...]
    upstream_total: float
    refusals: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def of(stats: DnsStats, timer: UpstreamTimer) -> DnsSnapshot:
        return DnsSnapshot(
            dict(stats.verdicts),
            stats.cache_hits,
            tuple(timer.counts),
            timer.total,
            dict(stats.refusals),
        )

    @staticmethod
    def zero() -> DnsSnapshot:
        return DnsSnapshot(dict.fromkeys(VERDICTS, 0), 0, (0,) * (len(UPSTREAM_BUCKETS) + 1), 0.0)

    def __add__(self, other: DnsSnapshot) -> DnsSnapshot:
        return DnsSnapshot(
            {k: self.verdicts.get(k, 0) + other.verdicts.get(k, 0) for k in VERDICTS},
            self.cache_hits + other.cache_hits,
            tuple(a + b for a, b in zip(self.upstream_counts, other.upstream_counts, strict=True)),
            self.upstream_total + other.upstream_total,
            {
                k: self.refusals.get(k, 0) + other.refusals.get(k, 0)
                for k in self.refusals.keys() | other.refusals.keys()
            },
        )


def total(snapshots: Iterable[DnsSnapshot]) -> DnsSnapshot:
    out = DnsSnapshot.zero()
    for snap in snapshots:
        out = out + snap
    return out


class DnsCollector(Collector):
    """The workers' query counters, summed (the snapshot the pool keeps)."""

    def __init__(self, read: Callable[[], DnsSnapshot]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        yield DNS_QUERIES.metric({(v,): snap.verdicts.get(v, 0) for v in VERDICTS})
        yield DNS_CACHE_HITS.metric({(): snap.cache_hits})
        yield DNS_UPSTREAM_SECONDS.histogram({(): (snap.upstream_counts, snap.upstream_total)})


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    crashes: int  # worker deaths the pool did not ask for, since start
    engines: dict[str, int]  # "c" | "python" -> worker slots running it


ENGINES = ("c", "python")


class WorkerCollector(Collector):
    """Crashes since start, and worker slots per engine."""

    def __init__(self, read: Callable[[], WorkerCounts]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        counts = self._read()
        yield DNS_WORKER_CRASHES.metric({(): counts.crashes})
        yield DNS_WORKERS.metric({(e,): counts.engines.get(e, 0) for e in ENGINES})
