"""DNS counters as Prometheus metrics, summed over the worker processes.

The hot path only bumps plain ints (DnsStats) and bucket counts (UpstreamTimer);
a collector turns snapshots of them into metrics at scrape time. Workers send
their snapshots to the control process, which adds them up; it also counts the
workers' crashes and which engine each runs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kzgate.dns.types import VERDICTS, DnsStats

UPSTREAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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
    def __init__(self, read: Callable[[], DnsSnapshot]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        queries = CounterMetricFamily(
            "kzgate_dns_queries", "DNS queries answered, by verdict.", labels=["verdict"]
        )
        for verdict in VERDICTS:
            queries.add_metric([verdict], snap.verdicts.get(verdict, 0))
        yield queries
        hits = CounterMetricFamily("kzgate_dns_cache_hits", "DNS answers served from the cache.")
        hits.add_metric([], snap.cache_hits)
        yield hits
        cumulative, buckets = 0, []
        for bound, count in zip(
            (*UPSTREAM_BUCKETS, float("inf")), snap.upstream_counts, strict=True
        ):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        upstream = HistogramMetricFamily(
            "kzgate_dns_upstream_seconds", "Round trip to the upstream resolvers."
        )
        upstream.add_metric([], buckets, snap.upstream_total)
        yield upstream


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    crashes: int  # worker deaths the pool did not ask for, since start
    engines: dict[str, int]  # "c" | "python" -> worker slots running it


ENGINES = ("c", "python")


class WorkerCollector(Collector):
    def __init__(self, read: Callable[[], WorkerCounts]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        counts = self._read()
        crashes = CounterMetricFamily(
            "kzgate_dns_worker_crashes",
            "DNS worker processes that died unasked (each is forked again).",
        )
        crashes.add_metric([], counts.crashes)
        yield crashes
        workers = GaugeMetricFamily(
            "kzgate_dns_workers",
            "DNS worker processes by engine: c (the C fast path in front of the Python "
            "engine) or python (pure Python: not built, or after repeated crashes).",
            labels=["engine"],
        )
        for engine in ENGINES:
            workers.add_metric([engine], counts.engines.get(engine, 0))
        yield workers


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
