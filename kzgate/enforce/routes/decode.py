"""Route messages read back: dump answers and notifications → Route; acks by seq.

Pure: ``wire.messages`` splits a datagram, ``route`` reads one message. Every
length is checked, so any bytes give a Route, None, or (for acks) an Ack:
tests/fuzz/py/routes_decode.py feeds it arbitrary datagrams.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from kzgate.enforce.nft.decode import Ack, parse_ack
from kzgate.enforce.nft.wire import NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLMSGHDR, Message, attrs
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

__all__ = [
    "Ack", "DumpEnd", "Key", "Route", "acks", "covering", "dump_part", "parse_ack", "route",
]  # fmt: skip

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


# (family, address as an int, prefix length): a route's prefix without an
# ipaddress object (building one costs ~1.5 us: 1.5 s of a 1M-route reconcile).
Key = tuple[int, int, int]
DumpEnd = Message  # the NLMSG_DONE or NLMSG_ERROR that ends a dump
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RTMSG_AT = NLMSGHDR.size
_ATTRS_AT = NLMSGHDR.size + RTMSG.size


def dump_part(
    data: bytes, seq: int, table: int, protocol: int, into: dict[Key, int]
) -> DumpEnd | None:
    """Adds the routes of ``table`` and ``protocol`` in one dump datagram to ``into`` (key: type).

    ``route`` at fixed offsets, without a Message per route: what it accepts,
    this accepts (tests/unit/enforce/test_routes_wire.py checks both agree on
    any bytes; the routes_decode fuzz target too). Messages of another seq
    are skipped; the dump's end (done or error) is returned, and nothing
    after it is read.
    """
    pos, end = 0, len(data)
    while pos + NLMSGHDR.size <= end:
        length, kind, flags, mseq, portid = NLMSGHDR.unpack_from(data, pos)
        if length < NLMSGHDR.size or pos + length > end:
            return None
        stop = pos + length
        if mseq != seq:
            pass
        elif kind in (NLMSG_DONE, NLMSG_ERROR):
            return Message(kind, flags, mseq, portid, data[pos + NLMSGHDR.size : stop])
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and length >= _ATTRS_AT:
            family, dst_len, _, _, rtable, rproto, _, rtype, _ = RTMSG.unpack_from(
                data, pos + _RTMSG_AT
            )
            alen = _ALEN.get(family)
            dst = -1
            at = pos + _ATTRS_AT
            while at + 4 <= stop:
                size, akind = _ATTR.unpack_from(data, at)
                akind &= NLA_TYPE_MASK
                if size < 4 or at + size > stop:
                    break
                if akind == RTA_TABLE and size == 8:
                    (rtable,) = _U32.unpack_from(data, at + 4)
                elif akind == RTA_DST:  # -2: a length no prefix of ours has
                    value = data[at + 4 : at + size]
                    dst = int.from_bytes(value, "big") if len(value) == alen else -2
                at += (size + 3) & ~3
            if dst == -1 and dst_len == 0:
                dst = 0
            if (
                alen is not None
                and dst >= 0
                and dst_len <= alen * 8
                and not dst & ((1 << (alen * 8 - dst_len)) - 1)
                and rtable == table
                and rproto == protocol
            ):
                into[(family, dst, dst_len)] = rtype
        pos += (length + 3) & ~3
    return None


def covering(routes: Mapping[Key, int], family: int, address: int) -> tuple[Key, int] | None:
    """The most specific route in ``routes`` (as ``dump_part`` fills it) that covers ``address``.

    At most 33 or 129 dict probes, longest prefix first: no structure is
    built over a million routes for one question.
    """
    bits = 32 if family == AF_INET else 128
    for length in range(bits, -1, -1):
        key = (family, address >> (bits - length) << (bits - length), length)
        rtype = routes.get(key)
        if rtype is not None:
            return key, rtype
    return None
