"""Who holds a listener's connection slots: caps in total and per client, and whom to evict.

Pure: no sockets and no clock. A listener asks ``admit`` before it gives a new
connection a slot, ``touch``es a connection when it does useful work and
``remove``s it when it closes. When every slot is taken, ``admit`` may name the
least recently active connection that the listener says can go (RFC 7766
section 6.2.3 lets a DNS server close idle connections under load): a flood of
connections that say nothing, or drip one query now and then, then costs its
own slots, not an honest client's.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from itertools import islice
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

# How many of the least recently active connections admit() looks at for one
# it may evict: bounded, so a full table never costs a scan of every slot.
EVICT_SCAN = 16


def client_of(address: str) -> str:
    """The unit a per-client cap counts: an IPv4 address, or an IPv6 /64.

    A host is given a whole /64 (RFC 7421) and can use any address in it, so a
    cap per IPv6 address would cap nothing. An IPv4-mapped address is IPv4.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP address (a Unix socket): one client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"
    return str(ip)


class Tally:
    """What each client holds of something, and all clients together.

    A client whose count drops to zero is forgotten, so a flood from many
    addresses leaves nothing behind.
    """

    __slots__ = ("_held", "total")

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self.total = 0

    def held_by(self, client: str) -> int:
        return self._held.get(client, 0)

    def add(self, client: str) -> None:
        self._held[client] = self._held.get(client, 0) + 1
        self.total += 1

    def remove(self, client: str) -> None:
        """One fewer held by ``client``, which must hold one."""
        left = self._held[client] - 1
        if left:
            self._held[client] = left
        else:
            del self._held[client]
        self.total -= 1


class ConnectionTable(Generic[C]):
    """Connections in least-recently-active order, counted per client."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self._order: OrderedDict[C, str] = OrderedDict()  # connection -> client
        self._per_client = Tally()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, conn: object) -> bool:
        return conn in self._order

    def __iter__(self) -> Iterator[C]:
        """The connections, least recently active first."""
        return iter(list(self._order))

    def held_by(self, client: str) -> int:
        return self._per_client.held_by(client)

    def admit(
        self, client: str, can_evict: Callable[[C], bool] | None = None
    ) -> tuple[str | None, C | None]:
        """May ``client`` open one more: (refusal reason or None, a connection to evict first).

        The reasons are those of kzgate_listener_refusals_total: ``per_client``
        when this client holds its cap (it cannot push others out), else
        ``connections`` when every slot is taken and none may be evicted.
        """
        if self.held_by(client) >= self.max_per_client:
            return "per_client", None
        if len(self._order) < self.max_total:
            return None, None
        if can_evict is not None:
            for conn in islice(self._order, EVICT_SCAN):
                if can_evict(conn):
                    return None, conn
        return "connections", None

    def enter(
        self,
        conn: C,
        client: str,
        *,
        refused: Callable[[str], None],
        can_evict: Callable[[C], bool],
        evict: Callable[[C], None],
    ) -> bool:
        """Give ``conn`` a slot if ``admit`` allows it, evicting first if it says so.

        Every refusal is counted with ``refused``, an eviction as ``evicted``;
        False when ``conn`` got no slot (the listener then closes it).
        """
        reason, idlest = self.admit(client, can_evict)
        if reason is not None:
            refused(reason)
            return False
        if idlest is not None:
            refused("evicted")
            self.remove(idlest)
            evict(idlest)
        self.add(conn, client)
        return True

    def add(self, conn: C, client: str) -> None:
        self._order[conn] = client
        self._per_client.add(client)

    def touch(self, conn: C) -> None:
        """``conn`` did useful work: it becomes the last to be evicted."""
        if conn in self._order:
            self._order.move_to_end(conn)

    def remove(self, conn: C) -> None:
        client = self._order.pop(conn, None)
        if client is not None:
            self._per_client.remove(client)
