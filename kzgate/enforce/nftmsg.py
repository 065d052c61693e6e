"""nf_tables netlink messages for set elements: values in, bytes out (and back).

Pure: no sockets, no clock. Only what kzgate needs is here: one batch of
NEWSETELEM / DELSETELEM messages for interval sets, a flush, a rule dump
request, and the parsing of acks, errors, rule dumps and notifications.

Wire facts this follows (checked against ``nft --debug=netlink`` 1.0.6):

- A prefix is an interval: a start element (key = first address) and an end
  element (flag NFT_SET_ELEM_INTERVAL_END, key = first address after it).
- A prefix that ends at the top of the address space (255.255.255.0/24, ::/0)
  has no "first address after it": nft sends the start element alone, with the
  udata flag NFTNL_SET_ELEM_F_INTERVAL_OPEN so that listings show the prefix.
- Comments live in NFTA_SET_ELEM_USERDATA as TLV type 0, NUL-terminated; nft
  refuses comments over 128 bytes, so longer ones are cut to that.
- The netlink header is host-endian; nf_tables attribute values are big-endian.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import struct
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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

# nf_tables message types (low byte; the high byte is the subsystem)
NFT_MSG_NEWTABLE = 0
NFT_MSG_DELTABLE = 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_DELCHAIN = 5
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_DELRULE = 8
NFT_MSG_NEWSET = 9
NFT_MSG_DELSET = 11
NFT_MSG_NEWSETELEM = 12
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
COMMENT_MAX_BYTES = 128

# The element list is one attribute, and an attribute's length is 16 bits.
MAX_ELEMENTS_BYTES = 60_000

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")


def msg_type(nft_msg: int) -> int:
    return (NFNL_SUBSYS_NFTABLES << 8) | nft_msg


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def nested(kind: int, payload: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, payload)


def strz(text: str) -> bytes:
    return text.encode() + b"\0"


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def nfgen(family: int, res_id: int = 0) -> bytes:
    return _NFGENMSG.pack(family, 0, res_id)


# --- elements ------------------------------------------------------------------


def comment_udata(comment: str, *, open_interval: bool = False) -> bytes:
    """The NFTA_SET_ELEM_USERDATA value: a comment TLV, and the open-interval flag."""
    out = b""
    if comment:
        raw = comment.encode()[:COMMENT_MAX_BYTES].decode(errors="ignore").encode()
        out += bytes((NFTNL_UDATA_SET_ELEM_COMMENT, len(raw) + 1)) + raw + b"\0"
    if open_interval:
        # libnftnl writes this flag host-endian, unlike the attributes
        flag = NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_bytes(4, sys.byteorder)
        out += bytes((NFTNL_UDATA_SET_ELEM_FLAGS, 4)) + flag
    return out


def _element(key: bytes, *, end: bool = False, udata: bytes = b"") -> bytes:
    body = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
    if end:
        body += attr(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))
    if udata:
        body += attr(NFTA_SET_ELEM_USERDATA, udata)
    return nested(NFTA_LIST_ELEM, body)


def prefix_elements(net: IPNetwork, comment: str = "", *, delete: bool = False) -> bytes:
    """The one or two list elements that make ``net`` an interval.

    Deletes carry no comment: the kernel matches elements by key and flags only.
    """
    width = net.max_prefixlen // 8
    first = int(net.network_address)
    after = first + (1 << (net.max_prefixlen - net.prefixlen))
    is_open = after >> net.max_prefixlen != 0  # the prefix ends at the top of the space
    udata = b"" if delete else comment_udata(comment, open_interval=is_open)
    out = _element(first.to_bytes(width, "big"), udata=udata)
    if not is_open:
        out += _element(after.to_bytes(width, "big"), end=True)
    return out


def _elements_message(
    kind: int, flags: int, seq: int, table: str, set_name: str, elems: bytes
) -> bytes:
    payload = nfgen(NFPROTO_INET) + attr(NFTA_SET_ELEM_LIST_TABLE, strz(table))
    payload += attr(NFTA_SET_ELEM_LIST_SET, strz(set_name))
    if elems:
        payload += nested(NFTA_SET_ELEM_LIST_ELEMENTS, elems)
    return nlmsg(msg_type(kind), flags, seq, payload)


@dataclass(frozen=True, slots=True)
class SetChange:
    """What one batch does to one set, in order: flush, delete, add."""

    set_name: str
    flush: bool = False
    delete: Iterable[IPNetwork] = ()
    add: Mapping[IPNetwork, str] | Iterable[tuple[IPNetwork, str]] = ()


class BatchBuilder:
    """Builds one batch; every message asks for an ack so that each one is accounted for."""

    def __init__(self, table: str, first_seq: int) -> None:
        self.table = table
        self.seq = first_seq
        self.parts: list[bytes] = []
        self.acked: list[int] = []  # sequence numbers that will be answered
        self._begin_seq = self._next()
        self.parts.append(
            nlmsg(
                NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, self._begin_seq, nfgen(0, NFNL_SUBSYS_NFTABLES)
            )
        )

    def _next(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    @property
    def begin_seq(self) -> int:
        return self._begin_seq

    def _message(self, kind: int, flags: int, set_name: str, elems: bytes) -> None:
        seq = self._next()
        self.acked.append(seq)
        self.parts.append(
            _elements_message(
                kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, self.table, set_name, elems
            )
        )

    def _chunked(self, kind: int, flags: int, set_name: str, chunks: Iterator[bytes]) -> None:
        # A prefix's start and end elements always travel in the same message.
        buf: list[bytes] = []
        size = 0
        for chunk in chunks:
            if size + len(chunk) > MAX_ELEMENTS_BYTES and buf:
                self._message(kind, flags, set_name, b"".join(buf))
                buf, size = [], 0
            buf.append(chunk)
            size += len(chunk)
        if buf:
            self._message(kind, flags, set_name, b"".join(buf))

    def flush(self, set_name: str) -> None:
        """A DELSETELEM without elements removes every element of the set."""
        self._message(NFT_MSG_DELSETELEM, 0, set_name, b"")

    def delete(self, set_name: str, nets: Iterable[IPNetwork]) -> None:
        chunks = (prefix_elements(n, delete=True) for n in nets)
        self._chunked(NFT_MSG_DELSETELEM, 0, set_name, chunks)

    def add(self, set_name: str, items: Iterable[tuple[IPNetwork, str]]) -> None:
        # EXCL: adding an element that is already there (or overlaps one) is an
        # error, so that a drifted view is noticed instead of silently accepted.
        cache: dict[tuple[str, int], _Templates] = {}
        chunks = (_add_chunk(n, c, cache) for n, c in items)
        self._chunked(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, set_name, chunks)

    def finish(self) -> list[bytes]:
        """The batch's byte parts; the END message closes the transaction."""
        seq = self._next()
        self.parts.append(
            nlmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, nfgen(0, NFNL_SUBSYS_NFTABLES))
        )
        return self.parts


