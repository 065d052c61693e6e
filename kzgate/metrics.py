"""Every metric kzgate exports, declared once here, and the one way values reach them.

The pattern: each family (name, help, type, labels) is declared in this module
and nowhere else; names and labels are a contract (DESIGN.md, "Metrics").
Values are plain numbers kept by whoever knows them: counted on the event loop
(``Counts``, ``Timings``), or read at scrape time from where they live
(``Reading``: the register, the kernel, the DNS workers' reports). A component
hands its collectors over through its ``collectors()`` method (an enforcer's
is part of its lifecycle, enforce/base.py); the daemon registers them. So a
gauge of stored state can never drift from the store, and the hot paths bump
ints, never a client library's locks.

Labels take bounded values only: never a domain or an address.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)

# Re-exported: the rest of kzgate speaks to the client library only through this module.
from prometheus_client.core import Metric as Metric
from prometheus_client.registry import Collector as Collector
from prometheus_client.utils import floatToGoString

from kzgate import __version__

Kind = Literal["counter", "gauge", "histogram", "info"]
Labels = tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """One metric family of the contract. A counter's name is given without ``_total``."""

    name: str
    help: str
    kind: Kind
    labels: Labels = ()
    buckets: tuple[float, ...] = ()  # a histogram's upper bounds; +Inf is implied

    def metric(self, values: Mapping[Labels, float]) -> Metric:
        """The family with one sample per label tuple (counter or gauge), in the given order."""
        out: CounterMetricFamily | GaugeMetricFamily
        if self.kind == "counter":
            out = CounterMetricFamily(self.name, self.help, labels=self.labels)
        elif self.kind == "gauge":
            out = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        else:
            raise TypeError(f"{self.name} is a {self.kind}, not a counter or gauge")
        for labels, value in values.items():
            out.add_metric(list(labels), value)
        return out

    def histogram(self, values: Mapping[Labels, tuple[Sequence[int], float]]) -> Metric:
        """The family from per-bucket counts (not cumulative; the last is +Inf) and a sum."""
        if self.kind != "histogram":
            raise TypeError(f"{self.name} is a {self.kind}, not a histogram")
        out = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        bounds = [*map(floatToGoString, self.buckets), "+Inf"]
        for labels, (counts, total) in values.items():
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            out.add_metric(list(labels), buckets, total)
        return out

    def info(self, value: Mapping[str, str]) -> Metric:
        if self.kind != "info":
            raise TypeError(f"{self.name} is a {self.kind}, not an info")
        return InfoMetricFamily(self.name, self.help, value=dict(value))


APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# -- the contract --------------------------------------------------------------------

# intake (pipeline.py)
TASKS = Family(
    "kzgate_tasks",
    "Tasks received, by type and outcome (applied, accepted, pending, cancelled, "
    "duplicate, or the error code).",
    "counter",
    ("type", "outcome"),
)
TASK_APPLY_SECONDS = Family(
    "kzgate_task_apply_seconds",
    "Time from receiving a task to its enforcement in every backend.",
    "histogram",
    buckets=APPLY_BUCKETS,
)
BUILD = Family("kzgate_build", "kzgate build information.", "info")

# the register, read at scrape time (register/readmodel.py)
INSTRUCTIONS_ACTIVE = Family(
    "kzgate_instructions_active", "Instructions in force (stored, not resumed).", "gauge"
)
TARGETS_ACTIVE = Family(
    "kzgate_targets_active", "Targets of active instructions, by kind.", "gauge", ("kind",)
)
SEQ_GAPS = Family(
    "kzgate_seq_gaps", "Sequence numbers not yet received, per issuer.", "gauge", ("issuer",)
)

# every enforcer (enforce/set.py)
ENFORCER_ERRORS = Family(
    "kzgate_enforcer_errors", "Failed applies or reconciliations.", "counter", ("enforcer",)
)
ENFORCER_DRIFT_REPAIRS = Family(
    "kzgate_enforcer_drift_repairs",
    "Reconciliations that found and repaired a difference.",
    "counter",
    ("enforcer",),
)
NOT_ENFORCED_TARGETS = Family(
    "kzgate_not_enforced_targets",
    "Active targets an enforcer cannot represent and leaves out (the other "
    "enforcers still enforce them), by enforcer.",
    "gauge",
    ("enforcer",),
)

# every listener (the API's, the metrics', DNS, RPZ)
LISTENER_REFUSALS = Family(
    "kzgate_listener_refusals",
    "Connections, requests and queries a listener's limits refused or cut off.",
    "counter",
    ("listener", "reason"),
)

