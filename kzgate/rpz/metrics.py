"""The RPZ primary's metrics, defined once; labels are bounded enums only."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

TRANSFER_TYPES = ("axfr", "ixfr")
TRANSFER_OUTCOMES = ("ok", "refused", "error")
NOTIFY_OUTCOMES = ("sent", "acked", "failed")


class RpzMetrics:
    def __init__(self, registry: CollectorRegistry, serial: Callable[[], float]) -> None:
        # read at scrape time, so it can never disagree with the zone
        self.serial = Gauge("kzgate_rpz_serial", "SOA serial of the RPZ zone.", registry=registry)
        self.serial.set_function(serial)
        self.transfers = Counter(
            "kzgate_rpz_transfers_total",
            "Zone transfers answered, by format served and outcome.",
            ["type", "outcome"],
            registry=registry,
        )
        self.notify = Counter(
            "kzgate_rpz_notify_total",
            "NOTIFY messages sent, acknowledged, and given up on.",
            ["outcome"],
            registry=registry,
        )
        for kind in TRANSFER_TYPES:  # export zeros, so rate() works from the first scrape
            for outcome in TRANSFER_OUTCOMES:
                self.transfers.labels(kind, outcome)
        for outcome in NOTIFY_OUTCOMES:
            self.notify.labels(outcome)

    def transfer(self, kind: str, outcome: str) -> None:
        if kind in TRANSFER_TYPES:  # SOA queries and junk are not transfers
            self.transfers.labels(kind, outcome).inc()

    def notified(self, outcome: str) -> None:
        self.notify.labels(outcome).inc()
