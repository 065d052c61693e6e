"""The C fast path (kzgate/dns/fast_*.c) against the engine it stands in front of.

Two engines are built the same way; for every query the C path's answer, when
it gives one, must be byte for byte the engine's answer, and both must count it
the same. When it gives none the engine answers, so only the common cases need
to be covered, and a test below checks that they are.
"""

from __future__ import annotations

import random
import select
import socket
import struct
from collections.abc import Callable, Iterator

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.types import BlockMode, BlockSettings, Forward
from kzgate.model import InstructionRef
from kzgate.names import domain_to_wire
from kzgate.policy import PolicyIndex
from tests.support.dnsmsg import query

REF = InstructionRef("mci", "42", "2026-11-01")
OTHER = InstructionRef("mci", "43", "2026-11-02")
ZONE = {
    "ok.kz": "ok.kz. 300 IN A 203.0.113.5",
    "Mixed.KZ": "mixed.kz. 30 IN A 203.0.113.6\nmixed.kz. 7200 IN A 203.0.113.7",
    "alias.kz": "alias.kz. 300 IN CNAME bad.kz.\nbad.kz. 300 IN A 203.0.113.8",
    "other.kz": "other.kz. 300 IN CNAME ok.kz.\nok.kz. 300 IN A 203.0.113.5",
    "big.kz": "\n".join(f"big.kz. 300 IN TXT {'x' * 200}{i}" for i in range(3)),
}
NAMES = ["bad.kz", "www.bad.kz", "BAD.kz", "deep.x.Other-Bad.kz", *ZONE, "nowhere.kz", "kz"]

pytestmark = pytest.mark.skipif(FAST is None, reason="the C fast path was not built")


def fast() -> FastModule:
    assert FAST is not None
    return FAST


def engine(mode: BlockMode = "nxdomain") -> Engine:
    index = PolicyIndex()
    index.set_domain("bad.kz", REF)
    index.set_domain("other-bad.kz", OTHER)
    eng = Engine(index, BlockSettings(mode=mode))
    for name, zone in ZONE.items():  # fill the cache through the engine itself
        for qtype in ("A", "TXT"):
            for edns in (False, True):
                fwd = eng.on_query(query(name, qtype, edns=edns), 0.0)
                assert isinstance(fwd, Forward)
                rec = dnslib.DNSRecord.parse(fwd.upstream_query).reply()
                for rr in dnslib.RR.fromZone(zone):
                    rec.add_answer(rr)
                eng.on_upstream(fwd, bytes(rec.pack()), 0.0)
    return eng


Pair = tuple[Engine, Engine]


@pytest.fixture(params=["nxdomain", "sinkhole", "refused"])
def pair(request: pytest.FixtureRequest) -> Pair:
    return engine(request.param), engine(request.param)


def same(pair: Pair, data: bytes, now: float) -> bytes | None:
    """Serve ``data`` as the server does (C first, the engine for what C leaves) on one
    engine and with the engine alone on the other: the same result and counters. The C
    answer, or None when C left it to the engine."""
    c_engine, py_engine = pair
    out = fast().answer(data, now, c_engine.fast_view)
    expected = py_engine.on_query(data, now)
    if out is not None:
        assert out == expected
    else:
        assert c_engine.on_query(data, now) == expected
    assert c_engine.stats == py_engine.stats
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("qtype", ["A", "AAAA", "TXT", "ANY"])
@pytest.mark.parametrize("edns", [False, True])
def test_answers_equal_the_engine(pair: Pair, name: str, qtype: str, edns: bool) -> None:
    for now in (0.0, 0.5, 29.9, 31.0, 301.0):
        for do in (False, True):
            same(pair, query(name, qtype, edns=edns, do=do), now)


def test_common_queries_are_answered_in_c(pair: Pair) -> None:
    answered: Callable[[bytes], bool] = lambda data: same(pair, data, 1.0) is not None  # noqa: E731
    assert answered(query("bad.kz"))
    assert answered(query("www.BAD.kz", "AAAA", rd=False))
    assert answered(query("ok.kz"))
    assert answered(query("Mixed.KZ", cd=True))  # CD=0 entries serve CD=1 queries
    assert not answered(query("x.other-bad.kz", edns=True))  # the engine fills the EDE memo...
    assert answered(query("other-bad.kz", edns=True, do=True))  # ...which C then uses
    assert answered(query("ok.kz", edns=True))


