"""Raw-bytes readers and builders of kzgate.dns.wire, against hand-made and dnslib messages."""

import struct

import dnslib
import pytest

from kzgate.dns import wire
from kzgate.names import domain_to_wire
from tests.support.dnsmsg import query


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!6H", 0xBEEF, flags, qd, an, ns, ar)


def test_parse_query_reads_the_question_and_keeps_its_case() -> None:
    q = wire.parse_query(query("WwW.ExAmPle.KZ", "AAAA"))
    assert q.qname == domain_to_wire("www.example.kz")
    assert q.question == b"\x03WwW\x07ExAmPle\x02KZ\x00\x00\x1c\x00\x01"
    assert (q.qtype, q.qclass, q.edns, q.udp_size) == (28, 1, False, 512)


def test_parse_query_reads_the_opt_record() -> None:
    q = wire.parse_query(query("a.kz", edns=True, udp=4096, do=True, version=0))
    assert (q.edns, q.do_bit, q.udp_size, q.version) == (True, True, 4096, 0)
    q = wire.parse_query(query("a.kz", edns=True, udp=100, version=3))
    assert (q.edns, q.do_bit, q.udp_size, q.version) == (True, False, 512, 3)


def test_find_opt_skips_answer_records_with_pointers_without_following_them() -> None:
    question = b"\x01a\x02kz\x00\x00\x01\x00\x01"
    # answer RR owned by a pointer to the question name, authority RR with a bogus
    # forward pointer as owner (skipped, never followed), then an OPT.
    an = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"
    ns = b"\xc3\xff" + struct.pack("!HHIH", 16, 1, 60, 2) + b"\x01x"
    opt = b"\x00" + struct.pack("!HHIH", 41, 1400, 0x8000, 0)
    q = wire.parse_query(header(an=1, ns=1, ar=1) + question + an + ns + opt)
    assert (q.edns, q.do_bit, q.udp_size) == (True, True, 1400)


@pytest.mark.parametrize(
    ("extra", "counts", "error"),
    [
        (b"\x00" + struct.pack("!HHIH", 41, 512, 0, 0) * 1, {"ar": 2}, wire.Truncated),
        ((b"\x00" + struct.pack("!HHIH", 41, 512, 0, 0)) * 2, {"ar": 2}, wire.BadOpt),
        (b"\x01x\x00" + struct.pack("!HHIH", 41, 512, 0, 0), {"ar": 1}, wire.BadOpt),
        (b"\x00" + struct.pack("!HHIH", 41, 512, 0, 0), {"an": 1}, wire.BadOpt),
        (b"\x00" + struct.pack("!HHIH", 41, 512, 0, 9), {"ar": 1}, wire.Truncated),
    ],
    ids=["missing-second-rr", "two-opts", "opt-not-root", "opt-in-answer", "rdata-overrun"],
)
def test_bad_additional_sections(extra: bytes, counts: dict[str, int], error: type) -> None:
    data = header(**counts) + b"\x01a\x02kz\x00\x00\x01\x00\x01" + extra
    with pytest.raises(error):
        wire.parse_query(data)


def long_name(octets: int) -> bytes:
    """A wire name of exactly ``octets`` octets (root included)."""
    body = b""
    left = octets - 1
    while left:
        size = min(63, left - 1)
        body += bytes([size]) + b"a" * size
        left -= size + 1
    return body + b"\x00"


