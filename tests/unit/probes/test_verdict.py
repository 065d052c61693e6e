"""What an answer means at each place, for each block mode and RPZ action."""

from __future__ import annotations

import datetime as dt
import ipaddress

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from kzgate.config.model import DnsConfig, RpzConfig
from kzgate.model import InstructionRef
from kzgate.probes.model import Expect, Place, ProbeTarget
from kzgate.probes.verdict import (
    BlockAnswer,
    block_answer_for_kzgate,
    block_answer_for_resolvers,
    connect_check,
    dns_check,
    kernel_check,
)

AT = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
REF = InstructionRef("mci", "12", "2026-11-01")
RESOLVER = Place("resolver", "10.0.0.53:53")
NX = BlockAnswer(frozenset({"NXDOMAIN"}), frozenset(), nodata=False)
SINK = BlockAnswer(frozenset(), frozenset({"192.0.2.1", "2001:db8::1"}), nodata=False)
NODATA = BlockAnswer(frozenset(), frozenset(), nodata=True)
REFUSE = BlockAnswer(frozenset({"REFUSED"}), frozenset(), nodata=False)


def target(expect: Expect, name: str = "example.kz") -> ProbeTarget:
    return ProbeTarget("name", name, "domain:example.kz", REF, expect)


def reply(
    rcode: int = dns.rcode.NOERROR, *records: str, qname: str = "example.kz", qtype: str = "A"
) -> bytes:
    query = dns.message.make_query(qname, qtype, use_edns=0)
    msg = dns.message.make_response(query)
    msg.set_rcode(rcode)
    for text in records:
        owner, rtype, value = text.split(" ", 2)
        msg.answer.append(dns.rrset.from_text(owner, 60, "IN", rtype, value))
    return msg.to_wire()


CASES = [
    # (block, reply, expect, outcome, observed)
    (NX, reply(dns.rcode.NXDOMAIN), "blocked", "pass", "NXDOMAIN"),
    (NX, reply(dns.rcode.NXDOMAIN), "open", "fail", "NXDOMAIN"),
    (NX, reply(0, "example.kz. A 203.0.113.5"), "blocked", "fail", "A 203.0.113.5"),
    (NX, reply(0, "example.kz. A 203.0.113.5"), "open", "pass", "A 203.0.113.5"),
    (SINK, reply(0, "example.kz. A 192.0.2.1"), "blocked", "pass", "A 192.0.2.1"),
    (SINK, reply(0, "example.kz. A 192.0.2.1"), "open", "fail", "A 192.0.2.1"),
    (SINK, reply(0, "example.kz. A 203.0.113.5"), "blocked", "fail", "A 203.0.113.5"),
    (SINK, reply(dns.rcode.NXDOMAIN), "blocked", "fail", "NXDOMAIN"),
    (NODATA, reply(0), "blocked", "pass", "NODATA"),
    (NODATA, reply(0), "open", "fail", "NODATA"),
    (NX, reply(0), "open", "pass", "NODATA"),
    (REFUSE, reply(dns.rcode.REFUSED), "blocked", "pass", "REFUSED"),
    (NX, reply(dns.rcode.REFUSED), "blocked", "unreachable", "REFUSED"),
    (NX, reply(dns.rcode.SERVFAIL), "blocked", "unreachable", "SERVFAIL"),
    (NX, reply(dns.rcode.SERVFAIL), "open", "unreachable", "SERVFAIL"),
    (
        NX,
        reply(0, "example.kz. CNAME cdn.example.net.", "cdn.example.net. A 203.0.113.9"),
        "open",
        "pass",
        "CNAME cdn.example.net., A 203.0.113.9",
    ),
    (
        SINK,
        reply(0, "example.kz. CNAME sink.kz.", "sink.kz. A 192.0.2.1"),
        "blocked",
        "pass",
        "CNAME sink.kz., A 192.0.2.1",
    ),
]


