"""Ask the kernel what it enforces for one address: our nftables sets, our routing table, a connect.

The edge behind ``sweep.KernelProbe``. Every question is about one address
and costs the kernel about as much whatever the size of the state:

* ``nft_lookup``: NFT_MSG_GETSETELEM point queries (never a dump of a set),
  the host set of the address's family first, then its interval set. For an
  interval set the kernel answers the start element of the covering interval;
  a second query (the address after, flag INTERVAL_END) answers its end, so
  the element is named as kzgate wrote it: ``blocked_v4 10.0.0.0/24``.
* ``route_lookup``: kernel 6.18 refuses RTA_TABLE in an RTM_GETROUTE
  ("ipv4: Unsupported attribute in route get request", EINVAL, on a strict
  socket; a lax one ignores it and looks the address up through the policy
  rules, which never reach table 666), and iproute2's ``ip route get`` has no
  ``table``. So the question is put to the strict dump of our table and
  protocol, which the kernel filters (only our routes, one family), and
  answered by longest-prefix match over it. The dump is kept for
  ``route_snapshot_age`` seconds, so that a round costs one dump per family,
  not one per address; a result may be that much older than the table.
* ``connect_result``: what the host itself gets when it opens a connection.
  Measured in a namespace pair on kernel 6.18 (tests/integration/probes/
  test_kernel.py keeps it true), with kzgate's output rules::

      our rule   TCP connect()                         UDP sendto()
      none       connected / ECONNREFUSED, at once     sent
      drop       timeout (the SYN is dropped, TCP      EPERM, at once
                 retransmits; connect() never sees
                 the error)
      reject     IPv4: EHOSTUNREACH at once; IPv6:      EPERM, at once
                 timeout, or EACCES at the first
                 retransmit (the ICMPv6 is not seen)

  A drop and the IPv6 reject look like an unreachable peer to TCP, so a
  datagram goes first: an output hook that drops or rejects it fails the
  ``sendto`` with EPERM at once, in both modes and both families. Only then
  is TCP tried. EPERM comes from any output hook that drops the datagram,
  not only ours: the nft place (``nft_lookup``) tells whose it is.

``connect_result`` returns ``"<class>: <detail>"``, class first, for the
verdict (``verdict.connect_check``):

  ``blocked: EPERM``            the host's output hook refused the datagram
  ``open: connected``           the TCP handshake completed
  ``open: ECONNREFUSED``        the peer answered, with a reset
  ``open: sent, tcp <what>``    the datagram went out (no output rule stopped it);
                                TCP then met a timeout or an error further on
  ``unreachable: <ERRNO>``      the datagram could not be sent for another reason
                                (ENETUNREACH: no route; the check shows nothing)

Sockets are opened inside the configured namespace (``run_in_netns``), as
the enforcers do; the methods block, and sweep calls them in a thread.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time
from ipaddress import IPv4Address

from kzgate.config import NftConfig, RoutesConfig
from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.nft.decode import Element, found_element
from kzgate.enforce.nft.encode import getsetelem_request
from kzgate.enforce.nft.errors import NftError
from kzgate.enforce.nft.netlink import Netlink
from kzgate.enforce.nft.netlink import open_socket as open_nft_socket
from kzgate.enforce.nft.skeleton import SETS, slot
from kzgate.enforce.routes.decode import Key, covering
from kzgate.enforce.routes.netlink import RouteSocket
from kzgate.enforce.routes.netlink import open_socket as open_route_socket
from kzgate.enforce.routes.wire import AF_INET, AF_INET6, ROUTE_TYPES

QUERY_RCVBUF = 1 << 16  # one answer of one element at a time
ROUTE_RCVBUF = 1 << 22  # a dump's parts arrive as fast as the kernel writes them
_TYPE_NAMES = {number: name for name, number in ROUTE_TYPES.items()}


def interval_text(first: int, after: int | None, bits: int) -> str:
    """The interval [first, after) as kzgate wrote it: a prefix, else a range.

    ``after`` None: the interval is open to the top of the address space.
    """
    top = 1 << bits
    end = top if after is None else after
    last = end - 1
    make = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
    nets = list(ipaddress.summarize_address_range(make(first), make(last)))
    if len(nets) == 1:
        return str(nets[0])
    return f"{make(first)}-{make(last)}"


def connect_class(udp_errno: int | None, tcp: str) -> str:
    """The result string from the datagram's errno (None: sent) and TCP's outcome.

    ``tcp`` is "connected", "timeout" or an errno name; it is ignored when the
    datagram was refused.
    """
    if udp_errno == errno.EPERM:
        return "blocked: EPERM"
    if udp_errno is not None:
        return f"unreachable: {errno.errorcode.get(udp_errno, str(udp_errno))}"
    if tcp in ("connected", "ECONNREFUSED"):
        return f"open: {tcp}"
    # The datagram passed the output hook, so no rule of ours stopped it; what
    # TCP met further on (a silent peer, a router's error) is only detail.
    return f"open: sent, tcp {tcp}"


class Kernel:
    """Implements ``sweep.KernelProbe`` for our nftables table and our routing table."""

    def __init__(
        self,
        nft: NftConfig | None,
        routes: RoutesConfig | None,
        *,
        connect_port: int = 80,
        connect_timeout: float = 1.0,
        route_snapshot_age: float = 2.0,
    ) -> None:
        self.nft = nft
        self.routes = routes
        self.connect_port = connect_port
        self.connect_timeout = connect_timeout
        self.route_snapshot_age = route_snapshot_age
        self._lock = threading.Lock()  # one question at a time per socket
        self._nft_sock: Netlink | None = None
        self._route_sock: RouteSocket | None = None
        self._snapshots: dict[int, tuple[float, dict[Key, int]]] = {}

    # -- nftables -------------------------------------------------------------------

    def nft_lookup(self, address: str) -> str | None:
        """``"<set> <element>"`` of the element of our table that covers ``address``, or None."""
        if self.nft is None:
            return None
        addr = ipaddress.ip_address(address)
        host = slot(ipaddress.ip_network(addr))
        with self._lock:
            nl = self._nft()
            hosts, intervals = SETS[host], SETS[host + 1]
            if self._element(nl, hosts.name, addr.packed) is not None:
                return f"{hosts.name} {addr}"
            start = self._element(nl, intervals.name, addr.packed)
            if start is None:
                return None
            bits = addr.max_prefixlen
            value = int(addr)
            after: int | None = None
            if value + 1 < 1 << bits:
                key = (value + 1).to_bytes(bits // 8, "big")
                end = self._element(nl, intervals.name, key, end=True)
                if end is not None and end.end:
                    after = int.from_bytes(end.key, "big")
            first = int.from_bytes(start.key, "big")
            if after is not None and not first <= value < after:
                after = None  # not the shape asked for: name the start, open-ended
            return f"{intervals.name} {interval_text(first, after, bits)}"

    def _nft(self) -> Netlink:
        if self._nft_sock is None:
            assert self.nft is not None
            self._nft_sock = run_in_netns(
                self.nft.netns, lambda: Netlink(open_nft_socket(QUERY_RCVBUF))
            )
        return self._nft_sock

    def _element(
        self, nl: Netlink, set_name: str, key: bytes, *, end: bool = False
    ) -> Element | None:
        assert self.nft is not None
        nl.seq = (nl.seq + 1) & 0xFFFFFFFF or 1
        request = getsetelem_request(self.nft.table, set_name, key, nl.seq, end=end)
        answers, err = nl.query(request, nl.seq)
        if err == errno.ENOENT:  # no such element (or no such set or table: nothing enforced)
            return None
        if err:
            name = errno.errorcode.get(err, str(err))
            raise NftError(f"element query in set {set_name} failed: {name}")
        for msg in answers:
            if (element := found_element(msg)) is not None:
                return element
        return None

    # -- routes ---------------------------------------------------------------------

    def route_lookup(self, address: str) -> str | None:
        """``"table <n> <prefix> <type>"`` our most specific route covering ``address``, or None."""
        if self.routes is None:
            return None
        addr = ipaddress.ip_address(address)
        family = AF_INET if isinstance(addr, IPv4Address) else AF_INET6
        with self._lock:
            routes = self._snapshot(family)
        found = covering(routes, family, int(addr))
        if found is None:
            return None
        (_, first, length), rtype = found
        prefix = ipaddress.ip_network((first, length))
        kind = _TYPE_NAMES.get(rtype, str(rtype))
        return f"table {self.routes.table} {prefix} {kind}"

    def _snapshot(self, family: int) -> dict[Key, int]:
        assert self.routes is not None
        now = time.monotonic()
        taken = self._snapshots.get(family)
        if taken is not None and now - taken[0] < self.route_snapshot_age:
            return taken[1]
        if self._route_sock is None:
            self._route_sock = run_in_netns(
                self.routes.netns, lambda: RouteSocket(open_route_socket(ROUTE_RCVBUF))
            )
        routes = self._route_sock.dump_family(family, self.routes.table, self.routes.protocol)
        self._snapshots[family] = (now, routes)
        return routes

    # -- connect --------------------------------------------------------------------

    def connect_result(self, address: str) -> str:
        """What a connection from the host to ``address`` gets (see the module docstring)."""
        addr = ipaddress.ip_address(address)
        netns = self.nft.netns if self.nft is not None else None
        return run_in_netns(netns, lambda: self._connect(str(addr), addr.version))

    def _connect(self, address: str, version: int) -> str:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        udp_errno: int | None = None
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            try:
                udp.sendto(b"", (address, self.connect_port))
            except OSError as exc:
                udp_errno = exc.errno or errno.EIO
        if udp_errno is not None:
            return connect_class(udp_errno, "")
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.settimeout(self.connect_timeout)
            try:
                tcp.connect((address, self.connect_port))
                outcome = "connected"
            except TimeoutError:
                outcome = "timeout"
            except OSError as exc:
                code = exc.errno or errno.EIO
                outcome = errno.errorcode.get(code, str(code))
        return connect_class(None, outcome)

    def close(self) -> None:
        with self._lock:
            for sock in (self._nft_sock, self._route_sock):
                if sock is not None:
                    sock.sock.close()
            self._nft_sock = self._route_sock = None
            self._snapshots.clear()