@pytest.mark.parametrize(
    ("question", "error"),
    [
        (b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", wire.BadLabel),  # label of 64
        (b"\x81abc\x00\x00\x01\x00\x01", wire.BadLabel),  # label type 10
        (long_name(256) + b"\x00\x01\x00\x01", wire.NameTooLong),
        (b"\xc0\x0c\x00\x01\x00\x01", wire.BadPointer),  # loop onto itself
        (b"\xc0\x20\x00\x01\x00\x01", wire.BadPointer),  # forward pointer
        (b"\x03abc", wire.Truncated),  # no root octet
        (b"\x03abc\x00\x00\x01", wire.Truncated),  # no QCLASS
        (b"\x05ab", wire.Truncated),  # label runs off the end
    ],
    ids=["label-64", "label-type-10", "name-256", "pointer-loop", "forward-pointer",
         "no-root", "no-qclass", "short-label"],
)  # fmt: skip
def test_question_errors(question: bytes, error: type) -> None:
    with pytest.raises(error):
        wire.question_end(header() + question)


def test_names_of_255_octets_are_accepted() -> None:
    data = header() + long_name(255) + b"\x00\x01\x00\x01"
    assert wire.question_end(data) == len(data)


def test_read_name_decompresses_backward_pointers_in_lower_case() -> None:
    msg = header() + b"\x02KZ\x00" + b"\x03WwW\xc0\x0c"
    assert wire.read_name(msg, 16) == (b"\x03www\x02kz\x00", 22)


@pytest.mark.parametrize(
    "msg",
    [
        header() + b"\xc0\x0c",  # points at itself
        header() + b"\xc0\x0e\x00",  # forward
        header() + b"\x01a\xc0\x0c",  # backward, yet a loop: bounded by the name length
        header() + b"\x03abc",  # runs off the end
    ],
)
def test_read_name_rejects_loops_and_forward_pointers(msg: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.read_name(msg, 12)


def test_read_name_limits_pointer_jumps() -> None:
    # A chain of 200 pointers, each to the one before: backward, finite, too many jumps.
    msg = bytearray(header() + b"\x00")
    for i in range(200):  # pointer i sits at 13 + 2i
        msg += struct.pack("!H", 0xC000 | (11 + 2 * i if i else 12))
    with pytest.raises(wire.BadPointer):
        wire.read_name(bytes(msg), len(msg) - 2)
    assert wire.read_name(bytes(msg), 13 + 2 * 100)[0] == b"\x00"


def test_utf8_prefix_cuts_on_a_character_boundary() -> None:
    text = "ab№с".encode()  # 2 + 3 + 2 octets
    assert wire.utf8_prefix(text, 100) == text
    assert wire.utf8_prefix(text, 4) == b"ab"
    assert wire.utf8_prefix(text, 5) == "ab№".encode()
    assert wire.utf8_prefix(text, 6) == "ab№".encode()
    assert wire.utf8_prefix(text, 0) == b""


def test_opt_rr_and_ede_option_parse_in_dnslib() -> None:
    opt = wire.opt_rr(True, wire.ede_option(16, b"why"), ext_rcode=1)
    msg = wire.short_answer(7, 0x8180, b"\x01a\x00\x00\x01\x00\x01", opt)
    rec = dnslib.DNSRecord.parse(msg)
    rr = rec.ar[0]
    assert (rr.rtype, rr.rclass, rr.ttl) == (41, 1232, (1 << 24) | 0x8000)
    assert (rr.rdata[0].code, rr.rdata[0].data) == (15, b"\x00\x10why")


def upstream_reply(name: str, zone: str, rcode: int = 0, question_name: str | None = None) -> bytes:
    rec = dnslib.DNSRecord.question(question_name or name, "A").reply()
    rec.header.rcode = rcode
    for rr in dnslib.RR.fromZone(zone):
        if rr.rtype == dnslib.QTYPE.SOA:
            rec.add_auth(rr)
        else:
            rec.add_answer(rr)
    return bytes(rec.pack())


def test_scan_reply_finds_ttls_targets_and_negative_ttl() -> None:
    reply = upstream_reply(
        "www.a.kz",
        "www.a.kz. 300 IN CNAME cdn.B.net.\ncdn.b.net. 120 IN A 192.0.2.1\n"
        "a.kz. 900 IN SOA ns.a.kz. h.a.kz. 1 2 3 4 30",
    )
    q = wire.parse_query(query("www.a.kz"))
    scan = wire.scan_reply(reply, q.question)
    assert scan.ttls == [300, 120, 900]
    assert [struct.unpack_from("!I", reply, off)[0] for off in scan.ttl_offsets] == scan.ttls
    assert scan.targets == [domain_to_wire("cdn.b.net")]
    assert scan.min_ttl == 120
    assert scan.negative_ttl == 30


def test_scan_reply_rejects_other_questions_and_queries() -> None:
    q = wire.parse_query(query("www.a.kz"))
    other = upstream_reply("x", "x. 1 IN A 192.0.2.1", question_name="www.b.kz")
    with pytest.raises(wire.WrongQuestion):
        wire.scan_reply(other, q.question)
    with pytest.raises(wire.NotAReply):
        wire.scan_reply(query("www.a.kz"), q.question)
    with pytest.raises(wire.Truncated):
        wire.scan_reply(b"\x00" * 5, q.question)
    good = upstream_reply("www.a.kz", "www.a.kz. 1 IN A 192.0.2.1")
    with pytest.raises(wire.Truncated):
        wire.scan_reply(good[:-3], q.question)