def test_what_the_engine_must_answer_is_left_to_it(pair: Pair) -> None:
    c_engine, _ = pair
    left: Callable[[bytes], bool] = lambda data: (  # noqa: E731
        fast().answer(data, 1.0, c_engine.fast_view) is None
    )
    assert left(query("nowhere.kz"))  # a forward
    assert left(query("alias.kz"))  # a cached CNAME into a restricted name
    assert left(query("big.kz", "TXT"))  # needs TC at 512 octets
    assert left(query("other-bad.kz", edns=True))  # no EDE memo yet
    assert left(query("ok.kz")[:-1])  # truncated
    assert left(b"\x00" * 11)
    assert fast().answer(query("ok.kz"), 400.0, c_engine.fast_view) is None  # expired
    answer = bytearray(query("bad.kz"))
    answer[2] |= 0x80
    assert left(bytes(answer))  # QR=1: the engine drops it
    c_engine.index.remove_domain("bad.kz")  # the policy is read live
    assert left(query("bad.kz"))


def mutations() -> st.SearchStrategy[bytes]:
    bases = st.sampled_from(
        [query(n, t, edns=e) for n in NAMES for t in ("A", "TXT") for e in (False, True)]
    )
    edits = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4)

    def mutate(base: bytes, changes: list[tuple[int, int]], cut: int) -> bytes:
        out = bytearray(base)
        for at, value in changes:
            if at < len(out):
                out[at] = value
        return bytes(out[: len(out) - cut])

    return st.builds(mutate, bases, edits, st.integers(0, 3))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(mutations(), st.binary(max_size=80)), now=st.floats(0, 400))
def test_mutated_and_random_packets_match_the_engine(pair: Pair, data: bytes, now: float) -> None:
    same(pair, data, now)


def long_name_query(labels: list[int], *, qid: int = 7) -> bytes:
    """A query whose QNAME has labels of these lengths (no library would build one over 255)."""
    name = b"".join(bytes([n]) + b"a" * n for n in labels) + b"\x00"
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + name + b"\x00\x01\x00\x01"


@pytest.mark.parametrize(
    "labels",
    [
        [63, 63, 63, 61],  # 255 octets with the root: the longest legal name
        [63, 63, 63, 62],  # 256: one too many
        [63, 63, 63, 61, 63],  # the 335-octet query that overflowed Query.name (issue 10)
        [63, 63, 63, 61, 1],
        [63] * 8,
        [1] * 127,  # 255 with the root, in the most labels
        [1] * 128,
    ],
)
def test_names_at_and_past_the_length_limit_match_the_engine(pair: Pair, labels: list[int]) -> None:
    data = long_name_query(labels)
    out = same(pair, data, 1.0)
    if sum(n + 1 for n in labels) + 1 > 255:
        assert out is None  # left to the engine, which answers FORMERR
        assert pair[1].on_query(data, 1.0) is not None


# --- every length a UDP datagram can have ------------------------------------------------

BASES = [
    query("bad.kz"),
    query("www.bad.kz", "AAAA", edns=True, do=True),
    query("other-bad.kz", edns=True),
    query("ok.kz"),
    query("Mixed.KZ", edns=True),
    query("nowhere.kz", edns=True),
]


def sized(data: bytes, n: int, fill: bytes = b"\x00") -> bytes:
    """``data`` cut to ``n`` octets, or followed by repeats of ``fill`` up to ``n``."""
    if n <= len(data):
        return data[:n]
    pad = fill * ((n - len(data)) // len(fill) + 1)
    return data + pad[: n - len(data)]


def edns_sized(name: str, n: int) -> bytes | None:
    """An EDNS query of exactly ``n`` octets: an unknown option in its OPT fills the rest."""
    base = query(name, edns=True)  # ends in the OPT's RDLENGTH, 0
    extra = n - len(base)
    if not 4 <= extra <= 65535:
        return None
    return base[:-2] + struct.pack("!HHH", extra, 65001, extra - 4) + b"\xab" * (extra - 4)


def name_of(octets: int, suffix: bytes = b"", label: int = 63) -> bytes | None:
    """A wire-form name of exactly ``octets`` octets (root included) ending in ``suffix`` (a
    wire name without its root), in labels of at most ``label`` octets; may exceed 255."""
    rest = octets - 1 - len(suffix)
    if rest < 0 or rest == 1:
        return None
    labels = []
    while rest > 0:
        take = min(rest, label + 1)
        if rest - take == 1:  # a lone octet left over cannot be a label
            take = take - 1 if take > 2 else take + 1
        labels.append(bytes([take - 1]) + (b"aB" * 32)[: take - 1])
        rest -= take
    return b"".join(labels) + suffix + b"\x00"


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, qid: int = 0x1234) -> bytes:
    return struct.pack("!6H", qid, 0x0100, qd, an, ns, ar)


