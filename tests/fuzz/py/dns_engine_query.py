"""Fuzz the resolver's whole query path: Engine.on_query over UDP and TCP, in every block mode.

The bytes are one datagram (or one TCP message) from a subscriber. on_query documents no error
at all: it returns an answer, a Forward, or None (drop). Every answer must be one the client
can take: its ID, QR set, at most one question (the client's own bytes), no larger than the
transport and the client's EDNS size allow, and parseable by dnspython. A Forward is finished
with "every upstream failed" (the SERVFAIL path), whose answer is held to the same rules.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.rdatatype
from _harness import fuzz, instrumented

with instrumented(__name__):
    from _dnsworld import NOW, engines

    from kzgate.dns import wire
    from kzgate.dns.engine import Engine
    from kzgate.dns.types import Forward

MAX_LEN = 65535  # the largest TCP message; UDP datagrams are shorter
TIMEOUT = 5  # seconds; an engine that takes longer on one query is a denial of service

ENGINES: list[Engine] = engines()


def _limit(data: bytes, tcp: bool) -> int:
    """The most the client accepts: 65,535 over TCP, its EDNS size (at most 1232) or 512."""
    if tcp:
        return 65535
    try:
        q = wire.parse_query(data) if len(data) >= 12 else None
    except wire.WireError:
        q = None
    if q is None:
        return 512
    return min(q.udp_size, wire.EDNS_UDP_SIZE) if q.edns else 512


def _check(data: bytes, out: bytes, limit: int) -> None:
    assert len(out) >= 12 and len(out) <= limit, (len(out), limit)
    assert out[:2] == data[:2] and out[2] & 0x80
    qd = struct.unpack_from("!H", out, 4)[0]
    assert qd in (0, 1)
    if qd:
        end = wire.question_end(out)
        assert out[12:end] == data[12:end], "the answer's question is not the client's"
    if out[2] & 0x78:
        return  # NOTIMP echoes another opcode (UPDATE...), which dnspython reads by its own rules
    try:
        msg = dns.message.from_wire(out)
    except dns.exception.DNSException as exc:
        raise AssertionError(f"answer dnspython cannot parse: {exc!r}") from exc
    # A block answer's SOA owner is a pointer into the question name: it must land on a
    # label of it, so the owner is the query name or one of its parents.
    for rrset in msg.authority:
        if rrset.rdtype == dns.rdatatype.SOA and msg.question:
            assert msg.question[0].name.is_subdomain(rrset.name), (msg.question[0].name, rrset)


def target(data: bytes) -> None:
    for tcp in (False, True):
        limit = _limit(data, tcp)
        for engine in ENGINES:
            out = engine.on_query(data, NOW, tcp=tcp)
            if out is None:
                assert len(data) < 12 or data[2] & 0x80, "a query was dropped"
            elif isinstance(out, Forward):
                assert out.max_size == limit and out.client_id == data[0] << 8 | data[1]
                assert out.question == data[12 : 12 + len(out.question)]
                dns.message.from_wire(out.upstream_query)  # what we send upstream is DNS
                _check(data, engine.on_upstream(out, None, NOW), limit)
            else:
                _check(data, out, limit)


if __name__ == "__main__":
    fuzz(target)
