"""What the kernel says back: acks and errors, rule counters, the generation, notifications,
the element a point query found.

Pure: messages in (split by ``wire.messages``), values out.
"""

from __future__ import annotations

import errno as errno_mod
import struct
from dataclasses import dataclass

from kzgate.enforce.nft.wire import (
    NFGENMSG,
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWSETELEM,
    NFT_SET_ELEM_INTERVAL_END,
    NFTA_ANY_TABLE,
    NFTA_COUNTER_PACKETS,
    NFTA_DATA_VALUE,
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_GEN_ID,
    NFTA_GEN_PROC_PID,
    NFTA_LOOKUP_SET,
    NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS,
    NFTA_SET_ELEM_FLAGS,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLMSGERR_ATTR_MSG,
    NLMSGERR_ATTR_OFFS,
    NLMSGHDR,
    Message,
    attr_map,
    attrs,
    msg_type,
    text,
)


@dataclass(frozen=True, slots=True)
class Ack:
    """An NLMSG_ERROR answer: ``errno`` 0 is a plain ack."""

    seq: int
    errno: int
    message: str = ""
    offset: int | None = None  # of the bad attribute, in the request as sent

    def describe(self) -> str:
        name = errno_mod.errorcode.get(self.errno, str(self.errno))
        extra = f": {self.message}" if self.message else ""
        return f"{name} ({self.errno}){extra}"


def parse_ack(msg: Message) -> Ack:
    (error,) = struct.unpack_from("=i", msg.payload, 0)
    seq = msg.seq
    if len(msg.payload) >= 4 + NLMSGHDR.size:
        req_len, _, _, seq, _ = NLMSGHDR.unpack_from(msg.payload, 4)
    else:
        req_len = 0
    message, offset = "", None
    if msg.flags & NLM_F_ACK_TLVS:
        # The echoed request is only its header when capped.
        echoed = NLMSGHDR.size if msg.flags & NLM_F_CAPPED else req_len
        start = 4 + ((echoed + 3) & ~3)
        tlvs = attr_map(msg.payload, start)
        if NLMSGERR_ATTR_MSG in tlvs:
            message = text(tlvs[NLMSGERR_ATTR_MSG])
        if len(tlvs.get(NLMSGERR_ATTR_OFFS, b"")) >= 4:  # a shorter one says nothing
            (offset,) = struct.unpack("=I", tlvs[NLMSGERR_ATTR_OFFS][:4])
    return Ack(seq=seq, errno=-error, message=message, offset=offset)


def rule_counters(msg: Message) -> tuple[str, str, int] | None:
    """(chain, looked-up set, packets) of a NEWRULE dump message with a set lookup.

    A rule without a counter counts 0 packets: it still matches the set, which
    is what set-only mode asks of the operator's rules.
    """
    top = attr_map(msg.payload, NFGENMSG.size)
    exprs = top.get(NFTA_RULE_EXPRESSIONS)
    if exprs is None:
        return None
    set_name: str | None = None
    packets: int | None = None
    for _, elem in attrs(exprs):
        expr = attr_map(elem)
        name = text(expr.get(NFTA_EXPR_NAME, b""))
        data = attr_map(expr.get(NFTA_EXPR_DATA, b""))
        if name == "lookup" and NFTA_LOOKUP_SET in data:
            set_name = text(data[NFTA_LOOKUP_SET])
        elif name == "counter" and NFTA_COUNTER_PACKETS in data:
            (packets,) = struct.unpack("!Q", data[NFTA_COUNTER_PACKETS][:8])
    if set_name is None:
        return None
    return text(top.get(NFTA_RULE_CHAIN, b"")), set_name, packets or 0


def generation(msg: Message) -> int | None:
    """The generation id carried by a NEWGEN message."""
    if msg.kind != msg_type(NFT_MSG_NEWGEN):
        return None
    value = attr_map(msg.payload, NFGENMSG.size).get(NFTA_GEN_ID)
    return struct.unpack("!I", value[:4])[0] if value and len(value) >= 4 else None


@dataclass(frozen=True, slots=True)
class Event:
    """One nf_tables notification, reduced to what drift detection needs."""

    nft_msg: int
    family: int
    table: str
    portid: int
    gen_pid: int | None = None  # NEWGEN only: the process that committed


def parse_event(msg: Message) -> Event | None:
    if msg.kind >> 8 != NFNL_SUBSYS_NFTABLES or len(msg.payload) < NFGENMSG.size:
        return None
    family, _, _ = NFGENMSG.unpack_from(msg.payload, 0)
    top = attr_map(msg.payload, NFGENMSG.size)
    nft_msg = msg.kind & 0xFF
    if nft_msg == NFT_MSG_NEWGEN:
        pid = top.get(NFTA_GEN_PROC_PID)
        gen_pid = struct.unpack("!I", pid[:4])[0] if pid and len(pid) >= 4 else None
        return Event(nft_msg, family, "", msg.portid, gen_pid)
    return Event(nft_msg, family, text(top.get(NFTA_ANY_TABLE, b"")), msg.portid)


@dataclass(frozen=True, slots=True)
class Element:
    """One set element in an answer: its key, and whether it ends an interval."""

    key: bytes
    end: bool


def found_element(msg: Message) -> Element | None:
    """The first element of a NEWSETELEM answer (to a point query); None for anything else.

    Untrusted lengths are checked: a key that is not an address (4 or 16
    bytes) is no element of ours.
    """
    if msg.kind != msg_type(NFT_MSG_NEWSETELEM) or len(msg.payload) < NFGENMSG.size:
        return None
    elements = attr_map(msg.payload, NFGENMSG.size).get(NFTA_SET_ELEM_LIST_ELEMENTS)
    for _, raw in attrs(elements or b""):
        elem = attr_map(raw)
        key = attr_map(elem.get(NFTA_SET_ELEM_KEY, b"")).get(NFTA_DATA_VALUE)
        if key is None or len(key) not in (4, 16):
            return None
        flags = elem.get(NFTA_SET_ELEM_FLAGS, b"")
        end = len(flags) == 4 and bool(struct.unpack("!I", flags)[0] & NFT_SET_ELEM_INTERVAL_END)
        return Element(key, end)
    return None
