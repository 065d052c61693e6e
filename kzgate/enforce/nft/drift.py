"""Drift: noticing that another process changed our table, and asking for a repair.

``DriftDetector`` is pure (notifications in, a verdict out); ``Monitor`` is its
edge: a netlink socket in the nf_tables notification group, read on the event
loop, that leaves out our own transactions and calls ``on_drift`` for anyone
else's.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

from kzgate.enforce.monitor import NetlinkMonitor
from kzgate.enforce.nft.decode import Event, parse_event
from kzgate.enforce.nft.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_DROP_MEMBERSHIP,
    SOL_NETLINK,
    open_socket,
)
from kzgate.enforce.nft.wire import (
    NFNLGRP_NFTABLES,
    NFPROTO_INET,
    NFT_MSG_DELCHAIN,
    NFT_MSG_DELRULE,
    NFT_MSG_DELSET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSETELEM,
    messages,
)
from kzgate.enforce.sockopts import attach_filter

MONITOR_RCVBUF = 8 * 1024 * 1024
# The skeleton's nft child has exited when we learn its pid can go, but its
# notifications may still be queued: it stays one of ours this much longer.
FORGET_PID_AFTER = 5.0

# Changes by someone else that undo what kzgate wrote. Chains and rules count
# only when kzgate owns them ("full" mode); in "set-only" mode they are the
# operator's.
_SET_EVENTS = frozenset({NFT_MSG_DELTABLE, NFT_MSG_DELSET, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM})
_CHAIN_EVENTS = frozenset({NFT_MSG_DELCHAIN, NFT_MSG_NEWRULE, NFT_MSG_DELRULE})


class DriftDetector:
    """Decides, one notification at a time, whether another process changed our table.

    The kernel sends a transaction's notifications and then one NEWGEN naming
    the committing process. An event on our table from a socket other than ours
    marks the transaction; at its NEWGEN the transaction is drift unless the
    committer is one of ``own_pids`` (our process, and the ``nft`` children that
    write the skeleton: their events come from their own sockets).
    """

    def __init__(self, table: str, own_portid: int, *, watch_chains: bool) -> None:
        self.table = table
        self.own_portid = own_portid
        self.own_pids: set[int] = set()
        self._kinds = _SET_EVENTS | _CHAIN_EVENTS if watch_chains else _SET_EVENTS
        self._touched = False

    def feed(self, event: Event) -> bool:
        """True when ``event`` completes a foreign transaction that touched our table."""
        if event.nft_msg == NFT_MSG_NEWGEN:
            touched, self._touched = self._touched, False
            return touched and event.gen_pid not in self.own_pids
        if (
            event.nft_msg in self._kinds
            and event.family == NFPROTO_INET
            and event.table == self.table
            and event.portid != self.own_portid
        ):
            self._touched = True
        return False


def open_monitor_socket(batch_portid: int) -> socket.socket:
    """A non-blocking socket in the nf_tables group that never hears ``batch_portid``'s batches."""
    sock = open_socket(MONITOR_RCVBUF)
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        _drop_own_filter(sock, batch_portid)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _drop_own_filter(sock: socket.socket, portid: int) -> None:
    """Drop, in the kernel, notifications caused by our own batch socket.

    A 1M-element reload makes ~2M element notifications; they would only fill
    the monitor's buffer. A transaction's notifications share one portid, and
    classic BPF reads nlmsg_pid (offset 12) big-endian, hence the byte swap.
    """
    swapped = int.from_bytes(portid.to_bytes(4, "little"), "big")
    code = [(0x20, 0, 0, 12), (0x15, 0, 1, swapped), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)]
    attach_filter(sock, code)


class Monitor(NetlinkMonitor):
    """Reads notifications on the loop; calls ``on_drift`` when someone else changed our table."""

    def __init__(
        self,
        sock: socket.socket,
        detector: DriftDetector,
        on_drift: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.detector = detector
        detector.own_pids.add(os.getpid())
        super().__init__(sock, on_drift, loop)

    def ours(self, pid: int) -> None:
        """Changes committed by process ``pid`` (an nft child of ours) are not drift."""
        self.detector.own_pids.add(pid)

    def forget_later(self, pid: int) -> None:
        self._loop.call_later(FORGET_PID_AFTER, self.detector.own_pids.discard, pid)

    def send_unheard(self, send: Callable[[], None], generation: Callable[[], int]) -> None:
        """Run ``send`` (one large batch) while this monitor is out of the group; any thread.

        While any socket listens to NFNLGRP_NFTABLES the kernel builds one
        notification per element (measured: most of a 1M reload's kernel time,
        even though our filter drops them). So the monitor leaves the group for
        the batch, and the generation id stands watch instead: if it moved by
        more than our own commit, someone else committed meanwhile, and that is
        treated as drift (perhaps needlessly; a repair is always safe).
        """
        before = generation()
        self.sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, NFNLGRP_NFTABLES)
        committed = False
        try:
            send()
            committed = True
        finally:
            # Rejoin first, then read the generation: a commit in between is
            # reported twice at worst, never missed.
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            after = generation()
            if (after - before) & 0xFFFFFFFF != int(committed):
                self._loop.call_soon_threadsafe(self._on_drift)

    def drifted(self, data: bytes) -> bool:
        drift = False
        for msg in messages(data):
            event = parse_event(msg)
            if event is not None and self.detector.feed(event):
                drift = True  # read on: the detector follows transactions across messages
        return drift
