"""Drift: noticing that another process changed one of our routes, and asking for a repair.

``DriftDetector`` is pure (a route notification in, a verdict out);
``Monitor`` is its edge: a socket in the IPv4 and IPv6 route groups, read on
the event loop. A classic BPF filter in the kernel keeps only notifications
of our protocol caused by a socket other than our writer, so a 1M-route
reconcile of our own never reaches Python (research for issue 13: a flood of
100k of our adds left the monitor's queue empty).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping

from kzgate.enforce.monitor import NetlinkMonitor
from kzgate.enforce.nft.wire import messages
from kzgate.enforce.routes.decode import Route, route
from kzgate.enforce.routes.netlink import open_socket
from kzgate.enforce.routes.wire import (
    NLMSGHDR,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMSG_OFFSET,
)
from kzgate.enforce.sockopts import attach_filter
from kzgate.names import IPNetwork

MONITOR_RCVBUF = 4 * 1024 * 1024
_PROTOCOL_OFFSET = RTMSG_OFFSET + 5  # rtmsg.rtm_protocol
_PID_OFFSET = 12  # nlmsghdr.nlmsg_pid: the portid of the socket that made the change
assert NLMSGHDR.size == 16


class DriftDetector:
    """Decides whether a foreign notification undid what kzgate holds.

    ``held`` maps each prefix we hold to its route type. A foreign delete of
    a held prefix, or a foreign add (or replace) of our protocol that is not
    what we hold, is drift; anything in another table, or of another
    protocol, is none of our business.
    """

    def __init__(
        self, table: int, protocol: int, held: Callable[[], Mapping[IPNetwork, int]]
    ) -> None:
        self.table = table
        self.protocol = protocol
        self._held = held

    def feed(self, kind: int, found: Route) -> bool:
        if found.table != self.table or found.protocol != self.protocol:
            return False
        held = self._held().get(found.prefix)
        if kind == RTM_DELROUTE:
            return held is not None
        if kind == RTM_NEWROUTE:
            return held != found.type
        return False


def open_monitor_socket(protocol: int, writer_portid: int) -> socket.socket:
    """A non-blocking socket in the route groups that hears only others' changes of ``protocol``."""
    sock = open_socket(MONITOR_RCVBUF, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
    try:
        _attach_filter(sock, protocol, writer_portid)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def filter_program(protocol: int, writer_portid: int) -> list[tuple[int, int, int, int]]:
    """cBPF: accept a message iff rtm_protocol == ``protocol`` and nlmsg_pid != the writer's.

    Each route notification is its own skb, so the offsets are the message's.
    BPF loads words big-endian and nlmsg_pid is host-endian: hence the swap.
    """
    swapped = int.from_bytes(writer_portid.to_bytes(4, "little"), "big")
    return [
        (0x30, 0, 0, _PROTOCOL_OFFSET),  # ldb [21]
        (0x15, 0, 3, protocol),  # jeq protocol ? next : reject
        (0x20, 0, 0, _PID_OFFSET),  # ld [12]
        (0x15, 1, 0, swapped),  # jeq writer ? reject : accept
        (0x06, 0, 0, 0xFFFFFFFF),  # accept
        (0x06, 0, 0, 0),  # reject
    ]


def _attach_filter(sock: socket.socket, protocol: int, writer_portid: int) -> None:
    attach_filter(sock, filter_program(protocol, writer_portid))


class Monitor(NetlinkMonitor):
    """Reads notifications on the loop; calls ``on_drift`` when someone else changed our routes."""

    def __init__(
        self,
        sock: socket.socket,
        detector: DriftDetector,
        on_drift: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.detector = detector
        super().__init__(sock, on_drift, loop)

    def drifted(self, data: bytes) -> bool:
        drift = False
        for msg in messages(data):
            found = route(msg)
            if found is not None and self.detector.feed(msg.kind, found):
                drift = True
        return drift
