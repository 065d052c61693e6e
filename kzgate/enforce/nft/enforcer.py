"""The nftables enforcer: keeps our table's sets equal to the effective state's prefixes.

Fail closed: nothing here ever deletes the table or an element except a diff's
removals and reconcile's flush-and-refill, which is one atomic batch.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Network

from kzgate.config import NftConfig
from kzgate.enforce.base import Enforcer, StartError
from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.nft.decode import rule_counters
from kzgate.enforce.nft.drift import DriftDetector, Monitor, open_monitor_socket
from kzgate.enforce.nft.encode import BatchBuilder, getrule_dump
from kzgate.enforce.nft.errors import NftError
from kzgate.enforce.nft.netlink import Netlink, open_socket
from kzgate.enforce.nft.skeleton import SETS, operator_rules, slot, write_skeleton
from kzgate.metrics import NFT_DROPPED_PACKETS, NFT_ELEMENTS, Collector, Reading, by_label
from kzgate.model import Diff, InstructionRef, State, diff_between
from kzgate.names import IPNetwork

log = logging.getLogger("kzgate.enforce.nft")

ACK_RCVBUF = 32 * 1024 * 1024  # ~1,500 acks for a 1M reload, with room to spare
# Above this many prefixes a batch runs with the monitor deaf (Monitor.send_unheard).
QUIET_ABOVE = 5_000


def _split(nets: Iterable[IPNetwork]) -> list[list[IPNetwork]]:
    """``nets`` by the index of their set in ``SETS``."""
    out: list[list[IPNetwork]] = [[] for _ in SETS]
    for net in nets:
        out[slot(net)].append(net)
    return out


Labelled = tuple[list[IPNetwork], list[str]]  # prefixes and their labels, in step


def _labelled(items: Mapping[IPNetwork, InstructionRef]) -> list[Labelled]:
    """Prefixes and their labels by the index of their set in ``SETS``.

    A reload runs this over a million prefixes. It allocates no object the
    cyclic GC tracks (a (prefix, label) tuple each would trigger ~14 full
    collections, each walking the reload's unfrozen copy of the state: 0.4 s
    at 1M); ``slot`` is inlined; and labels are keyed by identity: hashing a
    frozen dataclass 1M times costs a second, and the register hands out one
    ref object per instruction.
    """
    labels: dict[int, str] = {}
    out: list[Labelled] = [([], []) for _ in SETS]
    (h4, h4l), (p4, p4l), (h6, h6l), (p6, p6l) = out
    for net, ref in items.items():
        label = labels.get(id(ref))
        if label is None:
            label = labels[id(ref)] = ref.label()
        if type(net) is IPv4Network:
            if net.prefixlen == 32:
                h4.append(net)
                h4l.append(label)
            else:
                p4.append(net)
                p4l.append(label)
        elif net.prefixlen == 128:
            h6.append(net)
            h6l.append(label)
        else:
            p6.append(net)
            p6l.append(label)
    return out


def unmatched_sets(per_set: Mapping[str, int]) -> list[str]:
    """Our sets that no rule looks up (``per_set``: the sets some rule looks up)."""
    return sorted({s.name for s in SETS} - set(per_set))


def by_family(per_set: Mapping[str, int]) -> dict[str, int]:
    """Per-set numbers summed by family, the metrics' label."""
    out = dict.fromkeys((s.family for s in SETS), 0)
    for s in SETS:
        out[s.family] += per_set.get(s.name, 0)
    return out


