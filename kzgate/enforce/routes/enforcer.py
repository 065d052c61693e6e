"""The routes enforcer: every restricted prefix is a sink route in kzgate's own table.

BIRD's kernel protocol learns the table and announces it to the routers as
RTBH routes (configs/bird-rtbh.conf). Each route carries kzgate's protocol
number (``routes.protocol``), and every read, delete and drift check is
limited to that number and table, so kzgate never touches a route it did not
make: an add never replaces a route of the same prefix that another protocol
put in the table (EXCL: EEXIST); such a prefix is left to that route and
shown in ``status()["routes"]["foreign_held"]``. Fail closed: ``close``
leaves the routes; only a diff's removals and a reconcile's surplus are ever
deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network
from itertools import islice

from kzgate.config import RoutesConfig
from kzgate.enforce.base import Enforcer, StartError
from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.routes.decode import Key
from kzgate.enforce.routes.drift import DriftDetector, Monitor, open_monitor_socket
from kzgate.enforce.routes.errors import RoutesError
from kzgate.enforce.routes.netlink import PACE, Change, Pace, RouteSocket, open_socket
from kzgate.enforce.routes.wire import AF_INET, AF_INET6, ROUTE_TYPES, RTM_DELROUTE, RTM_NEWROUTE
from kzgate.metrics import ROUTES, Collector, Reading, by_label
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import IPNetwork

log = logging.getLogger("kzgate.enforce.routes")

FAMILIES = ("ipv4", "ipv6")
_GONE = frozenset({errno.ESRCH})  # a delete of a route already gone: the table is as wanted
FOREIGN_SHOWN = 20  # prefixes held by others' routes named in the status


def _family(net: IPNetwork) -> str:
    return "ipv4" if type(net) is IPv4Network else "ipv6"


def _key(net: IPNetwork) -> Key:
    family = AF_INET if type(net) is IPv4Network else AF_INET6
    return (family, int(net.network_address), net.prefixlen)


def _network(key: Key) -> IPNetwork:
    family, address, length = key
    return IPv4Network((address, length)) if family == AF_INET else IPv6Network((address, length))


def _count(nets: Iterable[IPNetwork]) -> dict[str, int]:
    out = dict.fromkeys(FAMILIES, 0)
    for net in nets:
        out[_family(net)] += 1
    return out


def _describe(failed: Mapping[int, int], changes: list[Change], what: str) -> str:
    codes = sorted({errno.errorcode.get(code, str(code)) for code in failed.values()})
    first = [str(changes[i][1]) for i in sorted(failed)[:5]]
    return (
        f"the kernel refused {len(failed)} route {what}(s) ({', '.join(codes)}): {', '.join(first)}"
    )


class RoutesEnforcer(Enforcer):
    """Keeps routing table ``routes.table`` equal to the effective state's prefixes."""

    name = "routes"

    def __init__(
        self,
        cfg: RoutesConfig,
        *,
        on_drift: Callable[[], None] | None = None,
        pace: Pace | None = PACE,
    ) -> None:
        self.cfg = cfg
        self.rtype = ROUTE_TYPES[cfg.type]
        self.on_drift = on_drift
        self.pace = pace
        self.drift_seen = 0
        self.last_drift: dt.datetime | None = None
        self._held: dict[IPNetwork, int] = {}  # prefix -> route type, as the kernel last confirmed
        self._counts = _count(())
        # Wanted prefixes that another protocol's route holds in our table (EEXIST on add).
        self._foreign: dict[IPNetwork, None] = {}
        self._lock = asyncio.Lock()
        self._writer: RouteSocket | None = None
        self._monitor: Monitor | None = None
        self._repair: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self, on_drift: Callable[[], None] | None = None) -> None:
        """Open the writer and the monitor (in ``routes.netns``); StartError if it cannot."""
        if on_drift is not None:
            self.on_drift = on_drift
        loop = asyncio.get_running_loop()
        try:
            writer, monitor = await asyncio.to_thread(run_in_netns, self.cfg.netns, self._open)
        except OSError as exc:
            raise StartError(f"routes: cannot open rtnetlink: {exc}") from None
        self._writer = writer
        detector = DriftDetector(self.cfg.table, self.cfg.protocol, lambda: self._held)
        self._monitor = Monitor(monitor, detector, self._drifted, loop)

    def _open(self) -> tuple[RouteSocket, socket.socket]:
        writer = RouteSocket(open_socket())
        try:
            return writer, open_monitor_socket(self.cfg.protocol, writer.portid)
        except BaseException:
            writer.sock.close()
            raise

    async def close(self) -> None:
        """Stop watching and close the sockets; the routes stay (fail closed)."""
        if self._repair is not None:
            self._repair.cancel()
            await asyncio.gather(self._repair, return_exceptions=True)
        if self._monitor is not None:
            self._monitor.close()
        if self._writer is not None:
            self._writer.sock.close()
        self._writer = self._monitor = None

    # -- the Enforcer interface -----------------------------------------------

    async def apply(self, diff: Diff) -> None:
        """Delete the removed prefixes' routes, then add the added ones; RoutesError on refusal."""
        if not (diff.prefixes_added or diff.prefixes_removed):
            return
        async with self._lock:
            writer = self._need_writer()
            gone = [
                (RTM_DELROUTE, net, self._held.get(net, self.rtype))
                for net in diff.prefixes_removed
            ]
            new = [(RTM_NEWROUTE, net, self.rtype) for net in diff.prefixes_added]
            # an add never replaces (EXCL): a route of ours of another type goes first
            gone += [
                (RTM_DELROUTE, net, rtype)
                for net in diff.prefixes_added
                if (rtype := self._held.get(net, self.rtype)) != self.rtype
            ]
            await asyncio.to_thread(self._write, writer, gone, new)

    async def reconcile(self, state: State) -> Diff:
        """Dump our routes (this table, our protocol), then add and delete the difference."""
        async with self._lock:
            writer = self._need_writer()
            return await asyncio.to_thread(self._reconcile, writer, state.prefixes)

    def _reconcile(self, writer: RouteSocket, wanted: Mapping[IPNetwork, InstructionRef]) -> Diff:
        present = writer.dump(self.cfg.table, self.cfg.protocol)
        # Compared by key: an ipaddress object per dumped route would cost ~1.5 s per 1M.
        held: dict[IPNetwork, int] = {}
        gone: list[Change] = []
        new: list[Change] = []
        if not present:  # an empty table (a first start): every wanted prefix is new
            new = [(RTM_NEWROUTE, net, self.rtype) for net in wanted]
        for net in wanted if present else ():
            rtype = present.pop(_key(net), None)
            if rtype is None:
                new.append((RTM_NEWROUTE, net, self.rtype))
                continue
            held[net] = rtype
            if rtype != self.rtype:  # ours of another type: deleted and added again (EXCL)
                gone.append((RTM_DELROUTE, net, rtype))
                new.append((RTM_NEWROUTE, net, self.rtype))
        surplus = [(_network(key), rtype) for key, rtype in present.items()]
        gone += [(RTM_DELROUTE, net, rtype) for net, rtype in surplus]
        held.update(surplus)
        self._held, self._counts = held, _count(held)
        self._foreign = {}  # every wanted prefix not ours is tried again below
        from_empty = not held and not gone
        self._write(writer, gone, new)  # fills held (it is self._held)
        foreign = self._foreign
        if from_empty and not foreign:
            # From empty, everything wanted was added: shared, not rebuilt (each
            # lookup would hash an ipaddress object in Python, ~0.6 µs apiece).
            added: Mapping[IPNetwork, InstructionRef] = wanted
        else:
            added = {net: wanted[net] for _, net, _ in new if not foreign or net not in foreign}
        return Diff(
            prefixes_added=added,
            prefixes_removed=frozenset(net for net, _ in surplus),
        )

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: any IPv4 or IPv6 prefix, the default route too, is a route."""
        return Diff()

    # -- metrics and status -----------------------------------------------------

    def collectors(self) -> list[Collector]:
        return [Reading(ROUTES, lambda: by_label(self.route_counts()))]

    def status(self) -> dict[str, object]:
        foreign = self._foreign  # replaced, never changed, by a write: safe to iterate here
        return {
            "routes": {
                "table": self.cfg.table,
                "protocol": self.cfg.protocol,
                "type": self.cfg.type,
                "routes": self.route_counts(),
                "drift_seen": self.drift_seen,
                "foreign_held": {
                    "count": len(foreign),
                    "prefixes": [str(net) for net in islice(foreign, FOREIGN_SHOWN)],
                },
                "last_drift": self.last_drift.isoformat() if self.last_drift else None,
            }
        }

    def route_counts(self) -> dict[str, int]:
        """Routes per family that the kernel confirmed (no kernel read)."""
        return dict(self._counts)

    # -- internals --------------------------------------------------------------

    def _need_writer(self) -> RouteSocket:
        if self._writer is None:
            raise RoutesError("the routes enforcer is not started")
        return self._writer

    def _write(self, writer: RouteSocket, gone: list[Change], new: list[Change]) -> None:
        """Deletes, then adds, paced together; ``_held`` follows what the kernel acked.

        Runs in a thread. ``_held`` is changed in place (a copy of 1M entries
        would cost more than a small diff's netlink exchange); the monitor on
        the loop only looks single prefixes up in it, and the counts that a
        scrape reads are kept beside it.
        """
        changes = gone + new
        failed = writer.write(changes, self.cfg.table, self.cfg.protocol, self.pace, ignore=_GONE)
        held, counts, foreign = self._held, dict(self._counts), dict(self._foreign)
        taken: list[IPNetwork] = []
        # Each dict operation hashes an ipaddress object in Python (~0.6 µs): at
        # 1M routes every one left out of this loop saves about half a second.
        for i, (kind, net, rtype) in enumerate(changes):
            code = failed.get(i) if failed else None
            if kind == RTM_DELROUTE:
                if foreign:
                    foreign.pop(net, None)  # no longer wanted, or wanted with another type
                if code is None and held.pop(net, None) is not None:
                    counts[_family(net)] -= 1
            elif code is None:
                if foreign:
                    foreign.pop(net, None)
                size = len(held)
                held[net] = rtype
                if len(held) != size:
                    counts[_family(net)] += 1
            elif code == errno.EEXIST:
                del failed[i]
                if net not in held:
                    # Another protocol's route of this prefix is in the table:
                    # it is not ours to replace. Not an error: retrying (the
                    # repair loop) would meet the same route for ever.
                    foreign[net] = None
                    taken.append(net)
        self._counts, self._foreign = counts, foreign
        if taken:
            log.warning(
                "%d prefix(es) left to another protocol's route in table %d (%d in all): %s",
                len(taken),
                self.cfg.table,
                len(foreign),
                ", ".join(str(net) for net in taken[:5]),
            )
        if failed:
            raise RoutesError(_describe(failed, changes, "change"))

    def _drifted(self) -> None:
        self.drift_seen += 1
        self.last_drift = dt.datetime.now(dt.UTC)
        log.warning(
            "a route of ours in table %d was changed by someone else; repairing", self.cfg.table
        )
        if self.on_drift is not None:
            self.on_drift()
        elif self._repair is None or self._repair.done():
            self._repair = asyncio.create_task(self._self_repair(), name="routes-self-repair")

    async def _self_repair(self) -> None:
        # Without a daemon to ask, what we hold is the best state we know.
        try:
            async with self._lock:  # no writer thread changes _held while it is copied
                held = dict.fromkeys(self._held, InstructionRef("kzgate", "self-repair", "-"))
            await self.reconcile(State({}, held))
        except Exception:
            log.exception("routes self-repair failed")