def name_query(name: bytes, *, qtype: int = 1, opt: bytes = b"") -> bytes:
    return header(ar=1 if opt else 0) + name + struct.pack("!HH", qtype, 1) + opt


def exactly(n: int) -> list[bytes]:
    """Datagrams of exactly ``n`` octets: queries cut or padded, EDNS queries whose OPT fills
    them, names that fill them (past 255 octets too), random bodies behind a query header."""
    rng = random.Random(n)
    out = [sized(b, n) for b in BASES]
    out.append(sized(BASES[0], n, b"\xc0"))
    out += [q for q in (edns_sized("bad.kz", n), edns_sized("ok.kz", n)) if q is not None]
    for suffix in (b"\x03bad\x02kz", b"\x05other\x02kz"):
        name = name_of(n - 16, suffix)
        if name is not None:
            out.append(name_query(name))
    head = header(qid=n & 0xFFFF, ar=rng.choice([0, 1]))
    body = max(0, n - 12)
    out.append(sized(head + rng.randbytes(body), n))
    # Mostly small length octets and pointers: the walk goes deep before it fails.
    out.append(sized(head + bytes(rng.choices(b"\x00\x01\x02\x03\x3f\x40\xc0ab", k=body)), n))
    assert all(len(d) == n for d in out)
    return out


def test_every_length_up_to_512_matches_the_engine(pair: Pair) -> None:
    answered = 0
    for n in range(513):
        for data in exactly(n):
            answered += same(pair, data, 1.0) is not None
    assert answered > 1000  # the C path answered, not only declined


LARGE = sorted({*range(513, 65536, 4093), 1232, 1233, 4095, 4096, 4097, 8192, 65507, 65527, 65535})


def test_large_datagrams_up_to_65535_match_the_engine(pair: Pair) -> None:
    answered = 0
    for n in LARGE:
        for data in exactly(n):
            answered += same(pair, data, 1.0) is not None
    assert answered >= 4 * len(LARGE)


@st.composite
def any_size(draw: st.DrawFn) -> bytes:
    """A query cut or padded to a length anywhere in 0..65535, with a few octets changed."""
    base = draw(st.sampled_from(BASES))
    n = draw(st.one_of(st.integers(0, 600), st.integers(0, 65535)))
    data = bytearray(sized(base, n, draw(st.binary(min_size=1, max_size=4))))
    if base[-11:-10] == b"\x00" and n > len(base) and draw(st.booleans()):
        # the OPT's RDLENGTH covers the padding: a valid EDNS query of that size
        data[len(base) - 2 : len(base)] = min(n - len(base), 65535).to_bytes(2, "big")
    spots = st.one_of(st.integers(0, 64), st.integers(0, max(0, n - 1)))
    for at, value in draw(st.lists(st.tuples(spots, st.integers(0, 255)), max_size=4)):
        if at < n:
            data[at] = value
    return bytes(data)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=any_size(), now=st.sampled_from([0.5, 1.0, 29.9, 31.0]))
def test_datagrams_of_any_size_match_the_engine(pair: Pair, data: bytes, now: float) -> None:
    same(pair, data, now)


