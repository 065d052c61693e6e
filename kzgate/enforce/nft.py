"""The nftables enforcer: our own table, two interval sets, one netlink batch per change.

The skeleton (table, sets, chains, rules) is written by ``nft -f``: it is small
and rare, and nft says clearly what is wrong. Elements go straight to the
kernel as one netlink batch built by ``nftmsg``: nft re-reads the whole set
before each element change (minutes at 100k elements), the batch does not.

The sockets are plain ``socket.socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER)``:
a batch is one sendmsg of up to ~100 MB whose acks are all queued when it
returns, which pyroute2's NetlinkSocket (its own marshalling and receive loop)
adds nothing to but copies and per-message objects.

Fail closed: nothing here ever deletes the table or an element except a diff's
removals and reconcile's flush-and-refill, which is one atomic batch.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Network

from kzgate.config import NftConfig
from kzgate.enforce import nftmsg
from kzgate.enforce.base import Enforcer, StartError
from kzgate.enforce.netns import nft_command, run_in_netns
from kzgate.metrics import NFT_DROPPED_PACKETS, NFT_ELEMENTS, Collector, Reading, by_label
from kzgate.model import Diff, InstructionRef, State, diff_between
from kzgate.names import IPNetwork

log = logging.getLogger("kzgate.enforce.nft")

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
ACK_RCVBUF = 32 * 1024 * 1024  # ~1,500 acks for a 1M reload, with room to spare
MONITOR_RCVBUF = 8 * 1024 * 1024
NFT_TIMEOUT = 30.0
SETS = {4: "blocked_v4", 6: "blocked_v6"}
FAMILY_OF_SET = {"blocked_v4": "ipv4", "blocked_v6": "ipv6"}
# Above this many prefixes a batch runs with the monitor deaf (see _quiet).
QUIET_ABOVE = 5_000
PRIORITY = -10  # before the usual filter chains (0), so that our counters see every blocked packet


class NftError(Exception):
    """nftables refused a change, or could not be reached."""


class NftDrift(NftError):
    """The kernel's sets are not what kzgate last wrote (an element missing or already there)."""


def skeleton(cfg: NftConfig) -> str:
    """The nft script that creates what is missing and leaves elements alone.

    ``add`` keeps an existing table and its elements (fail closed across
    restarts). In full mode each hook chain is flushed and refilled, which makes
    the rules exactly the configured ones; chains for hooks no longer configured
    are created-if-missing, flushed and deleted, the only idempotent delete nft
    1.0.6 has. In set-only mode chains are the operator's and are not touched.
    """
    t = f"inet {cfg.table}"
    lines = [
        f"add table {t}",
        f"add set {t} blocked_v4 {{ type ipv4_addr; flags interval; }}",
        f"add set {t} blocked_v6 {{ type ipv6_addr; flags interval; }}",
    ]
    if cfg.mode == "set-only":
        return "\n".join(lines) + "\n"
    verdict = "drop" if cfg.action == "drop" else "reject with icmpx admin-prohibited"
    for hook in ("forward", "output"):
        if hook in cfg.hooks:
            lines += [
                f"add chain {t} {hook} {{ type filter hook {hook} priority {PRIORITY}; "
                "policy accept; }",
                f"flush chain {t} {hook}",
                f"add rule {t} {hook} ip daddr @blocked_v4 counter {verdict}",
                f"add rule {t} {hook} ip6 daddr @blocked_v6 counter {verdict}",
            ]
        else:
            lines += [
                f"add chain {t} {hook}",
                f"flush chain {t} {hook}",
                f"delete chain {t} {hook}",
            ]
    return "\n".join(lines) + "\n"


# --- sockets -------------------------------------------------------------------


