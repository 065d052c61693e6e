"""The nf_tables netlink wire format: the kernel's numbers, headers and attributes, both ways.

Pure: no sockets, no clock. The numbers are those of linux/netlink.h,
linux/netfilter/nfnetlink.h and linux/netfilter/nf_tables.h that kzgate needs,
and of libnftnl's element udata. The netlink header is host-endian; nf_tables
attribute values are big-endian. What is built from these (batches) is in
``encode``; what is read from them (answers, notifications) is in ``decode``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# netlink
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an error message: the echoed request is only its header
NLM_F_ACK_TLVS = 0x200  # in an error message: extended-ack attributes follow
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2

# nfnetlink
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFNLGRP_NFTABLES = 7
NFPROTO_INET = 1

# nf_tables message types (low byte; the high byte is the subsystem). NEWCHAIN
# and NEWSET are named too: the monitor sees them, and they are not drift.
NFT_MSG_DELTABLE = 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_DELCHAIN = 5
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_DELRULE = 8
NFT_MSG_NEWSET = 9
NFT_MSG_DELSET = 11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_DELSETELEM = 14
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16

# attributes
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_FLAGS = 3
NFTA_SET_ELEM_USERDATA = 6
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 0x1
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_LOOKUP_SET = 1
NFTA_COUNTER_PACKETS = 2
NFTA_GEN_ID = 1
NFTA_GEN_PROC_PID = 2
# Every object message (table, chain, rule, set, element list) names its table
# in attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, ...).
NFTA_ANY_TABLE = 1

# libnftnl's element udata TLVs
NFTNL_UDATA_SET_ELEM_COMMENT = 0
NFTNL_UDATA_SET_ELEM_FLAGS = 1
NFTNL_SET_ELEM_F_INTERVAL_OPEN = 0x1

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("!BBH")
NLATTR = struct.Struct("=HH")


# --- building ------------------------------------------------------------------


def msg_type(nft_msg: int) -> int:
    return (NFNL_SUBSYS_NFTABLES << 8) | nft_msg


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def nested(kind: int, payload: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, payload)


def strz(text: str) -> bytes:
    return text.encode() + b"\0"


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def nfgen(family: int, res_id: int = 0) -> bytes:
    return NFGENMSG.pack(family, 0, res_id)


# --- walking -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    kind: int
    flags: int
    seq: int
    portid: int
    payload: bytes


def messages(data: bytes) -> Iterator[Message]:
    """Split a netlink datagram into messages; a truncated tail ends the walk."""
    pos = 0
    while pos + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, portid = NLMSGHDR.unpack_from(data, pos)
        if length < NLMSGHDR.size or pos + length > len(data):
            return
        yield Message(kind, flags, seq, portid, data[pos + NLMSGHDR.size : pos + length])
        pos += (length + 3) & ~3


def attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type without flag bits, value) of each attribute in ``data[offset:]``."""
    pos = offset
    while pos + NLATTR.size <= len(data):
        length, kind = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size or pos + length > len(data):
            return
        yield kind & NLA_TYPE_MASK, data[pos + NLATTR.size : pos + length]
        pos += (length + 3) & ~3


def attr_map(data: bytes, offset: int = 0) -> dict[int, bytes]:
    return dict(attrs(data, offset))


def text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")
