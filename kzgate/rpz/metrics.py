"""The RPZ primary's counts, for the families of kzgate/metrics.py; labels are bounded enums."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

from kzgate.metrics import RPZ_NOTIFY, RPZ_SERIAL, RPZ_TRANSFERS, Collector, Counts, Reading

TRANSFER_TYPES = ("axfr", "ixfr")
TRANSFER_OUTCOMES = ("ok", "refused", "error")
NOTIFY_OUTCOMES = ("sent", "acked", "failed")


class RpzMetrics:
    def __init__(self, serial: Callable[[], float]) -> None:
        # zeros exported from the start, so rate() works from the first scrape
        self.transfers = Counts(RPZ_TRANSFERS, product(TRANSFER_TYPES, TRANSFER_OUTCOMES))
        self.notify = Counts(RPZ_NOTIFY, ((outcome,) for outcome in NOTIFY_OUTCOMES))
        # read at scrape time, so it can never disagree with the zone
        self.serial = Reading(RPZ_SERIAL, lambda: {(): serial()})

    def transfer(self, kind: str, outcome: str) -> None:
        if kind in TRANSFER_TYPES:  # SOA queries and junk are not transfers
            self.transfers.inc(kind, outcome)

    def notified(self, outcome: str) -> None:
        self.notify.inc(outcome)

    def collectors(self) -> list[Collector]:
        return [self.serial, self.transfers, self.notify]