# DNS (dns/telemetry.py, from the workers' reports)
DNS_QUERIES = Family(
    "kzgate_dns_queries", "DNS queries answered, by verdict.", "counter", ("verdict",)
)
DNS_CACHE_HITS = Family("kzgate_dns_cache_hits", "DNS answers served from the cache.", "counter")
DNS_UPSTREAM_SECONDS = Family(
    "kzgate_dns_upstream_seconds",
    "Round trip to the upstream resolvers.",
    "histogram",
    buckets=UPSTREAM_BUCKETS,
)
DNS_WORKER_CRASHES = Family(
    "kzgate_dns_worker_crashes",
    "DNS worker processes that died unasked (each is forked again).",
    "counter",
)
DNS_WORKERS = Family(
    "kzgate_dns_workers",
    "DNS worker processes by engine: c (the C fast path in front of the Python "
    "engine) or python (pure Python: not built, or after repeated crashes).",
    "gauge",
    ("engine",),
)

# nftables (enforce/nft/)
NFT_ELEMENTS = Family(
    "kzgate_nft_elements", "Prefixes in kzgate's nftables sets.", "gauge", ("family",)
)
NFT_DROPPED_PACKETS = Family(
    "kzgate_nft_dropped_packets",
    "Packets dropped (or rejected) by kzgate's rules, by family.",
    "counter",
    ("family",),
)

# the routes enforcer (enforce/routes/)
ROUTES = Family(
    "kzgate_routes", "Routes in kzgate's kernel routing table, by family.", "gauge", ("family",)
)

# the RPZ primary (rpz/metrics.py)
RPZ_SERIAL = Family("kzgate_rpz_serial", "SOA serial of the RPZ zone.", "gauge")
RPZ_TRANSFERS = Family(
    "kzgate_rpz_transfers",
    "Zone transfers answered, by format served and outcome.",
    "counter",
    ("type", "outcome"),
)
RPZ_NOTIFY = Family(
    "kzgate_rpz_notify",
    "NOTIFY messages sent, acknowledged, and given up on.",
    "counter",
    ("outcome",),
)

# the feed puller (feed/pullers.py); states and outcomes are feed/judge.py's
# FEED_STATES and PULL_OUTCOMES, the issuer label an issuer with a feed.
FEED_HEAD_SEQ = Family(
    "kzgate_feed_head_seq",
    "Seq of the last accepted head of the issuer's feed.",
    "gauge",
    ("issuer",),
)
FEED_HELD_SEQ = Family(
    "kzgate_feed_held_seq",
    "Highest seq of the issuer held without a gap.",
    "gauge",
    ("issuer",),
)
FEED_STATE = Family(
    "kzgate_feed_state",
    "State of the issuer's feed: 1 for the current state (in_sync, behind, diverged, "
    "stale, rollback, unreachable), 0 for the others.",
    "gauge",
    ("issuer", "state"),
)
FEED_PULLS = Family(
    "kzgate_feed_pulls",
    "Pulls from the issuer's feed (rounds and long polls), by outcome.",
    "counter",
    ("issuer", "outcome"),
)

# probes (probes/prober.py): kind is probes.model.PLACE_KINDS, outcome OUTCOMES,
# place a Place.name (a configured listener or resolver, or a kernel kind)
LIFT_VERIFY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PROBE_CHECKS = Family(
    "kzgate_probe_checks",
    "Probe checks (one target at one place), by place kind and outcome (pass, fail, unreachable).",
    "counter",
    ("kind", "outcome"),
)
PROBE_BLOCK_FAILURES = Family(
    "kzgate_probe_block_failures",
    "Probe checks of a target expected blocked that found it answered or passing, by place kind.",
    "counter",
    ("kind",),
)
PROBE_ROUND_FAILURES = Family(
    "kzgate_probe_round_failures",
    "Failed checks in the last probe round, per place.",
    "gauge",
    ("place",),
)
PROBE_LIFT_VERIFY_SECONDS = Family(
    "kzgate_probe_lift_verify_seconds",
    "Time from a resume's receipt to its targets checked lifted at every place.",
    "histogram",
    buckets=LIFT_VERIFY_BUCKETS,
)
PROBE_LIFT_PENDING_SECONDS = Family(
    "kzgate_probe_lift_pending_seconds",
    "Age (from its receipt) of the oldest resume still being checked lifted; 0 when none.",
    "gauge",
)
PROBE_LIFTS_UNVERIFIED = Family(
    "kzgate_probe_lifts_unverified",
    "Resumes given up on: not checked lifted everywhere within 5 minutes of the receipt.",
    "counter",
)
PROBE_FAULTS = Family(
    "kzgate_probe_faults",
    "Faults inside the prober (caught and logged; intake and enforcers go on).",
    "counter",
)

