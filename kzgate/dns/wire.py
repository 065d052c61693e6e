"""DNS messages on raw bytes: read a query, walk a reply, build the small answers.

Pure functions on ``bytes`` (RFC 1035 §4, RFC 6891 OPT, RFC 8914 EDE). Every
reader checks its bounds and raises a ``WireError`` subclass, never IndexError:
the engine answers FORMERR (queries) or SERVFAIL (replies) from that one type.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

HEADER = struct.Struct("!6H")  # id, flags, qdcount, ancount, nscount, arcount
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength (after the owner name)
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
QTYPE_QCLASS = struct.Struct("!HH")
_ROOT_RR = struct.Struct("!BHHIH")  # a root owner octet, then type, class, ttl, rdlength

# Header flag bits (the second 16-bit word).
QR = 0x8000
OPCODE = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
CD = 0x0010

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

T_A, T_CNAME, T_SOA, T_AAAA, T_DNAME, T_OPT, T_ANY = 1, 5, 6, 28, 39, 41, 255

EDNS_UDP_SIZE = 1232  # what we advertise and the most we send over UDP (DNS flag day 2020)
EDE_OPTION = 15
EDE_CENSORED = 16
EDE_NO_REACHABLE_AUTHORITY = 22
MAX_POINTER_JUMPS = 128


# (index, type, class, TTL, RDATA offset, end offset) of one resource record
RecordAt = tuple[int, int, int, int, int, int]


class WireError(ValueError):
    """A malformed DNS message."""


class Truncated(WireError):
    """The message ends inside a name, a question or a record."""


class BadLabel(WireError):
    """A label type 0b01/0b10, i.e. a length octet between 64 and 191."""


class NameTooLong(WireError):
    """A domain name is longer than 255 octets."""


class BadPointer(WireError):
    """A compression pointer where none may be, pointing forward, or looping."""


class BadQuestion(WireError):
    """QDCOUNT is not 1."""


class BadOpt(WireError):
    """An OPT record outside the additional section, with a non-root owner, or twice."""


class NotAReply(WireError):
    """QR is 0 in what should be an answer."""


class WrongQuestion(WireError):
    """The reply's question is not the one that was asked."""


@dataclass(slots=True)
class Query:
    """What the engine needs from a parsed query; ``question`` keeps the client's exact bytes."""

    id: int
    flags: int
    qname: bytes  # lower-case wire form
    question: bytes  # QNAME QTYPE QCLASS as sent (0x20 case kept)
    qtype: int
    qclass: int
    edns: bool
    do_bit: bool
    udp_size: int  # client's EDNS payload size, at least 512
    version: int  # EDNS version


def question_end(data: bytes) -> int:
    """Offset just past the question at offset 12, which may hold no pointer."""
    n = len(data)
    off = 12
    while True:
        if off >= n:
            raise Truncated
        length = data[off]
        if length == 0:
            break
        if length > 63:
            # Nothing precedes the question, so a pointer here is always bogus;
            # refusing it also rules out pointer loops in queries.
            raise BadPointer if length >= 0xC0 else BadLabel
        off += length + 1
        if off - 12 > 254:  # plus the root octet: more than 255
            raise NameTooLong
    off += 5  # root octet, QTYPE, QCLASS
    if off > n:
        raise Truncated
    return off


def skip_name(msg: bytes, off: int) -> int:
    """Offset past the name at ``off``; a pointer ends it and is not followed."""
    n = len(msg)
    start = off
    while True:
        if off >= n:
            raise Truncated
        length = msg[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            if off + 2 > n:
                raise Truncated
            return off + 2
        if length > 63:
            raise BadLabel
        off += length + 1
        if off - start > 254:
            raise NameTooLong


def read_name(msg: bytes, off: int) -> tuple[bytes, int]:
    """The lower-case wire form of the (maybe compressed) name at ``off``, and the offset past it.

    Pointers must point backwards and at most MAX_POINTER_JUMPS are followed;
    with the 255-octet limit that bounds the work on hostile input.
    """
    n = len(msg)
    out = bytearray()
    end = -1
    jumps = 0
    pos = off
    while True:
        if pos >= n:
            raise Truncated
        length = msg[pos]
        if length == 0:
            out.append(0)
            return bytes(out).lower(), (pos + 1 if end < 0 else end)
        if length >= 0xC0:
            if pos + 2 > n:
                raise Truncated
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if target >= pos:
                raise BadPointer
            jumps += 1
            if jumps > MAX_POINTER_JUMPS:
                raise BadPointer
            if end < 0:
                end = pos + 2
            pos = target
            continue
        if length > 63:
            raise BadLabel
        if pos + 1 + length > n:
            raise Truncated
        out += msg[pos : pos + 1 + length]
        if len(out) > 254:
            raise NameTooLong
        pos += 1 + length


def records(data: bytes, off: int, an: int, ns: int, ar: int) -> Iterator[RecordAt]:
    """Every RR after the question, bounds-checked: (index, type, class, TTL, RDATA offset, end).

    An OPT outside the additional section, or with an owner other than the root,
    is refused here, for queries and answers alike.
    """
    n = len(data)
    first_additional = an + ns
    # Each RR takes at least 11 octets, so hostile counts end in Truncated quickly.
    for i in range(an + ns + ar):
        owner = off
        off = skip_name(data, off)
        if off + 10 > n:
            raise Truncated
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, off)
        rdata = off + 10
        off = rdata + rdlen
        if off > n:
            raise Truncated
        if rtype == T_OPT and (i < first_additional or data[owner] != 0):
            raise BadOpt
        yield i, rtype, rclass, ttl, rdata, off


