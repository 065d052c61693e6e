"""No input makes the engine raise: arbitrary bytes, mutated queries, scapy-crafted packets.

Every result is None, a Forward, or bytes that are a well-formed answer to the
same ID (dnslib parses them).
"""

import struct

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.config import conf
from scapy.layers.dns import DNS, DNSQR, DNSRROPT
from scapy.packet import Raw

from kzgate.dns import wire
from kzgate.dns.engine import Engine
from kzgate.dns.types import BlockSettings, Forward
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex

conf.verb = 0
REF = InstructionRef("mci", "1", "2026-11-01")


def make_engine(mode: str = "nxdomain") -> Engine:
    index = PolicyIndex()
    index.set_domain("bad.kz", REF)
    return Engine(index, BlockSettings(mode=mode))  # type: ignore[arg-type]


def check(data: bytes, result: object) -> None:
    if result is None or isinstance(result, Forward):
        return
    assert isinstance(result, bytes)
    assert len(result) >= 12 and result[:2] == data[:2] and result[2] & 0x80
    qdcount = struct.unpack_from("!H", result, 4)[0]
    assert qdcount in (0, 1)
    # dnslib decodes labels as UTF-8 text and refuses other octets, which DNS allows.
    if qdcount == 0 or result[12 : wire.question_end(result) - 4].isascii():
        try:
            dnslib.DNSRecord.parse(result)
        except dnslib.DNSError as exc:
            # dnslib refuses an RR with no RDATA, which DNS allows (a forwarded
            # upstream record may have one): then check the framing by hand.
            if "Empty RR" not in str(exc):
                raise
            assert_framed(result)


def assert_framed(msg: bytes) -> None:
    """Every section's records lie exactly within ``msg``, to its last octet."""

    def skip_name(off: int) -> int:
        while True:
            length = msg[off]
            if length & 0xC0 == 0xC0:
                assert off + 2 <= len(msg)
                return off + 2
            assert length < 64
            off += 1 + length
            if length == 0:
                return off

    qd, an, ns, ar = struct.unpack_from("!4H", msg, 4)
    off = 12
    for _ in range(qd):
        off = skip_name(off) + 4
    for _ in range(an + ns + ar):
        off = skip_name(off)
        (rdlength,) = struct.unpack_from("!H", msg, off + 8)
        off += 10 + rdlength
    assert off == len(msg)


def valid_queries() -> st.SearchStrategy[bytes]:
    labels = st.sampled_from(["bad", "kz", "WwW", "a", "x" * 63, "Bad", "good"])
    names = st.lists(labels, min_size=1, max_size=3).map(".".join)
    qtypes = st.sampled_from(["A", "AAAA", "ANY", "MX", "TXT"])

    def build(name: str, qtype: str, edns: bool, do: bool) -> bytes:
        # An explicit header: DNSRecord.question() would draw an ID from `random`.
        q = dnslib.DNSRecord(
            dnslib.DNSHeader(id=0x0707, rd=1),
            q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)),
        )
        if edns:
            q.add_ar(dnslib.EDNS0(udp_len=512, flags="do" if do else ""))
        return bytes(q.pack())

    return st.builds(build, names, qtypes, st.booleans(), st.booleans())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_queries()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "count"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 0x3F, 0x40, 0x80, 0xC0, 0xFF]))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif len(data) >= 12:
            index = draw(st.integers(2, 5))  # one of the four section counts
            struct.pack_into("!H", data, index * 2, draw(st.integers(0, 0xFFFF)))
    return bytes(data)


FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, tcp: bool) -> None:
    check(data, make_engine().on_query(data, 0.0, tcp=tcp))


@FUZZ
@given(mutated(), st.sampled_from(["nxdomain", "sinkhole", "refused"]))
def test_mutated_queries_never_raise(data: bytes, mode: str) -> None:
    check(data, make_engine(mode).on_query(data, 0.0))


