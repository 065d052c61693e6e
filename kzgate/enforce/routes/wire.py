"""The rtnetlink numbers kzgate's routes need (linux/rtnetlink.h, linux/netlink.h).

Pure constants and layouts; the generic netlink framing (splitting datagrams
into messages, attributes, acks) is shared with the nftables enforcer
(kzgate/enforce/nft/wire.py and decode.py).
"""

from __future__ import annotations

import socket
import struct

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors echo only the request's header
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12  # dump requests are filtered by the kernel, not in Python

RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300

RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

RT_TABLE_UNSPEC = 0  # in rtmsg: the table is in RTA_TABLE (32 bits), as iproute2 sends it
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_NOWHERE = 255  # in an IPv4 delete: any scope (as iproute2 sends it)

RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7
RTN_PROHIBIT = 8
ROUTE_TYPES = {"blackhole": RTN_BLACKHOLE, "unreachable": RTN_UNREACHABLE, "prohibit": RTN_PROHIBIT}

RTA_DST = 1
RTA_TABLE = 15

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
RTMSG_OFFSET = NLMSGHDR.size  # where the rtmsg starts in a message
