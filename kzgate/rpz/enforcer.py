"""The RPZ primary as an enforcer: diffs change the zone, secondaries are NOTIFYed.

Serial: nothing is persisted. The zone starts at the wall clock's unix time,
and each change adds 1. A restart therefore begins above the last serial served
as long as the changes since the previous start averaged under one per second
(the clock outran the +1 steps); a secondary holding a higher serial after a
burst-then-restart keeps its copy until our serial passes it (RFC 1982 compare),
at most as many seconds as the burst was longer than its wall time. Unix time
fits 32-bit serials until 2106.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time

import dns.name
import dns.tsig
from prometheus_client import CollectorRegistry

from kzgate.config import RpzConfig
from kzgate.model import Diff, State
from kzgate.rpz.answer import Answer, answer, soa_rrset
from kzgate.rpz.journal import Journal
from kzgate.rpz.metrics import RpzMetrics
from kzgate.rpz.notify import Notifier
from kzgate.rpz.xfr import XfrServer
from kzgate.rpz.zone import Change, Zone, zone_params

HUGE_CHANGE = 1000  # past this, a change as big as the zone resets the IXFR history


class RpzError(Exception):
    """The RPZ primary cannot start (a TSIG secret file that is missing or not base64)."""


def load_key(cfg: RpzConfig) -> dns.tsig.Key | None:
    if cfg.tsig is None:
        return None
    path = cfg.tsig.secret_file
    try:
        text = path.read_text(encoding="ascii").strip()
        base64.b64decode(text, validate=True)
    except (OSError, UnicodeDecodeError, binascii.Error) as exc:
        raise RpzError(f"rpz.tsig.secret_file: {path}: not readable base64 text ({exc})") from None
    return dns.tsig.Key(dns.name.from_text(cfg.tsig.name), text, cfg.tsig.algorithm)


class RpzEnforcer:
    name = "rpz"

    def __init__(
        self,
        cfg: RpzConfig,
        *,
        block_mode: str,
        sinkhole_ipv4: ipaddress.IPv4Address,
        sinkhole_ipv6: ipaddress.IPv6Address,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.cfg = cfg
        self.key = load_key(cfg)
        params = zone_params(cfg, block_mode, sinkhole_ipv4, sinkhole_ipv6)
        self.zone = Zone(params, int(time.time()))
        self.journal = Journal(cfg.ixfr_history)
        # a private registry when none is given: two enforcers never collide
        self.metrics = RpzMetrics(metrics_registry or CollectorRegistry(), lambda: self.serial)
        self.notifier = Notifier(cfg.notify, self.key, self.metrics.notified)
        self.server = XfrServer(cfg.listen, self._respond, self.metrics.transfer)

    @property
    def serial(self) -> int:
        return self.zone.serial

    async def start(self) -> list[tuple[str, int]]:
        """Bind TCP and UDP on each rpz.listen address; the (host, port) pairs bound."""
        return await self.server.start()

    async def apply(self, diff: Diff) -> None:
        change = self.zone.change(diff)
        if change is not None:
            self._changed(change)

    async def reconcile(self, state: State) -> Diff:
        change = self.zone.replace(state)
        if change is None:
            return Diff()
        self._changed(change)
        return Diff(
            domains_added={d: state.domains[d] for d in change.domains_added},
            domains_removed=frozenset(change.domains_removed),
            prefixes_added={p: state.prefixes[p] for p in change.prefixes_added},
            prefixes_removed=frozenset(change.prefixes_removed),
        )

    async def close(self) -> None:
        await self.server.close()
        await self.notifier.close()

    def _changed(self, change: Change) -> None:
        if change.size() > HUGE_CHANGE and change.size() >= len(self.zone):
            self.journal.reset()  # an IXFR would be no smaller than the AXFR
        else:
            self.journal.record(change)
        self.notifier.notify(soa_rrset(self.zone))

    def _respond(self, data: bytes, peer: str, tcp: bool) -> Answer | None:
        return answer(
            data,
            peer,
            tcp=tcp,
            zone=self.zone,
            journal=self.journal,
            acl=self.cfg.allow_transfer,
            key=self.key,
            now=int(time.time()),
        )
