"""The C fast path (kzgate/dns/_fast.c) against the engine it stands in front of.

Two engines are built the same way; for every query the C path's answer, when
it gives one, must be byte for byte the engine's answer, and both must count it
the same. When it gives none the engine answers, so only the common cases need
to be covered, and a test below checks that they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.types import BlockMode, BlockSettings, Forward
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex

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


def test_ci_builds_the_fast_path() -> None:
    # scripts/test sets this: on CI a missing compiler must fail, not skip.
    if os.environ.get("KZGATE_REQUIRE_FAST") == "1":
        assert FAST is not None


def query(
    name: str,
    qtype: str = "A",
    *,
    edns: bool = False,
    do: bool = False,
    udp: int = 1232,
    rd: bool = True,
    cd: bool = False,
    qid: int = 0x4242,
) -> bytes:
    q = dnslib.DNSRecord(
        dnslib.DNSHeader(id=qid, rd=int(rd), cd=int(cd)),
        q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)),
    )
    if edns:
        q.add_ar(dnslib.EDNS0(udp_len=udp, flags="do" if do else ""))
    return bytes(q.pack())


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
