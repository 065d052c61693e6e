"""The sans-IO engine: block answers, forwarding, caching, policy changes, bad input.

Queries are built and answers parsed with dnslib; the engine never sees a socket.
"""

import ipaddress
import struct

import dnslib
import pytest

from kzgate.dns.cache import Cache
from kzgate.dns.engine import Engine
from kzgate.dns.types import BlockSettings, Forward
from kzgate.model import InstructionRef
from kzgate.names import domain_to_wire
from kzgate.policy import PolicyIndex
from tests.support.dnsmsg import query

REF = InstructionRef("mci", "42", "2026-11-01")
CNAME_REF = InstructionRef("mci", "43", "2026-11-02")
TEXT = "restricted by mci No. 42 of 2026-11-01"


def parse(answer: object) -> dnslib.DNSRecord:
    assert isinstance(answer, bytes), answer
    return dnslib.DNSRecord.parse(answer)


def make_engine(settings: BlockSettings | None = None, cache: Cache | None = None) -> Engine:
    index = PolicyIndex()
    index.set_domain("bad.kz", REF)
    return Engine(index, settings or BlockSettings(), cache=cache)


def forward(engine: Engine, data: bytes, now: float = 0.0) -> Forward:
    fwd = engine.on_query(data, now)
    assert isinstance(fwd, Forward), fwd
    return fwd


def reply_to(
    fwd: Forward,
    zone: str = "",
    rcode: int = 0,
    *,
    qid: int = 0x7777,
    extra: tuple[dnslib.RR, ...] = (),
) -> bytes:
    """An upstream's answer to the Forward's query (its own ID; upstream keeps the case)."""
    rec = dnslib.DNSRecord.parse(fwd.upstream_query).reply()
    rec.header.id = qid
    rec.header.rcode = rcode
    for rr in [*extra, *(dnslib.RR.fromZone(zone) if zone else [])]:
        (rec.add_auth if rr.rtype == dnslib.QTYPE.SOA else rec.add_answer)(rr)
    return bytes(rec.pack())


def opt_of(rec: dnslib.DNSRecord) -> dnslib.RR:
    opts = [rr for rr in rec.ar if rr.rtype == 41]
    assert len(opts) == 1
    return opts[0]


def ede_of(rec: dnslib.DNSRecord) -> tuple[int, bytes]:
    (option,) = [o for o in opt_of(rec).rdata if o.code == 15]
    return struct.unpack("!H", option.data[:2])[0], option.data[2:]


# --- block answers -------------------------------------------------------------------


def test_nxdomain_block_edits_the_query_and_keeps_id_and_case() -> None:
    engine = make_engine()
    data = query("WwW.BaD.kz", qid=0xABCD, cd=True)
    rec = parse(engine.on_query(data, 0.0))
    h = rec.header
    assert (h.id, h.qr, h.aa, h.tc, h.rd, h.ra, h.cd, h.rcode) == (0xABCD, 1, 0, 0, 1, 1, 1, 3)
    assert str(rec.q.qname) == "WwW.BaD.kz."
    assert rec.rr == [] and rec.ar == []
    (soa,) = rec.auth
    assert soa.rtype == dnslib.QTYPE.SOA
    assert str(soa.rname) == "BaD.kz."  # a pointer into the client's own question
    assert soa.ttl == 60
    assert str(soa.rdata.mname) == "kzgate.invalid."
    assert str(soa.rdata.rname) == "hostmaster.kzgate.invalid."
    assert soa.rdata.times == (1, 3600, 600, 86400, 60)
    assert engine.stats.verdicts["blocked"] == 1


def test_block_without_rd_copies_rd_zero() -> None:
    rec = parse(make_engine().on_query(query("bad.kz", rd=False), 0.0))
    assert (rec.header.rd, rec.header.rcode) == (0, 3)


def test_block_with_edns_carries_ede_16_naming_the_instruction() -> None:
    engine = make_engine()
    rec = parse(engine.on_query(query("x.bad.kz", edns=True, do=True, udp=4096), 0.0))
    opt = opt_of(rec)
    assert str(opt.rname) == "."
    assert opt.rclass == 1232
    assert opt.ttl == 0x8000  # ext-rcode 0, version 0, DO copied
    assert ede_of(rec) == (16, TEXT.encode())
    assert "No. 42" in TEXT and "2026-11-01" in TEXT
    assert rec.header.rcode == 3 and len(rec.auth) == 1