@pytest.mark.parametrize(
    ("block", "data", "expect", "outcome", "observed"),
    CASES,
    ids=[f"{i}-{c[2]}-{c[4]}" for i, c in enumerate(CASES)],
)
def test_dns_verdicts(
    block: BlockAnswer, data: bytes, expect: Expect, outcome: str, observed: str
) -> None:
    check = dns_check(target(expect), RESOLVER, data, block, AT)
    assert (check.outcome, check.observed) == (outcome, observed)
    assert check.place == RESOLVER and check.at == AT


def test_no_reply_is_unreachable_never_failed() -> None:
    check = dns_check(target("blocked"), RESOLVER, None, NX, AT)
    assert (check.outcome, check.observed) == ("unreachable", "timeout")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        reply(dns.rcode.NXDOMAIN)[:-3],  # cut inside the OPT record
        reply(dns.rcode.NXDOMAIN) + b"\x00",  # trailing junk
    ],
)
def test_malformed_reply_is_unreachable(data: bytes) -> None:
    check = dns_check(target("blocked"), RESOLVER, data, NX, AT)
    assert (check.outcome, check.observed) == ("unreachable", "malformed")


def test_a_reply_to_another_question_or_a_query_is_not_an_answer() -> None:
    other = reply(dns.rcode.NXDOMAIN, qname="other.kz")
    assert dns_check(target("blocked"), RESOLVER, other, NX, AT).outcome == "unreachable"
    mx = reply(dns.rcode.NXDOMAIN, qtype="MX")
    assert dns_check(target("blocked"), RESOLVER, mx, NX, AT).outcome == "unreachable"
    query = dns.message.make_query("example.kz", "A")
    query.set_rcode(dns.rcode.NXDOMAIN)
    assert dns_check(target("blocked"), RESOLVER, query.to_wire(), NX, AT).outcome == (
        "unreachable"
    )
    upper = reply(dns.rcode.NXDOMAIN, qname="EXAMPLE.kz")  # 0x20 case: still the question
    assert dns_check(target("blocked"), RESOLVER, upper, NX, AT).outcome == "pass"


def test_aaaa_sinkhole() -> None:
    data = reply(0, "example.kz. AAAA 2001:db8::1", qtype="AAAA")
    assert dns_check(target("blocked"), RESOLVER, data, SINK, AT).outcome == "pass"


def test_many_records_are_counted_not_listed() -> None:
    records = [f"example.kz. A 203.0.113.{i}" for i in range(1, 6)]
    check = dns_check(target("open"), RESOLVER, reply(0, *records), NX, AT)
    assert check.observed.endswith("(+2 more)") and check.outcome == "pass"


def dns_cfg(mode: str) -> DnsConfig:
    return DnsConfig(
        block_mode=mode,  # type: ignore[arg-type]
        sinkhole_ipv4=ipaddress.IPv4Address("192.0.2.7"),
        sinkhole_ipv6=ipaddress.IPv6Address("2001:db8::7"),
    )


def test_block_answer_at_kzgate_follows_block_mode() -> None:
    assert block_answer_for_kzgate(dns_cfg("nxdomain")).rcodes == {"NXDOMAIN"}
    assert block_answer_for_kzgate(dns_cfg("refused")).rcodes == {"REFUSED"}
    sink = block_answer_for_kzgate(dns_cfg("sinkhole"))
    assert (sink.rcodes, sink.addresses) == (frozenset(), {"192.0.2.7", "2001:db8::7"})


@pytest.mark.parametrize(
    ("mode", "action", "rcodes", "sinkhole", "nodata"),
    [
        ("nxdomain", "from_block_mode", {"NXDOMAIN"}, False, False),
        ("refused", "from_block_mode", {"NXDOMAIN"}, False, False),  # no RPZ refused
        ("sinkhole", "from_block_mode", set(), True, False),
        ("sinkhole", "nxdomain", {"NXDOMAIN"}, False, False),
        ("nxdomain", "nodata", set(), False, True),
        ("nxdomain", "sinkhole", set(), True, False),
    ],
)
def test_block_answer_at_resolvers_follows_the_rpz_action(
    mode: str, action: str, rcodes: set[str], sinkhole: bool, nodata: bool
) -> None:
    block = block_answer_for_resolvers(dns_cfg(mode), RpzConfig(action=action))  # type: ignore[arg-type]
    assert block.rcodes == rcodes and block.nodata == nodata
    assert block.addresses == ({"192.0.2.7", "2001:db8::7"} if sinkhole else set())