@FUZZ
@given(valid_queries(), st.binary(max_size=400), mutated())
def test_arbitrary_upstream_replies_never_raise(q: bytes, junk: bytes, other: bytes) -> None:
    engine = make_engine()
    fwd = engine.on_query(q, 0.0)
    if not isinstance(fwd, Forward):
        return
    for reply in (junk, fwd.upstream_query[:12] + junk, other):
        answer = engine.on_upstream(fwd, reply, 0.0)
        check(q, answer)
    # whatever got cached must be servable
    check(q, engine.on_query(q, 1.0))


@FUZZ
@given(valid_queries(), st.binary(max_size=300))
def test_mangled_answer_sections_never_raise(q: bytes, tail: bytes) -> None:
    engine = make_engine()
    fwd = engine.on_query(q, 0.0)
    if not isinstance(fwd, Forward):
        return
    header = bytearray(fwd.upstream_query[:12])
    header[2] |= 0x80
    question_end = 12 + len(fwd.question)
    for counts in ((1, 0, 0), (0, 1, 0), (3, 2, 1), (0xFFFF, 0, 0)):
        struct.pack_into("!3H", header, 6, *counts)
        reply = bytes(header) + fwd.upstream_query[12:question_end] + tail
        check(q, engine.on_upstream(fwd, reply, 0.0))


def scapy_packets() -> list[tuple[str, bytes]]:
    q = DNSQR(qname="www.bad.kz", qtype="A")
    loop = raw(DNS(id=7, qd=q))[:12] + b"\x01a\xc0\x0c\x00\x01\x00\x01"
    forward_ptr = raw(DNS(id=7, qd=q))[:12] + b"\xc0\x40\x00\x01\x00\x01" + b"\x00" * 60
    return [
        ("qdcount-0", raw(DNS(id=7, qdcount=0, qd=q))),
        ("qdcount-2-one-question", raw(DNS(id=7, qdcount=2, qd=q))),
        ("qdcount-65535", raw(DNS(id=7, qdcount=65535, qd=q))),
        ("ancount-lies", raw(DNS(id=7, ancount=200, qd=q))),
        ("arcount-lies", raw(DNS(id=7, arcount=9, qd=q))),
        ("long-label", raw(DNS(id=7)) [:4] + b"\x00\x01" + b"\x00" * 6
         + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01"),
        ("long-name", raw(DNS(id=7, qd=DNSQR(qname=".".join(["a" * 60] * 5))))),
        ("pointer-loop", loop),
        ("forward-pointer", forward_ptr),
        ("truncated", raw(DNS(id=7, qd=q))[:-3]),
        ("qr-set", raw(DNS(id=7, qr=1, qd=q))),
        ("opcode-status", raw(DNS(id=7, opcode=2, qd=q))),
        ("opcode-update", raw(DNS(id=7, opcode=5, qd=q))),
        ("edns-v1", raw(DNS(id=7, qd=q, ar=DNSRROPT(rclass=4096, version=1)))),
        ("edns-ok", raw(DNS(id=7, qd=q, ar=DNSRROPT(rclass=4096)))),
        ("two-opts", raw(DNS(id=7, qd=q, ar=[DNSRROPT(rclass=4096), DNSRROPT(rclass=512)]))),
        ("garbage-tail", raw(DNS(id=7, qd=q) / Raw(b"\xff" * 40))),
        ("header-only", raw(DNS(id=7, qd=q))[:12]),
    ]  # fmt: skip


@pytest.mark.parametrize(("label", "data"), scapy_packets(), ids=[n for n, _ in scapy_packets()])
def test_scapy_crafted_packets(label: str, data: bytes) -> None:
    engine = make_engine()
    result = engine.on_query(data, 0.0)
    check(data, result)
    expected = {
        "qr-set": None,
        "edns-ok": 3,
        "garbage-tail": 3,
        "opcode-status": 4,
        "opcode-update": 4,
        "edns-v1": 0,
    }.get(label, 1)
    if expected is None:
        assert result is None
    else:
        assert isinstance(result, bytes) and result[3] & 0x0F == expected, (label, result)
