"""Every metric kzgate exports, defined once, with bounded labels only.

Gauges that describe stored state are not set by the code paths that change
it: a collector reads them at scrape time from a snapshot callable, so they can
never drift from the register.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kzgate import __version__

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

APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class StoredState:
    """What the register holds, as the scrape-time collector reports it."""

    instructions_active: int
    targets_active: Mapping[str, int]  # kind -> count
    seq_gaps: Mapping[str, int]  # issuer -> missing sequence numbers
    extra: Mapping[str, float] = field(default_factory=dict)


class StoredStateCollector(Collector):
    def __init__(self, read: Callable[[], StoredState]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        active = GaugeMetricFamily(
            "kzgate_instructions_active", "Instructions in force (stored, not resumed)."
        )
        active.add_metric([], state.instructions_active)
        yield active
        targets = GaugeMetricFamily(
            "kzgate_targets_active", "Targets of active instructions, by kind.", labels=["kind"]
        )
        for kind, count in sorted(state.targets_active.items()):
            targets.add_metric([kind], count)
        yield targets
        gaps = GaugeMetricFamily(
            "kzgate_seq_gaps",
            "Sequence numbers not yet received, per issuer.",
            labels=["issuer"],
        )
        for issuer, count in sorted(state.seq_gaps.items()):
            gaps.add_metric([issuer], count)
        yield gaps


class NotEnforcedCollector(Collector):
    """Targets each enforcer cannot represent, read at scrape time (one series per enforcer)."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        left_out = GaugeMetricFamily(
            "kzgate_not_enforced_targets",
            "Active targets an enforcer cannot represent and leaves out (the other "
            "enforcers still enforce them), by enforcer.",
            labels=["enforcer"],
        )
        for enforcer, count in sorted(self._read().items()):
            left_out.add_metric([enforcer], count)
        yield left_out


class NftCollector(Collector):
    """Set sizes (as last written) and drop counters (read from the kernel) at scrape time."""

    def __init__(
        self, elements: Callable[[], Mapping[str, int]], drops: Callable[[], Mapping[str, int]]
    ) -> None:
        self._elements = elements
        self._drops = drops

    def collect(self) -> Iterator[Metric]:
        elements = GaugeMetricFamily(
            "kzgate_nft_elements", "Prefixes in kzgate's nftables sets.", labels=["family"]
        )
        for family, count in sorted(self._elements().items()):
            elements.add_metric([family], count)
        yield elements
        drops = CounterMetricFamily(
            "kzgate_nft_dropped_packets",
            "Packets dropped (or rejected) by kzgate's rules, by family.",
            labels=["family"],
        )
        try:
            counters = self._drops()
        except Exception:  # a scrape must not fail because the kernel read did
            counters = {}
        for family, count in sorted(counters.items()):
            drops.add_metric([family], count)
        yield drops


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
        family = CounterMetricFamily(
            "kzgate_listener_refusals",
            "Connections, requests and queries a listener's limits refused or cut off.",
            labels=["listener", "reason"],
        )
        for labels, count in sorted(totals.items()):
            family.add_metric(list(labels), count)
        yield family


class Metrics:
    """The daemon's metrics in one registry (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # *_created gauges are not part of the contract; they only add series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tasks = Counter(
            "kzgate_tasks",
            "Tasks received, by type and outcome (applied, accepted, pending, cancelled, "
            "duplicate, or the error code).",
            ["type", "outcome"],
            registry=r,
        )
        self.apply_seconds = Histogram(
            "kzgate_task_apply_seconds",
            "Time from receiving a task to its enforcement in every backend.",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.enforcer_errors = Counter(
            "kzgate_enforcer_errors", "Failed applies or reconciliations.", ["enforcer"], registry=r
        )
        self.drift_repairs = Counter(
            "kzgate_enforcer_drift_repairs",
            "Reconciliations that found and repaired a difference.",
            ["enforcer"],
            registry=r,
        )
        build = Info("kzgate_build", "kzgate build information.", registry=r)
        build.info({"version": __version__})
        self.refusals = RefusalCollector()
        r.register(self.refusals)

    def watch_stored_state(self, read: Callable[[], StoredState]) -> None:
        self.registry.register(StoredStateCollector(read))

    def watch_not_enforced(self, read: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(NotEnforcedCollector(read))
