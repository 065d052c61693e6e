"""Route messages: (prefix, table, protocol, type) in, rtnetlink bytes out.

Pure. Every message has one fixed layout, built by one precompiled struct
(research for issue 13: a fixed template builds 1M messages in 0.6 s, generic
attribute code in 2.4 s)::

    nlmsghdr | rtmsg{family, dst_len, 0, 0, table=0, protocol, scope, type, 0}
             | RTA_TABLE (u32) | RTA_DST (4 or 16 bytes)

Byte for byte what ``ip route add table 666 proto 252 blackhole
192.0.2.0/24`` and ``ip route del ...`` send (captured with strace, iproute2
6.1; tests/unit/enforce/test_routes_wire.py). Neither ever changes a route
someone else put in the table under the same prefix: an add is
NLM_F_CREATE|NLM_F_EXCL (EEXIST when any route of that prefix and metric is
there; NLM_F_REPLACE would overwrite another protocol's route), a delete
carries our protocol and type (ESRCH unless the route is ours).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Network

from kzgate.enforce.routes.wire import (
    AF_INET,
    AF_INET6,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSGHDR,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_UNSPEC,
    RTA_DST,
    RTA_TABLE,
    RTM_DELROUTE,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTMSG,
)
from kzgate.names import IPNetwork

# header, rtmsg, RTA_TABLE (len, type, u32), RTA_DST (len, type, address)
_V4 = struct.Struct("=IHHII BBBBBBBBI HHI HH4s")
_V6 = struct.Struct("=IHHII BBBBBBBBI HHI HH16s")
ADD_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL  # never over another's route
DELETE_FLAGS = NLM_F_REQUEST | NLM_F_ACK


def route_message(
    kind: int, flags: int, seq: int, net: IPNetwork, table: int, protocol: int, rtype: int
) -> bytes:
    """One RTM_NEWROUTE or RTM_DELROUTE for ``net`` in ``table``."""
    if type(net) is IPv4Network:
        # as iproute2: an IPv4 delete matches a route of any scope
        layout, family, alen = _V4, AF_INET, 4
        scope = RT_SCOPE_NOWHERE if kind == RTM_DELROUTE else RT_SCOPE_UNIVERSE
    else:
        layout, family, alen, scope = _V6, AF_INET6, 16, RT_SCOPE_UNIVERSE
    return layout.pack(
        layout.size, kind, flags, seq, 0,
        family, net.prefixlen, 0, 0, RT_TABLE_UNSPEC, protocol, scope, rtype, 0,
        8, RTA_TABLE, table,
        4 + alen, RTA_DST, net.network_address.packed,
    )  # fmt: skip


def add(seq: int, net: IPNetwork, table: int, protocol: int, rtype: int) -> bytes:
    return route_message(RTM_NEWROUTE, ADD_FLAGS, seq, net, table, protocol, rtype)


def delete(seq: int, net: IPNetwork, table: int, protocol: int, rtype: int) -> bytes:
    return route_message(RTM_DELROUTE, DELETE_FLAGS, seq, net, table, protocol, rtype)


def dump_request(seq: int, family: int, table: int, protocol: int) -> bytes:
    """A strict dump of one family's routes in ``table`` with ``protocol`` (any type).

    With NETLINK_GET_STRICT_CHK on the socket the kernel filters by the
    rtmsg's protocol and the RTA_TABLE attribute: it sends only our routes,
    not the whole routing state (pyroute2's get_routes filters in Python
    after dumping every table: 20 s for 10k of ours beside 200k in main).
    """
    body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_UNSPEC, protocol, 0, 0, 0)
    body += struct.pack("=HHI", 8, RTA_TABLE, table)
    return (
        NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        + body
    )