def _add_chunk(net: IPNetwork, comment: str, cache: dict[tuple[str, int], _Templates]) -> bytes:
    # A 1M reload encodes 1M of these, and most prefixes share a few labels:
    # everything but the two keys comes from a per-(label, width) cache.
    bits = net.max_prefixlen
    first = int(net.network_address)
    after = first + (1 << (bits - net.prefixlen))
    if after >> bits:
        return prefix_elements(net, comment)
    width = bits >> 3
    tpl = cache.get((comment, width))
    if tpl is None:
        tpl = cache[(comment, width)] = _templates(comment, width)
    return b"".join(
        (tpl[0], first.to_bytes(width, "big"), tpl[1], after.to_bytes(width, "big"), _END_FLAGS)
    )


_Templates = tuple[bytes, bytes]


def _templates(comment: str, width: int) -> _Templates:
    """(start element up to its key, what lies between the two keys)."""
    udata = attr(NFTA_SET_ELEM_USERDATA, comment_udata(comment)) if comment else b""
    # list element { key { data value } [userdata] }, then the end element with its flag
    head = (NLA_F_NESTED | NFTA_LIST_ELEM, 8 + width, NLA_F_NESTED | NFTA_SET_ELEM_KEY)
    start = _ELEM_HEAD.pack(12 + width + len(udata), *head, 4 + width, NFTA_DATA_VALUE)
    end = _ELEM_HEAD.pack(20 + width, *head, 4 + width, NFTA_DATA_VALUE)
    return start, udata + end


_ELEM_HEAD = struct.Struct("=HHHHHH")
_END_FLAGS = attr(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))


def getrule_dump(table: str, seq: int) -> bytes:
    """Ask for the rules of one table only (the kernel filters the dump)."""
    payload = nfgen(NFPROTO_INET) + attr(NFTA_RULE_TABLE, strz(table))
    return nlmsg(msg_type(NFT_MSG_GETRULE), NLM_F_REQUEST | NLM_F_DUMP, seq, payload)


def getgen_request(seq: int) -> bytes:
    """Ask for the ruleset generation id (answered by one NEWGEN message)."""
    return nlmsg(msg_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, nfgen(0))


