"""The rtnetlink socket: route changes in acked chunks, and the strict dump of our table.

Raw ``socket.socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)``, not pyroute2:
measured for issue 13 (netns, 2 vCPUs, pyroute2 0.9.7), pyroute2's
``IPRoute().route('add', ...)`` took 62 s per 100,000 routes (one round trip
and a parsed answer object each), its ``nlm_request_batch`` hung at 3,000
acked messages (its 1 MiB receive buffer overflows), and ``get_routes(table=,
proto=)`` dumps every table and filters in Python (17 s for 100k). Raw chunks
of 4,096 acked messages take about 1 s per 100k, and the strict dump 0.05 s.
pyroute2 is used by the tests, as an independent reader of the table.

A chunk is one sendmsg of at most ``CHUNK`` messages, each with its own
seq. Only the chunk's last message asks for an ack (NLM_F_ACK): the kernel
runs the messages in order inside sendmsg and answers every one that fails
with an error message (seq says which) whether or not it asked, so the last
one's ack is the barrier after which the chunk's errors have all been read.
One ack per chunk instead of one per route: 1M routes from empty 11.1 ->
6.8 s (bench/routes.py, unpaced). Each answer costs about 832 bytes of receive buffer;
``ACK_RCVBUF`` holds a whole chunk of errors with room to spare. If answers
are lost anyway (ENOBUFS) the outcome of the chunk is unknown:
RoutesUnknown, and the caller reconciles by dump.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kzgate.enforce.nft.wire import NLMSG_ERROR
from kzgate.enforce.routes.decode import Ack, Key, acks, dump_part, parse_ack
from kzgate.enforce.routes.encode import ADD_FLAGS, DELETE_FLAGS, dump_request, route_message
from kzgate.enforce.routes.errors import RoutesError, RoutesUnknown
from kzgate.enforce.routes.wire import (
    AF_INET,
    AF_INET6,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NETLINK_ROUTE,
    NLM_F_ACK,
    RTM_NEWROUTE,
    SOL_NETLINK,
)
from kzgate.enforce.sockopts import set_receive_buffer, set_send_buffer
from kzgate.names import IPNetwork

CHUNK = 4096  # messages per sendmsg (~230 KB of IPv6 messages, under the send buffer)
ACK_RCVBUF = 8 * 1024 * 1024  # a chunk's acks are ~3.4 MB of truesize; the kernel doubles this
SNDBUF = 1024 * 1024
ANSWER_TIMEOUT = 10.0  # seconds to wait for a chunk's acks or a dump's next part
# Pacing of large changes: BIRD's kernel protocol reads our table's
# notifications from one socket; a full-speed burst overflows it (BIRD then
# waits for its next scan, `scan time`, to catch up). Research for issue 13:
# 10,000 routes per 100 ms (<= 100k routes/s) gave zero BIRD drops for 200k
# adds and deletes even with a 32 MiB `netlink rx buffer` (router converged
# in 5.2 s add / 3.6 s delete), while full-speed 200k flushes dropped.
PACE_ROUTES = 10_000
PACE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Pace:
    """At most ``routes`` route changes per ``seconds``; changes up to ``routes`` go at once."""

    routes: int = PACE_ROUTES
    seconds: float = PACE_SECONDS


PACE = Pace()  # the enforcer's; bench/routes.py also measures without it


def open_socket(rcvbuf: int = ACK_RCVBUF, groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        set_receive_buffer(sock, rcvbuf)
        set_send_buffer(sock, SNDBUF)
    except BaseException:
        sock.close()
        raise
    return sock


# One change: (RTM_NEWROUTE or RTM_DELROUTE, prefix, route type).
Change = tuple[int, IPNetwork, int]

_UNACKED = ~NLM_F_ACK


def _flags(kind: int, acked: bool) -> int:
    flags = ADD_FLAGS if kind == RTM_NEWROUTE else DELETE_FLAGS
    return flags if acked else flags & _UNACKED


class RouteSocket:
    """The writer: sends route messages in acked chunks, and dumps our table."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.portid: int = sock.getsockname()[0]
        self.seq = 0

    def write(
        self,
        changes: Sequence[Change],
        table: int,
        protocol: int,
        pace: Pace | None = None,
        *,
        ignore: frozenset[int] = frozenset(),
    ) -> dict[int, int]:
        """Make every change; return {index in ``changes``: errno} of those the kernel refused.

        Errnos in ``ignore`` (ESRCH for a delete of a route already gone) are
        left out. RoutesUnknown when acks were lost.
        """
        failed: dict[int, int] = {}
        window = len(changes) or 1
        if pace is not None and len(changes) > pace.routes:
            window = pace.routes
        began = 0.0
        for start in range(0, len(changes), window):
            # each window of pace.routes starts pace.seconds after the last one began
            if start and pace is not None and (wait := began + pace.seconds - time.monotonic()) > 0:
                time.sleep(wait)
            began = time.monotonic()
            for first in range(start, min(start + window, len(changes)), CHUNK):
                end = min(first + CHUNK, start + window, len(changes))
                self._chunk(changes[first:end], table, protocol, first, failed, ignore)
        return failed

    def _chunk(
        self,
        chunk: Sequence[Change],
        table: int,
        protocol: int,
        first: int,
        failed: dict[int, int],
        ignore: frozenset[int],
    ) -> None:
        self._drain()
        base = self.seq + 1
        self.seq += len(chunk)
        last = len(chunk) - 1
        data = b"".join(
            route_message(kind, _flags(kind, i == last), base + i, net, table, protocol, rtype)
            for i, (kind, net, rtype) in enumerate(chunk)
        )
        try:
            self.sock.send(data)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                raise RoutesUnknown(f"netlink send of {len(chunk)} routes: {exc}") from exc
            raise RoutesError(f"netlink send of {len(chunk)} routes failed: {exc}") from exc
        for ack in self._answers(base, base + last):
            if ack.errno and ack.errno not in ignore:
                failed[first + ack.seq - base] = ack.errno

    def _answers(self, base: int, barrier: int) -> Iterator[Ack]:
        """The answers to seqs ``base``..``barrier``, until the one to ``barrier`` (acked)."""
        self.sock.settimeout(ANSWER_TIMEOUT)
        try:
            while True:
                try:
                    data = self.sock.recv(1 << 20)
                except TimeoutError:
                    raise RoutesUnknown(f"no ack of route message {barrier}") from None
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        raise RoutesUnknown("route answers overflowed the receive buffer") from exc
                    raise
                for ack in acks(data):
                    if base <= ack.seq <= barrier:
                        yield ack
                        if ack.seq == barrier:
                            return
        finally:
            self.sock.settimeout(None)

    def _drain(self) -> None:
        # answers to an exchange that failed half-way must not be read as this one's
        while True:
            try:
                self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise

    def dump(self, table: int, protocol: int) -> dict[Key, int]:
        """Every route of ``protocol`` in ``table``, both families (the kernel filters).

        Keyed by (family, address, prefix length), to the route's type.
        """
        out: dict[Key, int] = {}
        for family in (AF_INET, AF_INET6):
            self._dump_family(family, table, protocol, out)
        return out

    def dump_family(self, family: int, table: int, protocol: int) -> dict[Key, int]:
        """``dump`` of one family only (AF_INET or AF_INET6)."""
        out: dict[Key, int] = {}
        self._dump_family(family, table, protocol, out)
        return out

    def _dump_family(self, family: int, table: int, protocol: int, out: dict[Key, int]) -> None:
        self._drain()
        self.seq += 1
        seq = self.seq
        self.sock.settimeout(ANSWER_TIMEOUT)
        try:
            self.sock.send(dump_request(seq, family, table, protocol))
            while True:
                try:
                    data = self.sock.recv(1 << 20)
                except TimeoutError:
                    raise RoutesError("the route dump did not finish") from None
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        raise RoutesUnknown("the route dump overflowed the receive buffer") from exc
                    raise
                # dump_part checks table and protocol again: that keeps a kernel
                # without strict checking (before 4.20) from handing us others' routes
                end = dump_part(data, seq, table, protocol, out)
                if end is None:
                    continue
                if end.kind == NLMSG_ERROR:
                    ack = parse_ack(end)
                    if ack.errno and ack.errno != errno.ENOENT:  # ENOENT: no table yet, empty
                        raise RoutesError(f"route dump of table {table}: {ack.describe()}")
                return
        finally:
            self.sock.settimeout(None)