# kzgate_listener_refusals_total{listener,reason}: what each listener's limits turned
# away or cut off (README, "Listener limits"). Both labels come from this table only.
REFUSAL_REASONS: Mapping[str, tuple[str, ...]] = {
    "dns": (
        "connections",  # a new TCP connection while full and none could be evicted
        "per_client",  # a new TCP connection from a client already at its cap
        "evicted",  # an idle TCP connection closed to let a new one in
        "read_timeout",  # a TCP query begun (length sent) but not finished in time
        "write_timeout",  # a TCP client that did not read its answers in time
        "pending_upstream",  # SERVFAIL at once: too many queries waiting on upstreams
        "pending_per_client",  # SERVFAIL at once: this client has too many waiting
    ),
    "rpz": (
        "connections",
        "per_client",
        "evicted",  # a connection never served (refusals only) closed to let a new one in
        "acl",  # a TCP connection or UDP query from outside rpz.allow_transfer
        "read_timeout",  # no query served within rpz.idle_timeout
        "write_timeout",
        "transfers",  # no transfer slot came free within rpz.idle_timeout
    ),
    "api": (
        "connections",
        "per_client",
        "evicted",
        "handshake",  # TLS handshake failed or not finished in time
        "header_timeout",  # no complete request head in time
        "body_timeout",  # a request body not complete in time
    ),
    "metrics": ("connections", "per_client", "evicted", "header_timeout", "body_timeout"),
}


# -- how values reach a family -------------------------------------------------------


class Counts(Collector):
    """A counter family's values: plain ints bumped on the event loop, read at scrape time.

    ``zeros`` are exported at 0 from the start, so that increase() in an alert
    rule sees the first event of a series.
    """

    def __init__(self, family: Family, zeros: Iterable[Labels] = ()) -> None:
        self.family = family
        self.counts: dict[Labels, int] = dict.fromkeys(zeros, 0)

    def inc(self, *labels: str) -> None:
        self.counts[labels] = self.counts.get(labels, 0) + 1

    def value(self, *labels: str) -> int:
        return self.counts.get(labels, 0)

    def collect(self) -> Iterator[Metric]:
        yield self.family.metric(dict(sorted(self.counts.items())))


class Timings(Collector):
    """A histogram family without labels: bucket counts bumped on the event loop."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.counts = [0] * (len(family.buckets) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.family.buckets, seconds)] += 1  # le: bound >= seconds
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        yield self.family.histogram({(): (self.counts, self.total)})


class Reading(Collector):
    """A counter or gauge family read at scrape time from where its values live."""

    def __init__(self, family: Family, read: Callable[[], Mapping[Labels, float]]) -> None:
        self.family = family
        self._read = read

    def collect(self) -> Iterator[Metric]:
        yield self.family.metric(self._read())


def by_label(values: Mapping[str, float]) -> dict[Labels, float]:
    """``{"ipv4": 3}`` → ``{("ipv4",): 3}``, sorted: a one-label family's values."""
    return {(key,): value for key, value in sorted(values.items())}


class Refusals:
    """One listener's refusal counts: plain ints bumped on the I/O path, read at scrape time."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def read(self) -> Mapping[str, int]:
        return self.counts


class RefusalCollector(Collector):
    """kzgate_listener_refusals_total, summed from every listener's counts (DNS: its workers')."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, Callable[[], Mapping[str, int]]]] = []

    def watch(self, listener: str, read: Callable[[], Mapping[str, int]]) -> None:
        self._sources.append((listener, read))

    def counter(self, listener: str) -> Refusals:
        """A new count table for ``listener``, watched from now on."""
        counts = Refusals()
        self.watch(listener, counts.read)
        return counts

    def collect(self) -> Iterator[Metric]:
        # zeros for every known pair, so rate() works from the first scrape
        totals = {(name, r): 0 for name, reasons in REFUSAL_REASONS.items() for r in reasons}
        for listener, read in self._sources:
            for reason, count in read().items():
                totals[listener, reason] = totals.get((listener, reason), 0) + count
        yield LISTENER_REFUSALS.metric(dict(sorted(totals.items())))


class BuildInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        yield BUILD.info({"version": __version__})


class Metrics:
    """The daemon's registry, and the intake's own counts (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tasks = Counts(TASKS)
        self.apply_seconds = Timings(TASK_APPLY_SECONDS)
        self.refusals = RefusalCollector()
        self.register(self.tasks, self.apply_seconds, BuildInfo(), self.refusals)

    def register(self, *collectors: Collector) -> None:
        for collector in collectors:
            self.registry.register(collector)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every registered family, and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