def addr(expect: Expect) -> ProbeTarget:
    return ProbeTarget("address", "10.0.0.1", "cidr:10.0.0.0/24", REF, expect)


def test_kernel_check() -> None:
    nft = Place("nft", "nft")
    assert kernel_check(addr("blocked"), nft, "blocked_v4 10.0.0.0/24", AT).outcome == "pass"
    missing = kernel_check(addr("blocked"), nft, None, AT)
    assert (missing.outcome, missing.observed) == ("fail", "not covered")
    assert kernel_check(addr("open"), nft, None, AT).outcome == "pass"
    assert kernel_check(addr("open"), nft, "blocked_v4 10.0.0.0/24", AT).outcome == "fail"


def test_connect_check() -> None:
    place = Place("connect", "connect")
    assert connect_check(addr("blocked"), place, "blocked: EPERM", AT).outcome == "pass"
    assert connect_check(addr("blocked"), place, "open: connected", AT).outcome == "fail"
    assert connect_check(addr("blocked"), place, "open: ECONNREFUSED", AT).outcome == "fail"
    assert connect_check(addr("open"), place, "open: connected", AT).outcome == "pass"
    assert connect_check(addr("open"), place, "blocked: EPERM", AT).outcome == "fail"
    assert connect_check(addr("open"), place, "unreachable: timeout", AT).outcome == "unreachable"
    assert connect_check(addr("blocked"), place, "unreachable: EHOSTUNREACH", AT).outcome == (
        "unreachable"
    )


def marked(rcode: int, *records: str, code: int = 16) -> bytes:
    """A reply carrying an extended DNS error, as kzgate's block answers do (EDE 16)."""
    query = dns.message.make_query("example.kz", "A", use_edns=0)
    msg = dns.message.make_response(query)
    msg.set_rcode(rcode)
    for text in records:
        owner, rtype, value = text.split(" ", 2)
        msg.answer.append(dns.rrset.from_text(owner, 60, "IN", rtype, value))
    msg.use_edns(0, options=[dns.edns.EDEOption(code, "restricted by mci No. 12 of 2026-11-01")])
    return msg.to_wire()


def test_at_kzgate_only_an_answer_with_its_ede_is_a_block() -> None:
    """An upstream's NXDOMAIN for a name that does not exist is no proof of a block."""
    kz = Place("kzgate", "127.0.0.1:53")
    nx = block_answer_for_kzgate(DnsConfig(block_mode="nxdomain"))
    sink = block_answer_for_kzgate(DnsConfig(block_mode="sinkhole"))
    blocked = target("blocked")
    assert dns_check(blocked, kz, marked(dns.rcode.NXDOMAIN), nx, AT).outcome == "pass"
    bare = dns_check(blocked, kz, reply(dns.rcode.NXDOMAIN), nx, AT)
    assert (bare.outcome, bare.observed) == ("fail", "NXDOMAIN without EDE 16")
    other = dns_check(blocked, kz, marked(dns.rcode.NXDOMAIN, code=15), nx, AT)
    assert other.outcome == "fail"
    hole = "example.kz. A 192.0.2.1"
    assert dns_check(blocked, kz, marked(dns.rcode.NOERROR, hole), sink, AT).outcome == "pass"
    assert dns_check(blocked, kz, reply(dns.rcode.NOERROR, hole), sink, AT).outcome == "fail"
    # the operator's resolvers have no marker: RPZ's NXDOMAIN is taken as the block
    assert dns_check(blocked, RESOLVER, reply(dns.rcode.NXDOMAIN), NX, AT).outcome == "pass"
