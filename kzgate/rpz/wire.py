"""Zone transfer answers as a stream of wire messages (pure).

Records are rendered by ``zone.Renderer`` straight into message buffers of at
most ~16 KiB, so a 1M-name AXFR never exists as one object: the consumer pulls
one message at a time. Each message repeats the question, which keeps the
origin at offset 12 for name compression (RFC 5936 section 2.2 allows it).

TSIG (RFC 8945 section 5.3.1): the first message is signed over the request
MAC, each later one over the previous MAC; dnspython's ``dns.tsig.sign`` does
the HMAC and chains the context, we only frame the TSIG record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from kzgate.rpz.zone import IN, Change, Item, Renderer, name_wire

LIMIT = 16_000  # bytes of records per message; TSIG adds about 100
AXFR, IXFR = 252, 251
_QR_AA = 0x8400
FUDGE = 300  # seconds of clock skew a TSIG tolerates (RFC 8945 recommends 300)


class Signer:
    """Signs the messages of one answer in order, chaining the TSIG context."""

    def __init__(self, key: dns.tsig.Key, request_mac: bytes, original_id: int, now: int) -> None:
        self._key = key
        self._request_mac: bytes | None = request_mac
        self._id = original_id
        self._now = now
        self._ctx: object = None
        owner = key.name.to_wire()
        assert owner is not None  # to_wire() without a file returns the bytes
        self._owner: bytes = owner

    def sign(self, wire: bytes) -> bytes:
        template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            self._key.algorithm,
            self._now,
            FUDGE,
            b"",
            self._id,
            0,
            b"",
        )
        tsig, self._ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
            wire, self._key, template, self._now, self._request_mac, self._ctx, True
        )
        self._request_mac = None  # only the first message covers the request MAC
        rdata: bytes = tsig.to_wire()
        arcount = struct.unpack_from("!H", wire, 10)[0] + 1
        record = self._owner + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
        return wire[:10] + struct.pack("!H", arcount) + wire[12:] + record


def pack(
    renderer: Renderer,
    items: Iterable[Item],
    *,
    query_id: int,
    qtype: int,
    rd: bool,
    signer: Signer | None,
    limit: int = LIMIT,
) -> Iterator[bytes]:
    """The messages carrying every record of ``items``, in order."""
    question = name_wire(renderer.params.origin) + struct.pack("!HH", qtype, IN)
    flags = _QR_AA | (0x0100 if rd else 0)
    start = 12 + len(question)
    buf = bytearray(start)
    count = 0

    def finish() -> bytes:
        struct.pack_into("!HHHHHH", buf, 0, query_id, flags, 1, count, 0, 0)
        buf[12:start] = question
        wire = bytes(buf)
        return signer.sign(wire) if signer else wire

    for item in items:
        rrs, n = renderer.render(item, len(buf))
        if count and len(buf) + len(rrs) > limit:
            yield finish()
            del buf[start:]
            count = 0
            rrs, n = renderer.render(item, len(buf))  # compression offsets moved
        buf += rrs
        count += n
    yield finish()


def axfr_items(serial: int, items: list[Item]) -> Iterator[Item]:
    """RFC 5936 section 2.2: the SOA, every other record, the SOA again."""
    yield serial
    yield from items
    yield serial


def ixfr_items(current: int, changes: list[Change]) -> Iterator[Item]:
    """RFC 1995 section 4: SOA new, then per change SOA old, deletions, SOA next,
    additions; SOA new last. With no changes, the SOA alone (the client is current)."""
    yield current
    for change in changes:
        yield change.old
        yield from change.removed()
        yield change.new
        yield from change.added()
    if changes:
        yield current