class NftEnforcer(Enforcer):
    """Keeps ``inet <table>``'s sets equal to the effective state's prefixes."""

    name = "nft"

    def __init__(self, cfg: NftConfig, *, on_drift: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.on_drift = on_drift
        self.drift_repairs = 0
        self._view: dict[IPNetwork, InstructionRef] = {}
        self._counts = dict.fromkeys((s.name for s in SETS), 0)
        self._lock = asyncio.Lock()
        self._query_lock = threading.Lock()
        self._batch: Netlink | None = None
        self._query: Netlink | None = None
        self._monitor: Monitor | None = None
        self._repair: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self, on_drift: Callable[[], None] | None = None) -> None:
        """Open the sockets (in ``cfg.netns``), start watching, create the skeleton if missing.

        ``on_drift``, when given, replaces the constructor's: someone changed
        our table or sets, so the enforcer set rewrites them from the register.
        """
        if on_drift is not None:
            self.on_drift = on_drift
        try:
            await self._open_and_watch()
        except (NftError, OSError) as exc:
            raise StartError(f"nftables: {exc}") from None

    async def _open_and_watch(self) -> None:
        loop = asyncio.get_running_loop()
        batch, query, monitor = await asyncio.to_thread(run_in_netns, self.cfg.netns, self._open)
        self._batch, self._query = batch, query
        detector = DriftDetector(self.cfg.table, batch.portid, watch_chains=self.cfg.mode == "full")
        self._monitor = Monitor(monitor, detector, self._drifted, loop)
        await write_skeleton(self.cfg, self._monitor)
        if self.cfg.mode == "set-only":
            await asyncio.to_thread(self._warn_unmatched)

    def _warn_unmatched(self) -> None:
        # An operator chain written for one set per family still matches only
        # the interval sets: the hosts would silently pass.
        unmatched = unmatched_sets(self._rule_drops())
        if unmatched:
            log.warning(
                "nftables set-only mode: no rule in table inet %s looks up %s, so what they "
                "hold is not dropped; a chain of yours in that table needs: %s",
                self.cfg.table,
                ", ".join(unmatched),
                "; ".join(operator_rules(self.cfg)),
            )

    def _open(self) -> tuple[Netlink, Netlink, socket.socket]:
        batch = Netlink(open_socket(ACK_RCVBUF))
        query = Netlink(open_socket(1 << 20))
        return batch, query, open_monitor_socket(batch.portid)

    async def close(self) -> None:
        """Stop watching and close the sockets; the table and its elements stay."""
        if self._repair is not None:
            self._repair.cancel()
            await asyncio.gather(self._repair, return_exceptions=True)
        if self._monitor is not None:
            self._monitor.close()
        for netlink in (self._batch, self._query):
            if netlink is not None:
                netlink.sock.close()
        self._batch = self._query = self._monitor = None

    # -- the Enforcer interface -----------------------------------------------

    async def apply(self, diff: Diff) -> None:
        """Deletes then adds, in one batch; NftDrift if the kernel disagrees with our view."""
        if not (diff.prefixes_added or diff.prefixes_removed):
            return
        async with self._lock:
            batch = self._need_batch()

            counts = dict(self._counts)

            def build_and_send() -> None:
                builder = BatchBuilder(self.cfg.table, batch.seq)
                removed = _split(diff.prefixes_removed)
                added = _labelled(diff.prefixes_added)
                # All deletes first: a /24 may replace a /32 of the same batch.
                for s, nets in zip(SETS, removed, strict=True):
                    builder.delete(s.name, nets, s.keys)
                    counts[s.name] -= len(nets)
                for s, (nets, labels) in zip(SETS, added, strict=True):
                    builder.add(s.name, zip(nets, labels, strict=True), s.keys)
                    counts[s.name] += len(nets)
                self._send(batch, builder, diff.size())

            await asyncio.to_thread(build_and_send)
            for net in diff.prefixes_removed:
                self._view.pop(net, None)
            self._view.update(diff.prefixes_added)
            # counted from the diff: a scan of a 1M view would cost more than the batch
            self._counts = counts

    async def reconcile(self, state: State) -> Diff:
        """Replace every set from ``state`` in one batch (flush + add), re-creating the skeleton.

        Reading a large set back costs about a minute of kernel time, so the
        returned Diff is the one between what we last wrote and ``state``, not
        the kernel's actual drift.
        """
        async with self._lock:
            batch = self._need_batch()
            await write_skeleton(self.cfg, self._monitor)
            wanted = dict(state.prefixes)
            counts: dict[str, int] = {}

            def build_and_send() -> None:
                builder = BatchBuilder(self.cfg.table, batch.seq)
                added = _labelled(wanted)
                for s in SETS:
                    builder.flush(s.name)
                for s, (nets, labels) in zip(SETS, added, strict=True):
                    builder.add(s.name, zip(nets, labels, strict=True), s.keys)
                    counts[s.name] = len(nets)
                # the flush makes a notification per element held, too
                self._send(batch, builder, len(wanted) + len(old))

            old = self._view

            def what_changed() -> Diff:
                if not old:  # the usual start-up: no need to hash 1M prefixes
                    return Diff(prefixes_added=wanted)
                return diff_between(State({}, old), State({}, wanted))

            # The diff is computed while the kernel runs the batch (send()
            # releases the GIL), so it costs no wall time.
            fixed, _ = await asyncio.gather(
                asyncio.to_thread(what_changed), asyncio.to_thread(build_and_send)
            )
            self._view = wanted
            self._counts = counts
            return fixed

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: any IPv4 or IPv6 host is a hash-set element, any other prefix an
        interval-set element, and an element's comment is cut to the kernel's 128
        bytes (encode.py), never refused."""
        return Diff()

    # -- metrics and status -----------------------------------------------------

    def collectors(self) -> list[Collector]:
        """Set sizes (as last written) and drop counters (read from the kernel) at scrape time."""
        return [
            Reading(NFT_ELEMENTS, lambda: by_label(self.element_counts())),
            Reading(NFT_DROPPED_PACKETS, lambda: by_label(self._drops_or_none())),
        ]

    def status(self) -> dict[str, object]:
        try:
            per_set: dict[str, int] | None = self._rule_drops()
        except Exception:  # a status must not fail because the kernel read did
            per_set = None
        out: dict[str, object] = {
            "elements": self.element_counts(),
            "sets": dict(self._counts),
            "dropped_packets": {} if per_set is None else by_family(per_set),
        }
        if self.cfg.mode == "set-only":
            # The operator's chains must match every set; say which ones none does.
            out["operator_rules"] = operator_rules(self.cfg)
            if per_set is not None:
                out["unmatched_sets"] = unmatched_sets(per_set)
        return {"nft": out}

    def _drops_or_none(self) -> dict[str, int]:
        try:
            return self.drop_counters()
        except Exception:  # a scrape or a status must not fail because the kernel read did
            return {}

    def element_counts(self) -> dict[str, int]:
        """Prefixes per family as last written (no kernel read)."""
        return by_family(self._counts)

    def drop_counters(self) -> dict[str, int]:
        """Packets dropped per family, summed from the counters of rules that look up our sets."""
        return by_family(self._rule_drops())

    def _rule_drops(self) -> dict[str, int]:
        """Packets counted per set by the rules of our table that look it up (only sets some
        rule looks up are keys)."""
        if self._query is None:
            raise NftError("the nft enforcer is not started")
        ours = {s.name for s in SETS}
        out: dict[str, int] = {}
        with self._query_lock:
            self._query.seq += 1
            dump = self._query.dump(getrule_dump(self.cfg.table, self._query.seq))
        for msg in dump:
            found = rule_counters(msg)
            if found is not None and found[1] in ours:
                out[found[1]] = out.get(found[1], 0) + found[2]
        return out

    # -- internals --------------------------------------------------------------

    def _need_batch(self) -> Netlink:
        if self._batch is None:
            raise NftError("the nft enforcer is not started")
        return self._batch

    def _send(self, batch: Netlink, builder: BatchBuilder, size: int) -> None:
        monitor, query = self._monitor, self._query
        if size <= QUIET_ABOVE or monitor is None or query is None:
            batch.transact(builder)
            return

        def generation() -> int:
            with self._query_lock:
                return query.generation()

        monitor.send_unheard(lambda: batch.transact(builder), generation)

    def _drifted(self) -> None:
        self.drift_repairs += 1
        log.warning("nftables table inet %s was changed by someone else; repairing", self.cfg.table)
        if self.on_drift is not None:
            self.on_drift()
        elif self._repair is None or self._repair.done():
            self._repair = asyncio.create_task(self._self_repair(), name="nft-self-repair")

    async def _self_repair(self) -> None:
        # Without a daemon to ask, what we last wrote is the best state we know.
        try:
            await self.reconcile(State({}, dict(self._view)))
        except Exception:
            log.exception("nftables self-repair failed")