@pytest.mark.parametrize("octets", range(240, 262))
@pytest.mark.parametrize("suffix", [b"\x03bad\x02kz", b"\x09Other-Bad\x02kz", b"\x02ok\x02kz"])
def test_names_near_the_255_octet_limit_match_the_engine(
    pair: Pair, octets: int, suffix: bytes
) -> None:
    for label in (63, 1, 7):
        name = name_of(octets, suffix, label)
        assert name is not None and len(name) == octets
        for opt in (b"", b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"):
            out = same(pair, name_query(name, opt=opt), 1.0)
            if octets > 255:
                assert out is None  # FORMERR, from the engine
            elif suffix == b"\x03bad\x02kz" and not opt:
                assert out is not None  # blocked, answered in C


QUESTION = b"\x03bad\x02kz\x00\x00\x01\x00\x01"  # at offset 12; its name ends at 19
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
A_RR = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"

# Compression pointers where a query has none, and header counts that lie about the body.
HOSTILE = {
    "pointer to itself as QNAME": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "pointer into the header": header() + b"\xc0\x02\x00\x01\x00\x01",
    "forward pointer to a blocked name": header()
    + b"\xc0\x12\x00\x01\x00\x01"
    + b"\x00" * 4
    + QUESTION[:8],
    "label then a pointer": header() + b"\x03www\xc0\x0c\x00\x01\x00\x01",
    "label then a pointer to a later blocked name": header()
    + b"\x03www\xc0\x16\x00\x01\x00\x01"
    + QUESTION[:8],
    "pointer past the end": header() + b"\xff\xff\x00\x01\x00\x01",
    "label types 01 and 10": header() + b"\x40a\x80b\x00\x00\x01\x00\x01",
    "OPT owner pointing at itself": header(ar=1) + QUESTION + b"\xc0\x1b" + OPT[1:],
    "OPT owner pointing at the question": header(ar=1) + QUESTION + b"\xc0\x0c" + OPT[1:],
    "answer RR owner pointer loop": header(an=1) + QUESTION + b"\xc0\x1b" + A_RR[2:],
    "two pointers pointing at each other": header(an=2)
    + QUESTION
    + b"\xc0\x2d"
    + A_RR[2:]
    + b"\xc0\x1b"
    + A_RR[2:],
    "QDCOUNT 0": header(qd=0) + QUESTION,
    "QDCOUNT 0 and no body": header(qd=0),
    "QDCOUNT 2 with one question": header(qd=2) + QUESTION,
    "QDCOUNT 2 with two questions": header(qd=2) + QUESTION + QUESTION,
    "QDCOUNT 65535": header(qd=65535) + QUESTION,
    "ANCOUNT 1 and no answer": header(an=1) + QUESTION,
    "ANCOUNT 1 with an answer": header(an=1) + QUESTION + A_RR,
    "NSCOUNT 1 and nothing": header(ns=1) + QUESTION,
    "ARCOUNT 1 and nothing": header(ar=1) + QUESTION,
    "ARCOUNT 1 holding an A record": header(ar=1) + QUESTION + A_RR,
    "ARCOUNT 2 with one OPT": header(ar=2) + QUESTION + OPT,
    "ARCOUNT 2 with two OPTs": header(ar=2) + QUESTION + OPT + OPT,
    "ARCOUNT 2, an A record, then the OPT": header(ar=2) + QUESTION + A_RR + OPT,
    "ARCOUNT 0 and an OPT behind": header() + QUESTION + OPT,
    "ARCOUNT 65535 and one OPT": header(ar=65535) + QUESTION + OPT,
    "an OPT counted as an answer": header(an=1) + QUESTION + OPT,
    "an OPT counted as authority": header(ns=1, ar=1) + QUESTION + OPT + OPT,
    "OPT with a name as owner": header(ar=1) + QUESTION + b"\x01a\x00" + OPT[1:],
    "OPT version 1": header(ar=1) + QUESTION + OPT[:6] + b"\x01" + OPT[7:],
    "OPT RDLENGTH past the end": header(ar=1) + QUESTION + OPT[:9] + b"\x00\x05",
    "OPT RDLENGTH 65535": header(ar=1) + QUESTION + OPT[:9] + b"\xff\xff" + b"\x00" * 100,
    "OPT cut short": header(ar=1) + QUESTION + OPT[:7],
    "OPT UDP size 0": header(ar=1) + QUESTION + OPT[:3] + b"\x00\x00" + OPT[5:],
    "OPT UDP size 65535 with DO": header(ar=1) + QUESTION + OPT[:3] + b"\xff\xff\0\0\x80" + OPT[8:],
    "question cut in QCLASS": header() + QUESTION[:-1],
    "no root octet": header() + QUESTION[:8],
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_pointers_and_count_lies_match_the_engine(pair: Pair, data: bytes) -> None:
    for now in (1.0, 301.0):
        same(pair, data, now)
        same(pair, data[:-1], now)
        same(pair, data + b"\x00" * 7, now)


# --- serve(): the socket loop, for every size UDP allows ---------------------------------


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def udp(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking server socket and a client socket on loopback."""
    family = request.param
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    server = socket.socket(family, socket.SOCK_DGRAM)
    client = socket.socket(family, socket.SOCK_DGRAM)
    try:
        server.bind((host, 0))
    except OSError:  # no IPv6 on this host's loopback
        server.close()
        client.close()
        pytest.skip("no ::1")
    server.setblocking(False)
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    yield server, client
    server.close()
    client.close()


def readable(sock: socket.socket, wait: float) -> bool:
    return bool(select.select([sock], [], [], wait)[0])


def serve_batch(
    pair: Pair, udp: tuple[socket.socket, socket.socket], datagrams: list[bytes], now: float
) -> list[bytes | None]:
    """Send ``datagrams``, serve them as the DNS server does (C first, the engine for what C
    returns) and check each answer and the counters against the engine alone. The answers C
    sent, None for those it handed back."""
    server, client = udp
    c_engine, py_engine = pair
    for data in datagrams:
        client.sendto(data, server.getsockname())
    assert readable(server, 2.0)
    rest = fast().serve(server.fileno(), now, c_engine.fast_view) or []
    handed = [data for data, _ in rest]
    for _, addr in rest:
        assert addr[1] == client.getsockname()[1]
    from_c = [d for d in datagrams if d not in handed]
    sent: list[bytes | None] = []
    for data in datagrams:
        expected = py_engine.on_query(data, now)
        if data in handed:
            assert c_engine.on_query(data, now) == expected
            sent.append(None)
        else:  # C answered (or dropped) it: the answer is on its way, in order
            got = client.recv(65535) if readable(client, 1.0 if expected else 0.1) else None
            assert got == expected
            sent.append(got)
    assert c_engine.stats == py_engine.stats
    assert len(from_c) + len(handed) == len(datagrams)
    return sent


def test_serve_answers_datagrams_of_every_udp_size_as_the_engine_does(
    pair: Pair, udp: tuple[socket.socket, socket.socket]
) -> None:
    # The largest UDP payload: 65,507 octets over IPv4, 65,527 over IPv6.
    largest = 65507 if udp[0].family == socket.AF_INET else 65527
    for n in (12, 100, 512, 1232, 4095, 4096, 4097, 9000, 32768, largest):
        for base in (query("bad.kz"), query("ok.kz"), query("nowhere.kz")):
            (sent,) = serve_batch(pair, udp, [sized(base, n)], 1.0)
            if base != query("nowhere.kz") and n >= len(base):
                assert sent is not None  # answered in C, whatever its size
        edns = edns_sized("bad.kz", n)
        if edns is not None:
            serve_batch(pair, udp, [edns], 1.0)


def test_one_odd_cache_entry_costs_only_its_own_answer(
    pair: Pair, udp: tuple[socket.socket, socket.socket]
) -> None:
    key = (domain_to_wire("ok.kz"), 1, 1, False, False)
    for eng in pair:
        eng.cache.entries[key].inserted = 0  # an int, not the float the C path reads
    batch = [query("bad.kz", qid=1), query("ok.kz", qid=2), query("mixed.kz", qid=3)]
    sent = serve_batch(pair, udp, batch, 1.0)
    assert sent[0] is not None and sent[1] is None and sent[2] is not None


def odd(entry: object, field: str, value: object) -> None:
    object.__setattr__(entry, field, value)


# One field of a cache entry set to something the engine never stores there.
ODD_ENTRIES = [
    ("inserted", 0),
    ("expires", 300),
    ("expires", None),
    ("inserted", "0"),
    ("inserted", -1e300),  # an age no integer type holds: converting it is undefined in C
    ("inserted", float("nan")),
    ("reply", "not bytes"),
    ("reply", b"\x00" * 5),
    ("ttl_offsets", [40]),
    ("ttl_offsets", (40, "x")),
    ("ttl_offsets", (-1,)),
    ("ttl_offsets", (2**70,)),
    ("ttls", (300, 300)),
    ("ttls", (2**40,)),
    ("ttls", (-5,)),
    ("targets", [b"\x02kz\x00"]),
    ("targets", (None,)),
    ("targets", (b"",)),
]


@pytest.mark.parametrize(("field", "value"), ODD_ENTRIES)
def test_an_odd_cache_entry_is_left_to_the_engine(pair: Pair, field: str, value: object) -> None:
    c_engine, py_engine = pair
    key = (domain_to_wire("ok.kz"), 1, 1, False, False)
    for eng in pair:
        odd(eng.cache.entries[key], field, value)
    before = dict(c_engine.stats.verdicts)
    assert fast().answer(query("ok.kz"), 1.0, c_engine.fast_view) is None
    assert c_engine.stats.verdicts == before  # nothing counted for what C did not answer
    try:
        expected = py_engine.on_query(query("ok.kz"), 1.0)
    except Exception:  # the engine cannot use such an entry either
        return
    assert c_engine.on_query(query("ok.kz"), 1.0) == expected


def test_a_name_without_its_instruction_is_left_to_the_engine(pair: Pair) -> None:
    c_engine, _ = pair
    c_engine.index.name_table.set(domain_to_wire("orphan.kz"), 10_000)  # refs has no 10,000th
    assert fast().answer(query("orphan.kz"), 1.0, c_engine.fast_view) is None
    assert fast().answer(query("bad.kz"), 1.0, c_engine.fast_view) is not None
