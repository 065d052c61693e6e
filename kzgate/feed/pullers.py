"""Every issuer's feed puller: built from the config, started, reloaded, stopped;
their status and their metrics, in one place for the daemon.

A feed's settings take effect on reload (SIGHUP) without a restart: a feed
added, changed or removed starts, replaces or stops that issuer's puller only;
one whose new source cannot be set up (its CA or client key cannot be read)
keeps the running puller and says so in the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kzgate.config import FeedConfig, IssuerConfig
from kzgate.enforce.base import StartError
from kzgate.feed.judge import FEED_STATES, PULL_OUTCOMES
from kzgate.feed.ports import FeedSink, FeedSource
from kzgate.feed.puller import FeedPuller
from kzgate.metrics import (
    FEED_HEAD_SEQ,
    FEED_HELD_SEQ,
    FEED_PULLS,
    FEED_STATE,
    Collector,
    Counts,
    Labels,
    Reading,
)
from kzgate.protocol.trust import TrustStore

log = logging.getLogger("kzgate.feed")

# What building a source can fail with: a CA or key file that cannot be read or used.
SETUP_ERRORS = (OSError, ssl.SSLError, ValueError)


class FeedPullers:
    """The pullers of every issuer with a ``feed``, by issuer id."""

    def __init__(
        self,
        sink: FeedSink,
        trust: Callable[[], TrustStore],
        make_source: Callable[[FeedConfig], FeedSource],
        *,
        clock: Callable[[], dt.datetime],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sink = sink
        self.trust = trust
        self.make_source = make_source
        self.clock = clock
        self.rand = rand
        # Owned here, not by a puller: a counter must not restart when a reload
        # replaces an issuer's puller.
        self.pulls = Counts(FEED_PULLS)
        self._running: dict[str, tuple[FeedConfig, FeedPuller]] = {}
        self._hooked = False

    async def start(self, issuers: Iterable[IssuerConfig]) -> None:
        """Start a puller per issuer with a feed; StartError when one cannot be set up."""
        for issuer in issuers:
            if issuer.feed is None:
                continue
            try:
                source = self.make_source(issuer.feed)
            except SETUP_ERRORS as exc:
                await self.close()
                raise StartError(
                    f"issuer {issuer.id}: feed {issuer.feed.url}: cannot set up: {exc}"
                ) from None
            self._launch(issuer.id, issuer.feed, source)

    async def reload(self, issuers: Iterable[IssuerConfig]) -> None:
        wanted = {i.id: i.feed for i in issuers if i.feed is not None}
        for iss, feed in wanted.items():
            current = self._running.get(iss)
            if current is not None and current[0] == feed:
                continue
            try:
                source = self.make_source(feed)
            except SETUP_ERRORS as exc:
                kept = "; the running puller is kept" if current is not None else ""
                log.error("issuer %s: feed %s: cannot set up: %s%s", iss, feed.url, exc, kept)
                continue
            if current is not None:
                await current[1].close()
            self._launch(iss, feed, source)
            log.info("issuer %s: feed %s %s", iss, feed.url, "replaced" if current else "started")
        for iss in sorted(set(self._running) - set(wanted)):
            await self._running.pop(iss)[1].close()
            log.info("issuer %s: feed stopped (no longer configured)", iss)

    async def close(self) -> None:
        for _, puller in self._running.values():
            await puller.close()
        self._running.clear()

    def _launch(self, iss: str, feed: FeedConfig, source: FeedSource) -> None:
        puller = FeedPuller(
            iss,
            source,
            self.sink,
            self.trust,
            interval=feed.interval,
            wait=feed.wait,
            clock=self.clock,
            rand=self.rand,
            pulls=self.pulls,
        )
        for outcome in PULL_OUTCOMES:  # exported at 0 from the start, for increase()
            self.pulls.counts.setdefault((iss, outcome), 0)
        if not self._hooked:
            # Hooked on the first feed only: a daemon without feeds asks nothing of the sink.
            self.sink.on_pushed(self._pushed)
            self._hooked = True
        self._running[iss] = (feed, puller)
        puller.start()

    def _pushed(self, iss: str, seq: int) -> None:
        running = self._running.get(iss)
        if running is not None:
            running[1].pushed(seq)

    # -- what is shown --------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        """Per issuer, its FeedStatus as a dict (GET /status, `kzgate status`)."""
        return {iss: self._running[iss][1].status.to_dict() for iss in sorted(self._running)}

    def collectors(self) -> list[Collector]:
        return [
            Reading(FEED_HEAD_SEQ, self._head_seqs),
            Reading(FEED_HELD_SEQ, self._held_seqs),
            Reading(FEED_STATE, self._states),
            self.pulls,
        ]

    def _statuses(self) -> Mapping[str, Any]:
        return {iss: self._running[iss][1].status for iss in sorted(self._running)}

    def _head_seqs(self) -> dict[Labels, float]:
        # No sample before a head is accepted: an unknown seq is not seq 0.
        return {
            (iss,): float(s.head_seq)
            for iss, s in self._statuses().items()
            if s.head_seq is not None
        }

    def _held_seqs(self) -> dict[Labels, float]:
        return {(iss,): float(s.held_seq) for iss, s in self._statuses().items()}

    def _states(self) -> dict[Labels, float]:
        return {
            (iss, state): 1.0 if s.state == state else 0.0
            for iss, s in self._statuses().items()
            for state in FEED_STATES
        }