# --- parsing -------------------------------------------------------------------


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
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, portid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > len(data):
            return
        yield Message(kind, flags, seq, portid, data[pos + _NLMSGHDR.size : pos + length])
        pos += (length + 3) & ~3


def attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type without flag bits, value) of each attribute in ``data[offset:]``."""
    pos = offset
    while pos + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, pos)
        if length < _NLATTR.size or pos + length > len(data):
            return
        yield kind & NLA_TYPE_MASK, data[pos + _NLATTR.size : pos + length]
        pos += (length + 3) & ~3


def attr_map(data: bytes, offset: int = 0) -> dict[int, bytes]:
    return dict(attrs(data, offset))


def text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


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
    if len(msg.payload) >= 4 + _NLMSGHDR.size:
        req_len, _, _, seq, _ = _NLMSGHDR.unpack_from(msg.payload, 4)
    else:
        req_len = 0
    message, offset = "", None
    if msg.flags & NLM_F_ACK_TLVS:
        # The echoed request is only its header when capped.
        echoed = _NLMSGHDR.size if msg.flags & NLM_F_CAPPED else req_len
        start = 4 + ((echoed + 3) & ~3)
        tlvs = attr_map(msg.payload, start)
        if NLMSGERR_ATTR_MSG in tlvs:
            message = text(tlvs[NLMSGERR_ATTR_MSG])
        if NLMSGERR_ATTR_OFFS in tlvs:
            (offset,) = struct.unpack("=I", tlvs[NLMSGERR_ATTR_OFFS][:4])
    return Ack(seq=seq, errno=-error, message=message, offset=offset)


def rule_counters(msg: Message) -> tuple[str, str, int] | None:
    """(chain, looked-up set, packets) of a NEWRULE dump message with a set lookup and a counter."""
    top = attr_map(msg.payload, _NFGENMSG.size)
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
    if set_name is None or packets is None:
        return None
    return text(top.get(NFTA_RULE_CHAIN, b"")), set_name, packets


def generation(msg: Message) -> int | None:
    """The generation id carried by a NEWGEN message."""
    if msg.kind != msg_type(NFT_MSG_NEWGEN):
        return None
    value = attr_map(msg.payload, _NFGENMSG.size).get(NFTA_GEN_ID)
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
    if msg.kind >> 8 != NFNL_SUBSYS_NFTABLES or len(msg.payload) < _NFGENMSG.size:
        return None
    family, _, _ = _NFGENMSG.unpack_from(msg.payload, 0)
    top = attr_map(msg.payload, _NFGENMSG.size)
    nft_msg = msg.kind & 0xFF
    if nft_msg == NFT_MSG_NEWGEN:
        pid = top.get(NFTA_GEN_PROC_PID)
        gen_pid = struct.unpack("!I", pid[:4])[0] if pid and len(pid) >= 4 else None
        return Event(nft_msg, family, "", msg.portid, gen_pid)
    return Event(nft_msg, family, text(top.get(NFTA_ANY_TABLE, b"")), msg.portid)


# --- drift ---------------------------------------------------------------------

# Changes by someone else that undo what kzgate wrote. Chains and rules count
# only when kzgate owns them ("full" mode); in "set-only" mode they are the
# operator's.
_SET_EVENTS = frozenset({NFT_MSG_DELTABLE, NFT_MSG_DELSET, NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM})
_CHAIN_EVENTS = frozenset({NFT_MSG_DELCHAIN, NFT_MSG_NEWRULE, NFT_MSG_DELRULE})


class DriftDetector:
    """Decides, one notification at a time, whether another process changed our table.

    The kernel sends a transaction's notifications and then one NEWGEN naming
    the committing process. An event on our table from a socket other than ours
    marks the transaction; at its NEWGEN the transaction is drift unless the
    committer is one of ``own_pids`` (our process, and the ``nft`` children that
    write the skeleton: their events come from their own sockets).
    """

    def __init__(self, table: str, own_portid: int, *, watch_chains: bool) -> None:
        self.table = table
        self.own_portid = own_portid
        self.own_pids: set[int] = set()
        self._kinds = _SET_EVENTS | _CHAIN_EVENTS if watch_chains else _SET_EVENTS
        self._touched = False

    def feed(self, event: Event) -> bool:
        """True when ``event`` completes a foreign transaction that touched our table."""
        if event.nft_msg == NFT_MSG_NEWGEN:
            touched, self._touched = self._touched, False
            return touched and event.gen_pid not in self.own_pids
        if (
            event.nft_msg in self._kinds
            and event.family == NFPROTO_INET
            and event.table == self.table
            and event.portid != self.own_portid
        ):
            self._touched = True
        return False