def find_opt(data: bytes, off: int, an: int, ns: int, ar: int) -> tuple[int, int] | None:
    """(CLASS, TTL) of the query's OPT record, walking every RR after the question."""
    opt: tuple[int, int] | None = None
    for _i, rtype, rclass, ttl, _rdata, _end in records(data, off, an, ns, ar):
        if rtype == T_OPT:
            if opt is not None:
                raise BadOpt
            opt = (rclass, ttl)
    return opt


def parse_query(data: bytes) -> Query:
    """Read a query whose header (12 octets, QR=0) the caller has checked."""
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    if qd != 1:
        raise BadQuestion
    qend = question_end(data)
    qtype, qclass = QTYPE_QCLASS.unpack_from(data, qend - 4)
    qname = data[12 : qend - 4].lower()
    question = data[12:qend]
    if not (an or ns or ar):
        return Query(qid, flags, qname, question, qtype, qclass, False, False, 512, 0)
    opt: tuple[int, int] | None = None
    if ar == 1 and not an and not ns and len(data) >= qend + 11 and data[qend] == 0:
        # The usual shape, read in one unpack: a single OPT right after the question.
        _root, rtype, size, ttl, rdlen = _ROOT_RR.unpack_from(data, qend)
        if rtype == T_OPT and qend + 11 + rdlen <= len(data):
            opt = (size, ttl)
    if opt is None:
        opt = find_opt(data, qend, an, ns, ar)
        if opt is None:
            return Query(qid, flags, qname, question, qtype, qclass, False, False, 512, 0)
    size, ttl = opt
    return Query(
        qid,
        flags,
        qname,
        question,
        qtype,
        qclass,
        True,
        ttl & 0x8000 != 0,
        size if size > 512 else 512,  # RFC 6891 §6.2.3: below 512 means 512
        (ttl >> 16) & 0xFF,
    )


def answer_flags(qflags: int, rcode: int) -> int:
    """Our answer's flags: QR, RA and the rcode set; opcode, RD and CD copied from the query."""
    return QR | (qflags & (OPCODE | RD | CD)) | RA | rcode


def opt_rr(do_bit: bool, options: bytes = b"", ext_rcode: int = 0) -> bytes:
    """Our OPT record: root owner, UDP size 1232, version 0, DO as given."""
    ttl = (ext_rcode << 24) | (0x8000 if do_bit else 0)
    return b"\x00" + RR_FIXED.pack(T_OPT, EDNS_UDP_SIZE, ttl, len(options)) + options


def ede_option(info_code: int, text: bytes = b"") -> bytes:
    """An Extended DNS Error option (RFC 8914 §2)."""
    return U16.pack(EDE_OPTION) + U16.pack(2 + len(text)) + U16.pack(info_code) + text


def utf8_prefix(text: bytes, limit: int) -> bytes:
    """The longest prefix of UTF-8 ``text`` of at most ``limit`` octets that ends on a character."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return b""
    cut = limit
    while cut > 0 and (text[cut] & 0xC0) == 0x80:  # a continuation octet: step back
        cut -= 1
    return text[:cut]


def short_answer(client_id: int, flags: int, question: bytes, opt: bytes = b"") -> bytes:
    """Header, the question if any, and an OPT if any: errors and TC=1 answers."""
    header = HEADER.pack(client_id, flags, 1 if question else 0, 0, 0, 1 if opt else 0)
    return header + question + opt


@dataclass(slots=True)
class ReplyScan:
    """What the engine and cache need from an upstream reply, found in one walk."""

    flags: int
    ancount: int
    ttl_offsets: list[int] = field(default_factory=list)  # every RR's TTL except OPT's
    ttls: list[int] = field(default_factory=list)
    min_ttl: int | None = None  # over answer and authority
    negative_ttl: int | None = None  # min(SOA TTL, SOA MINIMUM) of an authority SOA
    targets: list[bytes] = field(default_factory=list)  # CNAME/DNAME targets in the answer

    @property
    def rcode(self) -> int:
        return self.flags & 0x000F


def scan_reply(reply: bytes, question: bytes) -> ReplyScan:
    """Check an upstream reply answers ``question`` and walk its records."""
    n = len(reply)
    if n < 12:
        raise Truncated
    _id, flags, qd, an, ns, ar = HEADER.unpack_from(reply)
    if not flags & QR:
        raise NotAReply
    off = 12 + len(question)
    if qd != 1 or off > n or reply[12:off].lower() != question.lower():
        raise WrongQuestion
    scan = ReplyScan(flags, an)
    first_additional = an + ns
    for i, rtype, _rclass, ttl, rdata, rr_end in records(reply, off, an, ns, ar):
        if rtype == T_OPT:
            continue  # its "TTL" holds flags, not a time
        if ttl & 0x80000000:  # RFC 2181 §8: a TTL with the top bit set means 0
            ttl = 0
        scan.ttl_offsets.append(rdata - 6)
        scan.ttls.append(ttl)
        if i >= first_additional:
            continue
        if scan.min_ttl is None or ttl < scan.min_ttl:
            scan.min_ttl = ttl
        if i < an and rtype in (T_CNAME, T_DNAME):
            target, end = read_name(reply, rdata)
            if end > rr_end:
                raise Truncated
            scan.targets.append(target)
        elif i >= an and rtype == T_SOA and rr_end - rdata >= 22:
            minimum = U32.unpack_from(reply, rr_end - 4)[0]
            neg = min(ttl, minimum)
            if scan.negative_ttl is None or neg < scan.negative_ttl:
                scan.negative_ttl = neg
    return scan
