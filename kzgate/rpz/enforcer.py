"""The RPZ primary as an enforcer: diffs change the zone, secondaries are NOTIFYed.

Serial: the zone starts at max(unix time, last serial served + 1) and each
change adds 1. The last serial is written durably (``serial_file``) before a
secondary can hear of it, so a restart never serves a serial a secondary may
already hold with other content: IXFR differences are computed only from this
run's journal, whose serials all lie above anything served before.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import time
from pathlib import Path

import dns.name
import dns.tsig

from kzgate.config import Config, RpzConfig
from kzgate.enforce.base import Enforcer, Listener, StartError
from kzgate.metrics import Collector
from kzgate.model import Diff, State
from kzgate.rpz.answer import Answer, answer, soa_rrset
from kzgate.rpz.journal import Journal
from kzgate.rpz.metrics import RpzMetrics
from kzgate.rpz.notify import Notifier
from kzgate.rpz.xfr import XfrServer
from kzgate.rpz.zone import Change, Zone, uncarried, zone_params

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


class RpzEnforcer(Enforcer):
    name = "rpz"

    def __init__(
        self,
        cfg: RpzConfig,
        *,
        block_mode: str,
        sinkhole_ipv4: ipaddress.IPv4Address,
        sinkhole_ipv6: ipaddress.IPv6Address,
        serial_file: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.key = load_key(cfg)
        params = zone_params(cfg, block_mode, sinkhole_ipv4, sinkhole_ipv6)
        self.serial_file = serial_file
        last = _read_serial(serial_file)
        self.zone = Zone(params, max(int(time.time()), last + 1))
        self.journal = Journal(cfg.ixfr_history)
        self.metrics = RpzMetrics(lambda: self.serial)
        self.notifier = Notifier(cfg.notify, self.key, self.metrics.notified)
        self.server = XfrServer(cfg, self._respond, self.metrics.transfer)
        self.bound: list[tuple[str, int]] = []

    @classmethod
    def from_config(cls, cfg: Config) -> RpzEnforcer:
        """The primary of ``cfg.rpz``: the block answers of ``cfg.dns``, the serial kept
        beside the register; StartError when its TSIG secret or serial cannot be read."""
        try:
            return cls(
                cfg.rpz,
                block_mode=cfg.dns.block_mode,
                sinkhole_ipv4=cfg.dns.sinkhole_ipv4,
                sinkhole_ipv6=cfg.dns.sinkhole_ipv6,
                serial_file=cfg.register.path.with_name(cfg.register.path.name + ".rpz-serial"),
            )
        except RpzError as exc:
            raise StartError(f"{cfg.source}: rpz: {exc}") from None

    @property
    def serial(self) -> int:
        return self.zone.serial

    async def listen(self) -> list[tuple[str, int]]:
        """Bind TCP and UDP on each rpz.listen address; the (host, port) pairs bound."""
        self.bound = await self.server.start()
        return self.bound

    # -- the lifecycle ---------------------------------------------------------------

    async def serve(self) -> None:
        """Listen only now, after the start-up reconcile: a secondary must never transfer
        the zone before it holds the register's state (that would briefly lift every block)."""
        try:
            await self.listen()
        except OSError as exc:
            raise StartError(f"cannot listen for rpz: {exc.strerror or exc}") from None
        # The start-up reconcile's NOTIFY went out before we listened: say it again.
        self.announce()

    def listeners(self) -> dict[str, Listener]:
        if not self.bound:
            return {}
        return {"rpz": Listener(self.bound[0], self.server.refusals.read)}

    def collectors(self) -> list[Collector]:
        return self.metrics.collectors()

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

    def uncarried(self, diff: Diff) -> Diff:
        """Names whose ``*.`` owner would pass 255 octets (and, in theory, rpz-ip triggers)."""
        return uncarried(self.zone.params, diff)

    async def close(self) -> None:
        await self.server.close()
        await self.notifier.close()

    def announce(self) -> None:
        """NOTIFY the current serial (once the listener is bound, after start-up)."""
        self.notifier.notify(soa_rrset(self.zone))

    def _changed(self, change: Change) -> None:
        _write_serial(self.serial_file, self.zone.serial)
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


def _read_serial(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return int(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise RpzError(f"{path}: unreadable RPZ serial ({exc})") from None


def _write_serial(path: Path | None, serial: int) -> None:
    if path is None:
        return
    # Durable before any secondary hears of this serial (atomic replace, fsync).
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii") as out:
        out.write(f"{serial}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