def test_block_without_do_clears_do_and_drops_client_options() -> None:
    data = query("bad.kz", edns=True, options=[dnslib.EDNSOption(10, b"cookie12")])
    rec = parse(make_engine().on_query(data, 0.0))
    assert opt_of(rec).ttl == 0
    assert [o.code for o in opt_of(rec).rdata] == [15]
    assert len(rec.ar) == 1


def test_ede_text_is_truncated_on_a_character_to_fit_512_octets() -> None:
    index = PolicyIndex()
    long_ref = InstructionRef("Министерство цифрового развития" * 3, "42", "2026-11-01")
    labels = ["a" * 60, "b" * 60, "c" * 60, "d" * 56]
    restricted = ".".join([*labels[1:], "kz"])
    index.set_domain(restricted, long_ref)
    engine = Engine(index, BlockSettings())
    answer = engine.on_query(query(".".join([*labels, "kz"]), edns=True, udp=512), 0.0)
    assert isinstance(answer, bytes)
    assert len(answer) <= 512
    rec = parse(answer)
    assert rec.header.tc == 0
    code, text = ede_of(rec)
    assert code == 16
    full = f"restricted by {long_ref.label()}".encode()
    assert 0 < len(text) < 200 and full.startswith(text)
    text.decode("utf-8")  # cut on a character boundary
    assert len(answer) >= 510  # filled up to the limit, less at most one character


def test_ede_text_is_at_most_200_octets() -> None:
    index = PolicyIndex()
    index.set_domain("bad.kz", InstructionRef("x" * 300, "1", "2026-01-01"))
    rec = parse(Engine(index, BlockSettings()).on_query(query("bad.kz", edns=True), 0.0))
    assert len(ede_of(rec)[1]) == 200


@pytest.mark.parametrize(
    ("qtype", "answers"),
    [
        ("A", [("A", "192.0.2.80")]),
        ("AAAA", [("AAAA", "2001:db8::80")]),
        ("ANY", [("A", "192.0.2.80"), ("AAAA", "2001:db8::80")]),
        ("MX", []),
    ],
)
def test_sinkhole_answers_addresses_and_nodata_otherwise(
    qtype: str, answers: list[tuple[str, str]]
) -> None:
    settings = BlockSettings(
        mode="sinkhole",
        ttl=30,
        sinkhole_ipv4=ipaddress.IPv4Address("192.0.2.80"),
        sinkhole_ipv6=ipaddress.IPv6Address("2001:db8::80"),
    )
    rec = parse(make_engine(settings).on_query(query("Www.Bad.kz", qtype, edns=True), 0.0))
    assert rec.header.rcode == 0
    got = [(dnslib.QTYPE[rr.rtype], str(rr.rdata)) for rr in rec.rr]
    assert got == answers
    assert all(str(rr.rname) == "Www.Bad.kz." and rr.ttl == 30 for rr in rec.rr)
    if answers:
        assert rec.auth == []
    else:
        (soa,) = rec.auth
        assert (str(soa.rname), soa.rdata.times[-1]) == ("Bad.kz.", 30)
    assert ede_of(rec)[0] == 16


def test_refused_mode_has_no_records() -> None:
    rec = parse(make_engine(BlockSettings(mode="refused")).on_query(query("bad.kz"), 0.0))
    assert rec.header.rcode == 5
    assert (rec.rr, rec.auth, rec.ar) == ([], [], [])


def test_settings_can_be_replaced_at_runtime() -> None:
    engine = make_engine()
    engine.settings = BlockSettings(mode="refused")
    assert parse(engine.on_query(query("bad.kz"), 0.0)).header.rcode == 5
    assert engine.settings.mode == "refused"


def test_largest_block_answer_fits_512_and_smaller_limits_set_tc() -> None:
    engine = make_engine(BlockSettings(mode="sinkhole"))
    longest = ".".join(["a" * 63] * 3 + ["a" * 54, "bad", "kz"])  # 255 octets on the wire
    data = query(longest, "ANY")
    rec = parse(engine.on_query(data, 0.0))
    assert (rec.header.tc, len(rec.rr)) == (0, 2)
    # No valid name makes a block answer overflow 512, so drive the limit directly.
    question = data[12:]
    for edns in (False, True):
        tiny = engine._block.answer(7, 0x0100, question, 255, 12, REF, edns, True, 300)
        rec = parse(tiny)
        assert (rec.header.id, rec.header.tc, rec.rr, rec.auth) == (7, 1, [], [])
        assert str(rec.q.qname) == longest + "."
        assert len(rec.ar) == int(edns)


