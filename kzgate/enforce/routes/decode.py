"""Route messages read back: dump answers and notifications → Route; acks by seq.

Pure: ``wire.messages`` splits a datagram, ``route`` reads one message. Every
length is checked, so any bytes give a Route, None, or (for acks) an Ack:
tests/fuzz/py/routes_decode.py feeds it arbitrary datagrams.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from kzgate.enforce.nft.decode import Ack, parse_ack
from kzgate.enforce.nft.wire import NLMSG_ERROR, NLMSGHDR, Message, attrs
from kzgate.enforce.routes.wire import (
    AF_INET,
    AF_INET6,
    RTA_DST,
    RTA_TABLE,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTMSG,
)
from kzgate.names import IPNetwork

__all__ = ["Ack", "Route", "acks", "parse_ack", "route"]

_ALEN = {AF_INET: 4, AF_INET6: 16}
_MAX_LEN = {AF_INET: 32, AF_INET6: 128}


@dataclass(frozen=True, slots=True)
class Route:
    """What kzgate needs of a route: where it points, whose it is, what it does."""

    prefix: IPNetwork
    table: int
    protocol: int
    type: int


def route(msg: Message) -> Route | None:
    """The route an RTM_NEWROUTE / RTM_DELROUTE message carries; None for anything else.

    None too for a route kzgate could not have written: another family, a
    destination whose length or host bits disagree with the prefix length.
    A default route (0.0.0.0/0, ::/0) comes without RTA_DST.
    """
    if msg.kind not in (RTM_NEWROUTE, RTM_DELROUTE) or len(msg.payload) < RTMSG.size:
        return None
    family, dst_len, _, _, table, protocol, _, rtype, _ = RTMSG.unpack_from(msg.payload)
    alen = _ALEN.get(family)
    if alen is None or dst_len > _MAX_LEN[family]:
        return None
    dst: bytes | None = None
    for kind, value in attrs(msg.payload, RTMSG.size):
        if kind == RTA_TABLE and len(value) == 4:
            (table,) = struct.unpack("=I", value)
        elif kind == RTA_DST:
            dst = value
    if dst is None and dst_len == 0:
        dst = bytes(alen)
    if dst is None or len(dst) != alen:
        return None
    try:
        # from an int: an address object would be turned into text and parsed again
        address = int.from_bytes(dst, "big")
        if family == AF_INET:
            prefix: IPNetwork = IPv4Network((address, dst_len))
        else:
            prefix = IPv6Network((address, dst_len))
    except ValueError:  # host bits set
        return None
    return Route(prefix, table, protocol, rtype)


_ERRNO = struct.Struct("=i")


def acks(data: bytes) -> Iterator[Ack]:
    """The acks in a datagram, success ones read at fixed offsets (a 1M-route write has 1M).

    Anything else in ``data`` is skipped; an error ack is read in full by parse_ack.
    """
    pos, end = 0, len(data)
    while pos + NLMSGHDR.size + 4 <= end:
        length, kind, flags, seq, portid = NLMSGHDR.unpack_from(data, pos)
        if length < NLMSGHDR.size or pos + length > end:
            return
        if kind == NLMSG_ERROR and length >= NLMSGHDR.size + 4:
            (error,) = _ERRNO.unpack_from(data, pos + NLMSGHDR.size)
            if error == 0:
                yield Ack(seq=seq, errno=0)
            else:
                payload = data[pos + NLMSGHDR.size : pos + length]
                yield parse_ack(Message(kind, flags, seq, portid, payload))
        pos += (length + 3) & ~3
