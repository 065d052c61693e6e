"""Set elements and batches: values in, netlink bytes out.

Pure: no sockets, no clock. One batch of NEWSETELEM / DELSETELEM messages (and
flushes), and the two requests the enforcer sends outside batches (a rule dump,
the ruleset generation, a point query of one element).

How a prefix becomes elements depends on the kind of set, and is one
``ElementKeys`` per kind; a batch takes whichever the set needs: host
addresses go to hash sets (``HOSTS``: one element, the address), proper
prefixes to interval sets (``INTERVALS``). Wire facts it follows (checked
against ``nft --debug=netlink`` 1.0.6):

- A prefix is an interval: a start element (key = first address) and an end
  element (flag NFT_SET_ELEM_INTERVAL_END, key = first address after it).
- A prefix that ends at the top of the address space (255.255.255.0/24, ::/0)
  has no "first address after it": nft sends the start element alone, with the
  udata flag NFTNL_SET_ELEM_F_INTERVAL_OPEN so that listings show the prefix.
- Comments live in NFTA_SET_ELEM_USERDATA as TLV type 0, NUL-terminated; nft
  refuses comments over 128 bytes, so longer ones are cut to that.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Protocol

from kzgate.enforce.nft.wire import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_GETGEN,
    NFT_MSG_GETRULE,
    NFT_MSG_GETSETELEM,
    NFT_MSG_NEWSETELEM,
    NFT_SET_ELEM_INTERVAL_END,
    NFTA_DATA_VALUE,
    NFTA_LIST_ELEM,
    NFTA_RULE_TABLE,
    NFTA_SET_ELEM_FLAGS,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_ELEM_USERDATA,
    NFTNL_SET_ELEM_F_INTERVAL_OPEN,
    NFTNL_UDATA_SET_ELEM_COMMENT,
    NFTNL_UDATA_SET_ELEM_FLAGS,
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    attr,
    msg_type,
    nested,
    nfgen,
    nlmsg,
    strz,
)
from kzgate.names import IPNetwork

COMMENT_MAX_BYTES = 128
# The element list is one attribute, and an attribute's length is 16 bits.
MAX_ELEMENTS_BYTES = 60_000


class ElementKeys(Protocol):
    """How one kind of set turns prefixes into element-list entries.

    Each item yielded travels in one message: everything one prefix needs (an
    interval's start with its end), or that of several prefixes, grouped to
    save the batch builder a loop turn per element at a million.
    """

    @property
    def interval(self) -> bool:
        """The set is declared with ``flags interval``."""
        ...

    def added(self, items: Iterable[tuple[IPNetwork, str]]) -> Iterator[bytes]:
        """The entries that add each (prefix, comment)."""
        ...

    def removed(self, nets: Iterable[IPNetwork]) -> Iterator[bytes]:
        """The entries that delete each prefix (the kernel matches by key and flags only)."""
        ...


# --- one element -----------------------------------------------------------------


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


def element(key: bytes, *, end: bool = False, udata: bytes = b"") -> bytes:
    body = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
    if end:
        body += attr(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))
    if udata:
        body += attr(NFTA_SET_ELEM_USERDATA, udata)
    return nested(NFTA_LIST_ELEM, body)


# --- interval sets ---------------------------------------------------------------


def prefix_elements(net: IPNetwork, comment: str = "", *, delete: bool = False) -> bytes:
    """The one or two list elements that make ``net`` an interval.

    Deletes carry no comment: the kernel matches elements by key and flags only.
    """
    width = net.max_prefixlen // 8
    first = int(net.network_address)
    after = first + (1 << (net.max_prefixlen - net.prefixlen))
    is_open = after >> net.max_prefixlen != 0  # the prefix ends at the top of the space
    udata = b"" if delete else comment_udata(comment, open_interval=is_open)
    out = element(first.to_bytes(width, "big"), udata=udata)
    if not is_open:
        out += element(after.to_bytes(width, "big"), end=True)
    return out


class IntervalKeys:
    """Each prefix is an interval: a start and an end element (or an open start)."""

    interval = True

    def added(self, items: Iterable[tuple[IPNetwork, str]]) -> Iterator[bytes]:
        cache: dict[tuple[str, int], _Templates] = {}
        return _grouped(_add_chunk(n, c, cache) for n, c in items)

    def removed(self, nets: Iterable[IPNetwork]) -> Iterator[bytes]:
        return _grouped(prefix_elements(n, delete=True) for n in nets)


INTERVALS = IntervalKeys()


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
        (
            tpl[0],
            first.to_bytes(width, "big"),
            tpl[1],
            tpl[2],
            after.to_bytes(width, "big"),
            _END_FLAGS,
        )
    )


_Templates = tuple[bytes, bytes, bytes]


def _templates(comment: str, width: int) -> _Templates:
    """(start element up to its key, its userdata attribute, end element up to its key)."""
    udata = attr(NFTA_SET_ELEM_USERDATA, comment_udata(comment)) if comment else b""
    # list element { key { data value } [userdata] }, then the end element with its flag
    head = (NLA_F_NESTED | NFTA_LIST_ELEM, 8 + width, NLA_F_NESTED | NFTA_SET_ELEM_KEY)
    start = _ELEM_HEAD.pack(12 + width + len(udata), *head, 4 + width, NFTA_DATA_VALUE)
    end = _ELEM_HEAD.pack(20 + width, *head, 4 + width, NFTA_DATA_VALUE)
    return start, udata, end


_ELEM_HEAD = struct.Struct("=HHHHHH")
_END_FLAGS = attr(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))


# --- hash sets ---------------------------------------------------------------------


class HostKeys:
    """Each host (a /32 or /128) is one element whose key is the address.

    A hash set's commit does not walk the set, unlike an interval set's, so a
    diff costs the diff even at a million hosts.
    """

    interval = False

    def added(self, items: Iterable[tuple[IPNetwork, str]]) -> Iterator[bytes]:
        return _grouped(_host_elements(items))

    def removed(self, nets: Iterable[IPNetwork]) -> Iterator[bytes]:
        return _grouped(element(n.network_address.packed) for n in nets)


HOSTS = HostKeys()


def _host_elements(items: Iterable[tuple[IPNetwork, str]]) -> Iterator[bytes]:
    # An interval's start element without its end: the head, the key, the comment.
    cache: dict[tuple[str, int], tuple[bytes, bytes]] = {}
    for net, comment in items:
        key = net.network_address.packed
        tpl = cache.get((comment, len(key)))
        if tpl is None:
            start, udata, _ = _templates(comment, len(key))
            tpl = cache[(comment, len(key))] = (start, udata)
        yield tpl[0] + key + tpl[1]


# A group stays far below a message's element-list limit: 64 elements with
# 128-byte comments and both interval keys are about 11 KB.
GROUP = 64


def _grouped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    while group := b"".join(islice(chunks, GROUP)):
        yield group


# --- batches ---------------------------------------------------------------------


def _elements_message(
    kind: int, flags: int, seq: int, table: str, set_name: str, elems: bytes
) -> bytes:
    payload = nfgen(NFPROTO_INET) + attr(NFTA_SET_ELEM_LIST_TABLE, strz(table))
    payload += attr(NFTA_SET_ELEM_LIST_SET, strz(set_name))
    if elems:
        payload += nested(NFTA_SET_ELEM_LIST_ELEMENTS, elems)
    return nlmsg(msg_type(kind), flags, seq, payload)


class BatchBuilder:
    """Builds one batch; every message asks for an ack so that each one is accounted for."""

    def __init__(self, table: str, first_seq: int) -> None:
        self.table = table
        self.seq = first_seq
        self.parts: list[bytes] = []
        self.acked: list[int] = []  # sequence numbers that will be answered
        begin = nfgen(0, NFNL_SUBSYS_NFTABLES)
        self.parts.append(nlmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, self._next(), begin))

    def _next(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def _message(self, kind: int, flags: int, set_name: str, elems: bytes) -> None:
        seq = self._next()
        self.acked.append(seq)
        self.parts.append(
            _elements_message(
                kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, self.table, set_name, elems
            )
        )

    def _chunked(self, kind: int, flags: int, set_name: str, chunks: Iterator[bytes]) -> None:
        # A prefix's elements (an interval's start and end) always travel together.
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

    def delete(
        self, set_name: str, nets: Iterable[IPNetwork], keys: ElementKeys = INTERVALS
    ) -> None:
        self._chunked(NFT_MSG_DELSETELEM, 0, set_name, keys.removed(nets))

    def add(
        self,
        set_name: str,
        items: Iterable[tuple[IPNetwork, str]],
        keys: ElementKeys = INTERVALS,
    ) -> None:
        # EXCL: adding an element that is already there (or overlaps one) is an
        # error, so that a drifted view is noticed instead of silently accepted.
        self._chunked(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, set_name, keys.added(items))

    def finish(self) -> list[bytes]:
        """The batch's byte parts; the END message closes the transaction."""
        end = nfgen(0, NFNL_SUBSYS_NFTABLES)
        self.parts.append(nlmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self._next(), end))
        return self.parts