# --- bad input -----------------------------------------------------------------------


def raw(flags: int = 0x0100, qd: int = 1, ar: int = 0, body: bytes = b"") -> bytes:
    return struct.pack("!6H", 0x4242, flags, qd, 0, 0, ar) + body


GOOD_Q = b"\x01a\x02kz\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x12\x34", raw()[:11], raw(flags=0x8100, body=GOOD_Q)],
    ids=["empty", "two-octets", "short-header", "qr-set"],
)
def test_unanswerable_packets_are_dropped(data: bytes) -> None:
    engine = make_engine()
    assert engine.on_query(data, 0.0) is None
    assert engine.stats.verdicts["dropped"] == 1


@pytest.mark.parametrize(
    "data",
    [
        raw(qd=0),
        raw(qd=2, body=GOOD_Q + GOOD_Q),
        raw(body=b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"),
        raw(body=(b"\x3f" + b"a" * 63) * 4 + b"\x03abc\x00\x00\x01\x00\x01"),
        raw(body=b"\x01a\xc0\x0c\x00\x01\x00\x01"),
        raw(body=b"\xc0\x0c\x00\x01\x00\x01"),
        raw(body=b"\xc0\x30\x00\x01\x00\x01" + b"\x00" * 40),
        raw(body=b"\x01a\x02kz\x00\x00\x01"),
        raw(body=b"\x01a\x02k"),
        raw(ar=2, body=GOOD_Q + (b"\x00" + struct.pack("!HHIH", 41, 512, 0, 0)) * 2),
    ],
    ids=["qdcount-0", "qdcount-2", "label-64", "name-256", "pointer-loop", "pointer-self",
         "forward-pointer", "truncated-qtype", "truncated-name", "two-opts"],
)  # fmt: skip
def test_malformed_queries_get_formerr(data: bytes) -> None:
    engine = make_engine()
    rec = parse(engine.on_query(data, 0.0))
    assert (rec.header.id, rec.header.qr, rec.header.rcode) == (0x4242, 1, 1)
    assert engine.stats.verdicts["formerr"] == 1


def test_notimp_echoes_the_question_and_opcode() -> None:
    engine = make_engine()
    rec = parse(engine.on_query(raw(flags=0x2100, body=GOOD_Q), 0.0))  # opcode 4 NOTIFY
    assert (rec.header.opcode, rec.header.rcode) == (4, 4)
    assert str(rec.q.qname) == "a.kz."
    assert engine.stats.verdicts["notimp"] == 1


def test_edns_version_1_gets_badvers() -> None:
    rec = parse(make_engine().on_query(query("a.kz", edns=True, version=1, do=True), 0.0))
    assert rec.header.rcode == 0
    opt = opt_of(rec)
    assert opt.ttl >> 24 == 1  # ext-rcode 1 with header rcode 0: BADVERS (16)
    assert (opt.ttl >> 16) & 0xFF == 0
    assert opt.ttl & 0x8000


# --- forwarding ----------------------------------------------------------------------


def test_forward_asks_upstream_with_a_clean_query() -> None:
    engine = make_engine()
    cookie = dnslib.EDNSOption(10, b"12345678")
    data = query("WwW.Good.kz", "AAAA", qid=99, edns=True, do=True, cd=True, options=[cookie])
    fwd = forward(engine, data)
    up = dnslib.DNSRecord.parse(fwd.upstream_query)
    assert (up.header.id, up.header.rd, up.header.cd, up.header.qr) == (0, 1, 1, 0)
    assert str(up.q.qname) == "WwW.Good.kz." and up.q.qtype == 28
    opt = opt_of(up)
    assert (opt.rclass, opt.ttl, opt.rdata) == (1232, 0x8000, [])
    assert fwd.client_id == 99 and fwd.name == domain_to_wire("www.good.kz")
    assert (fwd.edns, fwd.do_bit, fwd.max_size) == (True, True, 1232)


def test_forward_without_edns_sends_no_opt_and_keeps_rd_set() -> None:
    fwd = forward(make_engine(), query("good.kz", rd=False))
    up = dnslib.DNSRecord.parse(fwd.upstream_query)
    assert up.ar == [] and up.header.rd == 1
    assert fwd.max_size == 512


@pytest.mark.parametrize(
    ("tcp", "edns", "udp", "size"),
    [(True, False, 0, 65535), (False, True, 4096, 1232), (False, True, 700, 700),
     (False, True, 100, 512), (False, False, 0, 512)],
)  # fmt: skip
def test_max_answer_size(tcp: bool, edns: bool, udp: int, size: int) -> None:
    fwd = make_engine().on_query(query("good.kz", edns=edns, udp=udp), 0.0, tcp=tcp)
    assert isinstance(fwd, Forward) and fwd.max_size == size


def test_upstream_answer_gets_client_id_rd_and_case() -> None:
    engine = make_engine()
    fwd = forward(engine, query("WwW.Good.kz", qid=0x0101, rd=False))
    up = reply_to(fwd, "www.good.kz. 300 IN A 192.0.2.9")
    rec = parse(engine.on_upstream(fwd, up, 0.0))
    assert (rec.header.id, rec.header.rd) == (0x0101, 0)
    assert str(rec.q.qname) == "WwW.Good.kz."
    assert [str(rr.rdata) for rr in rec.rr] == ["192.0.2.9"]
    assert engine.stats.verdicts["forwarded"] == 1


def test_no_upstream_answer_is_servfail_with_ede_22() -> None:
    engine = make_engine()
    fwd = forward(engine, query("good.kz", edns=True, do=True))
    rec = parse(engine.on_upstream(fwd, None, 0.0))
    assert rec.header.rcode == 2
    assert ede_of(rec) == (22, b"")
    assert opt_of(rec).ttl == 0x8000
    assert engine.stats.verdicts["servfail"] == 1


def test_bad_upstream_answers_are_servfail() -> None:
    engine = make_engine()
    fwd = forward(engine, query("good.kz"))
    other = forward(engine, query("other.kz"))
    for bad in (b"\x00" * 11, fwd.upstream_query, reply_to(other, "other.kz. 5 IN A 192.0.2.1")):
        rec = parse(engine.on_upstream(fwd, bad, 0.0))
        assert (rec.header.id, rec.header.rcode, rec.ar) == (0x1234, 2, [])
    assert engine.stats.verdicts["servfail"] == 3


def test_upstream_question_case_may_differ() -> None:
    engine = make_engine()
    fwd = forward(engine, query("WwW.Good.kz"))
    up = bytearray(reply_to(fwd, "www.good.kz. 300 IN A 192.0.2.9"))
    up[13:16] = b"www"
    rec = parse(engine.on_upstream(fwd, bytes(up), 0.0))
    assert rec.header.rcode == 0 and str(rec.q.qname) == "WwW.Good.kz."


def test_oversize_upstream_answer_is_truncated_with_tc() -> None:
    engine = make_engine()
    fwd = forward(engine, query("big.kz", "TXT", edns=True, udp=1232))
    zone = "\n".join(f'big.kz. 60 IN TXT "{"x" * 200}{i}"' for i in range(10))
    rec = parse(engine.on_upstream(fwd, reply_to(fwd, zone), 0.0))
    assert (rec.header.tc, rec.rr, len(rec.ar)) == (1, [], 1)
    assert str(rec.q.qname) == "big.kz."


@pytest.mark.parametrize("rtype", ["CNAME", "DNAME"])
def test_cname_into_a_restricted_name_is_blocked_and_not_cached(rtype: str) -> None:
    engine = make_engine()
    engine.index.set_domain("evil.net", CNAME_REF)
    data = query("WwW.Good.kz", edns=True)
    fwd = forward(engine, data)
    # dnslib has no DNAME type; its RDATA is a name, like a CNAME's.
    target = "cdn.EVIL.net." if rtype == "CNAME" else "evil.net."
    redirect = dnslib.RR("www.good.kz", 5 if rtype == "CNAME" else 39, rdata=dnslib.CNAME(target))
    up = reply_to(fwd, "cdn.evil.net. 300 IN A 192.0.2.66", extra=(redirect,))
    rec = parse(engine.on_upstream(fwd, up, 0.0))
    assert rec.header.rcode == 3 and rec.rr == []
    assert str(rec.auth[0].rname) == "WwW.Good.kz."
    assert ede_of(rec) == (16, b"restricted by mci No. 43 of 2026-11-02")
    assert engine.stats.verdicts["blocked_cname"] == 1
    assert len(engine.cache) == 0


def test_cname_outside_the_policy_is_forwarded() -> None:
    engine = make_engine()
    fwd = forward(engine, query("www.good.kz"))
    up = reply_to(
        fwd, "www.good.kz. 300 IN CNAME bad.kz.evil.net.\nbad.kz.evil.net. 9 IN A 1.2.3.4"
    )
    assert parse(engine.on_upstream(fwd, up, 0.0)).header.rcode == 0
    assert engine.stats.verdicts["forwarded"] == 1


# --- cache ---------------------------------------------------------------------------


def cache_answer(engine: Engine, name: str, zone: str, now: float = 0.0, **kw: object) -> None:
    fwd = forward(engine, query(name, **kw), now)  # type: ignore[arg-type]
    engine.on_upstream(fwd, reply_to(fwd, zone), now)


def test_cache_hit_keeps_client_id_case_and_ages_ttls() -> None:
    engine = make_engine()
    zone = "www.good.kz. 300 IN CNAME cdn.good.kz.\ncdn.good.kz. 60 IN A 192.0.2.9"
    cache_answer(engine, "www.good.kz", zone, now=100.0)
    answer = engine.on_query(query("WWW.gOOd.kz", qid=0x5151, rd=False), 110.9)
    rec = parse(answer)
    assert (rec.header.id, rec.header.rd) == (0x5151, 0)
    assert str(rec.q.qname) == "WWW.gOOd.kz."
    assert [rr.ttl for rr in rec.rr] == [290, 50]
    assert engine.stats.verdicts["cached"] == 1 and engine.stats.cache_hits == 1


def test_cache_entry_expires_after_the_smallest_ttl() -> None:
    engine = make_engine()
    cache_answer(engine, "good.kz", "good.kz. 60 IN A 192.0.2.9", now=0.0)
    assert isinstance(engine.on_query(query("good.kz"), 59.9), bytes)
    assert isinstance(engine.on_query(query("good.kz"), 60.0), Forward)
    assert len(engine.cache) == 0


def test_cache_is_keyed_by_type_do_and_edns() -> None:
    engine = make_engine()
    cache_answer(engine, "good.kz", "good.kz. 60 IN A 192.0.2.9")
    assert isinstance(engine.on_query(query("good.kz", "AAAA"), 1.0), Forward)
    assert isinstance(engine.on_query(query("good.kz", edns=True), 1.0), Forward)
    assert isinstance(engine.on_query(query("good.kz", edns=True, do=True), 1.0), Forward)
    assert isinstance(engine.on_query(query("good.kz"), 1.0), bytes)


@pytest.mark.parametrize(("rcode", "expected_ttl"), [(3, 30), (0, 30)])
def test_negative_answers_are_cached_by_soa_minimum(rcode: int, expected_ttl: int) -> None:
    engine = make_engine()
    fwd = forward(engine, query("nx.good.kz"), 0.0)
    soa = "good.kz. 900 IN SOA ns.good.kz. h.good.kz. 1 2 3 4 30"
    engine.on_upstream(fwd, reply_to(fwd, soa, rcode), 0.0)
    rec = parse(engine.on_query(query("nx.good.kz"), 10.0))
    assert rec.header.rcode == rcode and rec.rr == []
    assert rec.auth[0].ttl == 890  # aged like any record
    assert isinstance(engine.on_query(query("nx.good.kz"), expected_ttl), Forward)


@pytest.mark.parametrize(
    ("zone", "rcode"),
    [("", 3), ("", 0), ("x.kz. 60 IN A 192.0.2.1", 2), ("x.kz. 60 IN A 192.0.2.1", 5),
     ("x.kz. 0 IN A 192.0.2.1", 0)],
    ids=["nxdomain-no-soa", "nodata-no-soa", "servfail", "refused", "ttl-0"],
)  # fmt: skip
def test_uncacheable_answers(zone: str, rcode: int) -> None:
    engine = make_engine()
    fwd = forward(engine, query("x.kz"))
    engine.on_upstream(fwd, reply_to(fwd, zone, rcode), 0.0)
    assert len(engine.cache) == 0


def test_truncated_and_cd_answers_are_not_cached() -> None:
    engine = make_engine()
    fwd = forward(engine, query("x.kz"))
    tc = bytearray(reply_to(fwd, "x.kz. 60 IN A 192.0.2.1"))
    tc[2] |= 0x02
    assert parse(engine.on_upstream(fwd, bytes(tc), 0.0)).header.tc == 1
    fwd = forward(engine, query("x.kz", cd=True))
    engine.on_upstream(fwd, reply_to(fwd, "x.kz. 60 IN A 192.0.2.1"), 0.0)
    assert len(engine.cache) == 0


def test_cached_answer_too_big_for_udp_gets_tc() -> None:
    engine = make_engine()
    zone = "\n".join(f'big.kz. 60 IN TXT "{"x" * 200}{i}"' for i in range(5))
    fwd = engine.on_query(query("big.kz", "TXT"), 0.0, tcp=True)
    assert isinstance(fwd, Forward)
    assert len(parse(engine.on_upstream(fwd, reply_to(fwd, zone), 0.0)).rr) == 5
    rec = parse(engine.on_query(query("Big.kz", "TXT", qid=3), 1.0))
    assert (rec.header.id, rec.header.tc, rec.rr, str(rec.q.qname)) == (3, 1, [], "Big.kz.")
    rec = parse(engine.on_query(query("Big.kz", "TXT", qid=3), 1.0, tcp=True))
    assert (rec.header.tc, len(rec.rr)) == (0, 5)


def test_cache_is_bounded() -> None:
    engine = make_engine(cache=Cache(max_entries=3))
    for i in range(5):
        cache_answer(engine, f"n{i}.kz", f"n{i}.kz. 60 IN A 192.0.2.{i}")
    assert len(engine.cache) == 3
    assert isinstance(engine.on_query(query("n0.kz"), 1.0), Forward)
    assert isinstance(engine.on_query(query("n4.kz"), 1.0), bytes)


# --- policy changes meet the cache ---------------------------------------------------


def test_newly_restricted_name_is_never_served_from_the_cache() -> None:
    engine = make_engine()
    cache_answer(engine, "news.kz", "news.kz. 3600 IN A 192.0.2.9")
    assert parse(engine.on_query(query("news.kz"), 1.0)).header.rcode == 0
    engine.index.set_domain("news.kz", REF)
    assert parse(engine.on_query(query("www.news.kz"), 2.0)).header.rcode == 3
    assert parse(engine.on_query(query("news.kz"), 2.0)).header.rcode == 3
    engine.index.remove_domain("news.kz")
    rec = parse(engine.on_query(query("news.kz"), 3.0))  # the cached answer again
    assert rec.header.rcode == 0 and rec.rr[0].ttl == 3597


def test_newly_restricted_cname_target_replaces_the_cached_answer() -> None:
    engine = make_engine()
    zone = "www.good.kz. 300 IN CNAME cdn.host.net.\ncdn.host.net. 300 IN A 192.0.2.9"
    cache_answer(engine, "www.good.kz", zone, edns=True)
    engine.index.set_domain("host.net", CNAME_REF)
    rec = parse(engine.on_query(query("www.good.kz", edns=True), 1.0))
    assert rec.header.rcode == 3
    assert ede_of(rec)[1].endswith(b"No. 43 of 2026-11-02")
    assert engine.stats.verdicts["blocked_cname"] == 1
    engine.index.remove_domain("host.net")
    rec = parse(engine.on_query(query("www.good.kz", edns=True), 2.0))
    assert [str(rr.rdata) for rr in rec.rr] == ["cdn.host.net.", "192.0.2.9"]
    assert engine.stats.verdicts["cached"] == 1


def test_restriction_arriving_while_upstream_answers_still_blocks() -> None:
    engine = make_engine()
    fwd = forward(engine, query("late.kz"))
    engine.index.set_domain("late.kz", REF)
    rec = parse(engine.on_upstream(fwd, reply_to(fwd, "late.kz. 60 IN A 192.0.2.1"), 0.0))
    assert rec.header.rcode == 3 and len(engine.cache) == 0


def test_lookup_wire_at_gives_the_matched_suffix_offset() -> None:
    index = PolicyIndex()
    index.set_domain("example.kz", REF)
    assert index.lookup_wire_at(domain_to_wire("a.bb.example.kz")) == (5, REF)
    assert index.lookup_wire_at(domain_to_wire("example.kz")) == (0, REF)
    assert index.lookup_wire_at(domain_to_wire("other.kz")) is None
    assert index.lookup_wire_at(b"\x00") is None