def _open_socket(rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        # Errors echo only the failing message's header, plus the kernel's reason.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_buffer(sock: socket.socket, plain: int, force: int, size: int) -> None:
    # FORCE needs CAP_NET_ADMIN, which we have anyway; the plain option is
    # capped by net.core.[rw]mem_max. The kernel doubles the value given.
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def _drop_own_filter(sock: socket.socket, portid: int) -> None:
    """Drop, in the kernel, notifications caused by our own batch socket.

    A 1M-element reload makes ~2M element notifications; they would only fill
    the monitor's buffer. A transaction's notifications share one portid, and
    classic BPF reads nlmsg_pid (offset 12) big-endian, hence the byte swap.
    """
    swapped = int.from_bytes(portid.to_bytes(4, "little"), "big")
    code = [(0x20, 0, 0, 12), (0x15, 0, 1, swapped), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)]
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in code)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = struct.pack("HL", len(code), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


class _Netlink:
    """One batch socket: send a whole batch, then collect every answer it caused."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.portid: int = sock.getsockname()[0]
        self.seq = 0

    def transact(self, builder: nftmsg.BatchBuilder) -> None:
        data = b"".join(builder.finish())
        self.seq = builder.seq
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < len(data) + 4096:
            _set_buffer(self.sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, len(data) + 4096)
        self._drain()  # answers to an earlier, failed exchange must not be read as ours
        try:
            self.sock.send(data)
        except OSError as exc:
            raise NftError(f"netlink send of a {len(data)}-byte batch failed: {exc}") from exc
        # The kernel runs the batch inside send(): every answer is queued by now.
        acks: dict[int, nftmsg.Ack] = {}
        for msg in self._drain():
            if msg.kind == nftmsg.NLMSG_ERROR:
                ack = nftmsg.parse_ack(msg)
                acks[ack.seq] = ack
        _check(builder, acks)

    def _drain(self) -> list[nftmsg.Message]:
        out: list[nftmsg.Message] = []
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # answers lost: the outcome is unknown
                    raise NftError("netlink acks overflowed the receive buffer") from exc
                raise
            out.extend(nftmsg.messages(data))

    def generation(self) -> int:
        self.seq += 1
        for msg in self.dump(nftmsg.getgen_request(self.seq), until_one=True):
            gen = nftmsg.generation(msg)
            if gen is not None:
                return gen
        raise NftError("no answer to a ruleset generation request")

    def dump(
        self, request: bytes, timeout: float = 5.0, *, until_one: bool = False
    ) -> list[nftmsg.Message]:
        self._drain()
        self.sock.settimeout(timeout)
        try:
            self.sock.send(request)
            out: list[nftmsg.Message] = []
            while True:
                for msg in nftmsg.messages(self.sock.recv(1 << 20)):
                    if msg.kind == nftmsg.NLMSG_DONE:
                        return out
                    if msg.kind == nftmsg.NLMSG_ERROR:
                        ack = nftmsg.parse_ack(msg)
                        if ack.errno:
                            raise NftError(f"netlink dump failed: {ack.describe()}")
                        return out
                    out.append(msg)
                    if until_one:
                        return out
        finally:
            self.sock.settimeout(None)


def _check(builder: nftmsg.BatchBuilder, acks: Mapping[int, nftmsg.Ack]) -> None:
    """Raise unless every message was acked with success (else the kernel rolled all back)."""
    failed = [a for a in acks.values() if a.errno]
    if failed:
        codes = {a.errno for a in failed}
        detail = "; ".join(sorted({a.describe() for a in failed}))
        # ENOENT: an element (or the set, or the table) we believed present is
        # gone. EEXIST: one we believed absent is there, or overlaps one.
        if codes <= {errno.ENOENT, errno.EEXIST}:
            raise NftDrift(f"nftables batch rolled back, our view drifted: {detail}")
        if codes & {errno.EPERM, errno.EACCES}:
            raise NftError(f"nftables batch refused, CAP_NET_ADMIN needed: {detail}")
        raise NftError(f"nftables batch rolled back: {detail}")
    missing = [s for s in builder.acked if s not in acks]
    if missing:
        raise NftError(f"no answer to {len(missing)} of {len(builder.acked)} batch messages")


def _split(nets: Iterable[IPNetwork]) -> dict[int, list[IPNetwork]]:
    out: dict[int, list[IPNetwork]] = {4: [], 6: []}
    for net in nets:
        out[4 if type(net) is IPv4Network else 6].append(net)
    return out


def _labelled(items: Mapping[IPNetwork, InstructionRef]) -> dict[int, list[tuple[IPNetwork, str]]]:
    # Keyed by identity: hashing a frozen dataclass 1M times costs a second,
    # and the register hands out one ref object per instruction.
    labels: dict[int, str] = {}
    v4: list[tuple[IPNetwork, str]] = []
    v6: list[tuple[IPNetwork, str]] = []
    for net, ref in items.items():
        label = labels.get(id(ref))
        if label is None:
            label = labels[id(ref)] = ref.label()
        (v4 if type(net) is IPv4Network else v6).append((net, label))
    return {4: v4, 6: v6}


def _count(nets: Iterable[IPNetwork]) -> dict[str, int]:
    split = _split(nets)
    return {"ipv4": len(split[4]), "ipv6": len(split[6])}


# --- the enforcer --------------------------------------------------------------


class NftEnforcer(Enforcer):
    """Keeps ``inet <table>``'s sets equal to the effective state's prefixes."""

    name = "nft"

    def __init__(self, cfg: NftConfig, *, on_drift: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.on_drift = on_drift
        self.drift_repairs = 0
        self._view: dict[IPNetwork, InstructionRef] = {}
        self._counts = {"ipv4": 0, "ipv6": 0}
        self._lock = asyncio.Lock()
        self._query_lock = threading.Lock()
        self._batch: _Netlink | None = None
        self._query: _Netlink | None = None
        self._monitor: socket.socket | None = None
        self._detector: nftmsg.DriftDetector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
        self._loop = asyncio.get_running_loop()
        batch, query, monitor = await asyncio.to_thread(run_in_netns, self.cfg.netns, self._open)
        self._batch, self._query, self._monitor = batch, query, monitor
        self._detector = nftmsg.DriftDetector(
            self.cfg.table, batch.portid, watch_chains=self.cfg.mode == "full"
        )
        self._detector.own_pids.add(os.getpid())
        self._loop.add_reader(monitor.fileno(), self._on_notification)
        await self._ensure_skeleton()

    def _open(self) -> tuple[_Netlink, _Netlink, socket.socket]:
        batch = _Netlink(_open_socket(ACK_RCVBUF))
        query = _Netlink(_open_socket(1 << 20))
        monitor = _open_socket(MONITOR_RCVBUF)
        monitor.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, nftmsg.NFNLGRP_NFTABLES)
        _drop_own_filter(monitor, batch.portid)
        monitor.setblocking(False)
        return batch, query, monitor

    async def close(self) -> None:
        """Stop watching and close the sockets; the table and its elements stay."""
        if self._repair is not None:
            self._repair.cancel()
            await asyncio.gather(self._repair, return_exceptions=True)
        if self._monitor is not None and self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())
        socks = [self._monitor] + [n.sock if n else None for n in (self._batch, self._query)]
        for sock in socks:
            if sock is not None:
                sock.close()
        self._batch = self._query = self._monitor = None

    # -- the Enforcer interface -----------------------------------------------

    async def apply(self, diff: Diff) -> None:
        """Deletes then adds, in one batch; NftDrift if the kernel disagrees with our view."""
        if not (diff.prefixes_added or diff.prefixes_removed):
            return
        async with self._lock:
            batch = self._need_batch()

            def build_and_send() -> None:
                builder = nftmsg.BatchBuilder(self.cfg.table, batch.seq)
                removed = _split(diff.prefixes_removed)
                added = _labelled(diff.prefixes_added)
                for v in (4, 6):
                    builder.delete(SETS[v], removed[v])
                for v in (4, 6):
                    builder.add(SETS[v], added[v])
                self._send(batch, builder, diff.size())

            await asyncio.to_thread(build_and_send)
            for net in diff.prefixes_removed:
                self._view.pop(net, None)
            self._view.update(diff.prefixes_added)
            # counted from the diff: a scan of a 1M view would cost more than the batch
            gone, new = _count(diff.prefixes_removed), _count(diff.prefixes_added)
            self._counts = {k: self._counts[k] - gone[k] + new[k] for k in self._counts}

    async def reconcile(self, state: State) -> Diff:
        """Replace both sets from ``state`` in one batch (flush + add), re-creating the skeleton.

        Reading a large set back costs about a minute of kernel time, so the
        returned Diff is the one between what we last wrote and ``state``, not
        the kernel's actual drift.
        """
        async with self._lock:
            batch = self._need_batch()
            await self._ensure_skeleton()
            wanted = dict(state.prefixes)

            def build_and_send() -> None:
                builder = nftmsg.BatchBuilder(self.cfg.table, batch.seq)
                added = _labelled(wanted)
                for v in (4, 6):
                    builder.flush(SETS[v])
                    builder.add(SETS[v], added[v])
                self._send(batch, builder, len(wanted))

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
            self._counts = _count(wanted)
            return fixed

    def uncarried(self, diff: Diff) -> Diff:
        """Nothing: any IPv4 or IPv6 prefix is an element of an interval set, and an
        element's comment is cut to the kernel's 128 bytes (nftmsg), never refused."""
        return Diff()

    # -- metrics and status -----------------------------------------------------

    def collectors(self) -> list[Collector]:
        """Set sizes (as last written) and drop counters (read from the kernel) at scrape time."""
        return [
            Reading(NFT_ELEMENTS, lambda: by_label(self.element_counts())),
            Reading(NFT_DROPPED_PACKETS, lambda: by_label(self._drops_or_none())),
        ]

    def status(self) -> dict[str, object]:
        drops = self._drops_or_none()
        return {"nft": {"elements": self.element_counts(), "dropped_packets": drops}}

    def _drops_or_none(self) -> dict[str, int]:
        try:
            return self.drop_counters()
        except Exception:  # a scrape or a status must not fail because the kernel read did
            return {}

    def element_counts(self) -> dict[str, int]:
        """Prefixes per family as last written (no kernel read)."""
        return dict(self._counts)

    def drop_counters(self) -> dict[str, int]:
        """Packets dropped per family, summed from the counters of rules that look up our sets."""
        if self._query is None:
            raise NftError("the nft enforcer is not started")
        out = {"ipv4": 0, "ipv6": 0}
        with self._query_lock:
            self._query.seq += 1
            dump = self._query.dump(nftmsg.getrule_dump(self.cfg.table, self._query.seq))
        for msg in dump:
            found = nftmsg.rule_counters(msg)
            if found is not None and found[1] in FAMILY_OF_SET:
                out[FAMILY_OF_SET[found[1]]] += found[2]
        return out

    # -- internals --------------------------------------------------------------

    def _need_batch(self) -> _Netlink:
        if self._batch is None:
            raise NftError("the nft enforcer is not started")
        return self._batch

    def _send(self, batch: _Netlink, builder: nftmsg.BatchBuilder, size: int) -> None:
        if size <= QUIET_ABOVE or self._monitor is None or self._query is None:
            batch.transact(builder)
        else:
            self._quiet(batch, builder, self._monitor, self._query)

    def _quiet(
        self, batch: _Netlink, builder: nftmsg.BatchBuilder, monitor: socket.socket, query: _Netlink
    ) -> None:
        """Send a large batch while nobody of ours listens to notifications.

        While any socket listens to NFNLGRP_NFTABLES the kernel builds one
        notification per element (measured: most of a 1M reload's kernel time,
        even though our filter drops them). So the monitor leaves the group for
        the batch, and the generation id stands watch instead: if it moved by
        more than our own commit, someone else committed meanwhile, and that is
        treated as drift (perhaps needlessly; a repair is always safe).
        """
        with self._query_lock:
            before = query.generation()
        monitor.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, nftmsg.NFNLGRP_NFTABLES)
        committed = False
        try:
            batch.transact(builder)
            committed = True
        finally:
            # Rejoin first, then read the generation: a commit in between is
            # reported twice at worst, never missed.
            monitor.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, nftmsg.NFNLGRP_NFTABLES)
            with self._query_lock:
                after = query.generation()
            if (after - before) & 0xFFFFFFFF != int(committed) and self._loop is not None:
                self._loop.call_soon_threadsafe(self._drifted)

    async def _ensure_skeleton(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *nft_command(self.cfg.netns),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NftError(f"cannot run nft: {exc}") from exc
        detector = self._detector
        if detector is not None:  # its own changes are not drift
            detector.own_pids.add(proc.pid)
        try:
            _, err = await asyncio.wait_for(
                proc.communicate(skeleton(self.cfg).encode()), NFT_TIMEOUT
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NftError(f"nft did not finish within {NFT_TIMEOUT:g} s") from None
        finally:
            if detector is not None and self._loop is not None:
                # its notifications may still be queued: forget the pid a little later
                self._loop.call_later(5.0, detector.own_pids.discard, proc.pid)
        if proc.returncode != 0:
            raise NftError(
                f"nft -f failed ({proc.returncode}): {err.decode(errors='replace').strip()}"
            )

    def _on_notification(self) -> None:
        monitor, detector = self._monitor, self._detector
        if monitor is None or detector is None:
            return
        drift = False
        while True:
            try:
                data = monitor.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                drift = True  # notifications were lost: assume the worst
                continue
            for msg in nftmsg.messages(data):
                event = nftmsg.parse_event(msg)
                if event is not None and detector.feed(event):
                    drift = True
        if drift:
            self._drifted()

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


__all__ = ["NftDrift", "NftEnforcer", "NftError", "skeleton"]