# --- requests outside a batch ----------------------------------------------------


def getrule_dump(table: str, seq: int) -> bytes:
    """Ask for the rules of one table only (the kernel filters the dump)."""
    payload = nfgen(NFPROTO_INET) + attr(NFTA_RULE_TABLE, strz(table))
    return nlmsg(msg_type(NFT_MSG_GETRULE), NLM_F_REQUEST | NLM_F_DUMP, seq, payload)


def getgen_request(seq: int) -> bytes:
    """Ask for the ruleset generation id (answered by one NEWGEN message)."""
    return nlmsg(msg_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, nfgen(0))


def getsetelem_request(
    table: str, set_name: str, key: bytes, seq: int, *, end: bool = False
) -> bytes:
    """Ask whether ``key`` is in one set: a point query, never a dump of the set.

    The kernel (6.18, checked in a namespace) answers one NEWSETELEM carrying
    the element found and then the ack, or only an ENOENT ack. A hash set
    answers the element whose key is ``key``. An interval set answers the
    start element of the interval that covers ``key``; with ``end``, the end
    element (flag INTERVAL_END) of the interval that covers ``key`` or the end
    element whose key is ``key``: so asked with the address after a covered
    one, it names where the covering interval ends. An interval open to the
    top of the address space has no end element: a bare ack. A set without
    intervals answers ``end`` with EINVAL.
    """
    body = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
    if end:
        body += attr(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))
    # the attributes in nft 1.0.6's order (``nft get element``), so that the bytes compare
    payload = nfgen(NFPROTO_INET) + attr(NFTA_SET_ELEM_LIST_SET, strz(set_name))
    payload += attr(NFTA_SET_ELEM_LIST_TABLE, strz(table))
    payload += nested(NFTA_SET_ELEM_LIST_ELEMENTS, nested(NFTA_LIST_ELEM, body))
    return nlmsg(msg_type(NFT_MSG_GETSETELEM), NLM_F_REQUEST | NLM_F_ACK, seq, payload)
