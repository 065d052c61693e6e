"""Who may ask the RPZ primary what, and the answer (pure: no sockets, the time passed in)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import ipaddress as ip
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from kzgate.config import RpzConfig
from kzgate.model import Diff, InstructionRef
from kzgate.names import IPNetwork
from kzgate.rpz.answer import Answer, allowed, answer
from kzgate.rpz.journal import Journal
from kzgate.rpz.zone import Zone, zone_params

REF = InstructionRef("mci", "1", "2026-01-01")
ORIGIN = "rpz.kzgate."
KEYNAME = dns.name.from_text("kzgate-xfr.")
KEY = dns.tsig.Key(KEYNAME, base64.b64encode(bytes(range(32))).decode(), "hmac-sha256")
OTHER_KEY = dns.tsig.Key(KEYNAME, base64.b64encode(bytes(32)).decode(), "hmac-sha256")
ACL: tuple[IPNetwork, ...] = (ip.ip_network("192.0.2.0/24"), ip.ip_network("2001:db8::/32"))
INSIDE, OUTSIDE = "192.0.2.10", "198.51.100.1"
NOW = 1_800_000_000


class Primary:
    """A zone at serial 100 holding a.kz, then changed to 101 (a.kz out, b.kz in)."""

    def __init__(self, key: dns.tsig.Key | None = KEY, history: int = 3) -> None:
        params = zone_params(
            RpzConfig(origin=ORIGIN),
            "nxdomain",
            ipaddress.IPv4Address("192.0.2.1"),
            ipaddress.IPv6Address("2001:db8::1"),
        )
        self.zone = Zone(params, 100)
        self.journal = Journal(history)
        self.zone.change(Diff(domains_added={"a.kz": REF}))  # 101
        change = self.zone.change(
            Diff(domains_removed=frozenset({"a.kz"}), domains_added={"b.kz": REF})
        )
        assert change is not None and change.old == 101
        self.journal.record(change)  # history reaches back to 101, not to 100
        self.key = key

    def ask(self, query: bytes, peer: str = INSIDE, *, tcp: bool = True) -> Answer | None:
        return answer(
            query,
            peer,
            tcp=tcp,
            zone=self.zone,
            journal=self.journal,
            acl=ACL,
            key=self.key,
            now=NOW,
        )


def make(
    rdtype: str = "AXFR",
    *,
    name: str = ORIGIN,
    key: dns.tsig.Key | None = KEY,
    serial: int | None = None,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if serial is not None:
        soa = f"localhost. hostmaster.{ORIGIN} {serial} 0 0 0 0"
        query.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", soa))
    if key is not None:
        query.use_tsig(key)
    return query


@contextlib.contextmanager
def clock(when: float) -> Iterator[None]:
    """dnspython signs and checks TSIG times against time.time(): make that ``when``."""
    real = time.time
    time.time = lambda: when  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


def single(ans: Answer | None) -> dns.message.Message:
    assert ans is not None
    (wire,) = list(ans.messages)
    return dns.message.from_wire(wire, keyring=False)  # the signature is checked where it matters


def records(ans: Answer, query: dns.message.Message) -> list[tuple[str, str, str]]:
    """Every record of a transfer, its TSIG checked with the query's MAC."""
    out = []
    (wire,) = list(ans.messages)  # a zone this small fits one message
    with clock(NOW):  # the response is signed at the time answer() was given
        msg = dns.message.from_wire(
            wire, keyring={KEYNAME: KEY}, request_mac=query.mac, xfr=True, origin=None
        )
    assert msg.had_tsig
    for rrset in msg.answer:
        for rd in rrset:
            out.append((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text()))
    return out


def test_an_axfr_with_tsig_gets_the_whole_zone_signed() -> None:
    p = Primary()
    query = make()
    ans = p.ask(query.to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "ok")
    got = records(ans, query)
    assert [r[1] for r in got] == ["SOA", "NS", "CNAME", "CNAME", "SOA"]
    assert got[0][2].split()[2] == "102"  # serial
    assert {r[0] for r in got if r[1] == "CNAME"} == {f"b.kz.{ORIGIN}", f"*.b.kz.{ORIGIN}"}


def test_the_response_is_signed_at_the_time_given() -> None:
    query = make()
    ans = Primary().ask(query.to_wire())
    assert ans is not None
    (wire,) = list(ans.messages)
    tsig = dns.message.from_wire(wire, keyring=False, xfr=True, origin=None).tsig
    assert tsig is not None and tsig[0].time_signed == NOW


def test_an_ixfr_from_a_kept_serial_gets_only_the_difference() -> None:
    query = make("IXFR", serial=101)
    ans = Primary().ask(query.to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("ixfr", "ok")
    got = records(ans, query)
    soas = [r[2].split()[2] for r in got if r[1] == "SOA"]
    assert soas == ["102", "101", "102", "102"]  # current, from, to, current (RFC 1995)
    removed, added = got[2:4], got[5:7]
    assert {r[0] for r in removed} == {f"a.kz.{ORIGIN}", f"*.a.kz.{ORIGIN}"}
    assert {r[0] for r in added} == {f"b.kz.{ORIGIN}", f"*.b.kz.{ORIGIN}"}


def test_an_ixfr_from_a_serial_without_history_gets_the_zone_as_axfr() -> None:
    query = make("IXFR", serial=100)
    ans = Primary().ask(query.to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "ok")
    assert [r[1] for r in records(ans, query)] == ["SOA", "NS", "CNAME", "CNAME", "SOA"]


def test_an_ixfr_without_the_client_serial_is_formerr() -> None:
    ans = Primary().ask(make("IXFR").to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("ixfr", "error")
    assert single(ans).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("rdtype", ["SOA", "IXFR"])
def test_over_udp_soa_and_ixfr_get_the_current_soa_alone(rdtype: str) -> None:
    serial = 101 if rdtype == "IXFR" else None
    ans = Primary().ask(make(rdtype, serial=serial).to_wire(), tcp=False)
    assert ans is not None and (ans.kind, ans.outcome) == (rdtype.lower(), "ok")
    reply = single(ans)
    assert reply.flags & dns.flags.AA and reply.rcode() == dns.rcode.NOERROR
    (soa,) = reply.answer
    assert soa.rdtype == dns.rdatatype.SOA and soa[0].serial == 102


def test_an_axfr_over_udp_is_formerr() -> None:
    ans = Primary().ask(make().to_wire(), tcp=False)
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "error")
    assert single(ans).rcode() == dns.rcode.FORMERR


def test_outside_the_acl_is_refused_even_with_the_key() -> None:
    for rdtype in ("AXFR", "SOA"):
        ans = Primary().ask(make(rdtype).to_wire(), OUTSIDE)
        assert ans is not None and (ans.kind, ans.outcome) == (rdtype.lower(), "refused")
        assert single(ans).rcode() == dns.rcode.REFUSED


def test_a_transfer_without_tsig_is_refused_when_a_key_is_set_but_soa_is_not() -> None:
    p = Primary()
    ans = p.ask(make(key=None).to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "refused")
    assert single(ans).rcode() == dns.rcode.REFUSED
    soa = p.ask(make("SOA", key=None).to_wire())
    assert soa is not None and soa.outcome == "ok"


def test_without_a_key_configured_an_unsigned_transfer_is_served() -> None:
    query = make(key=None)
    ans = Primary(key=None).ask(query.to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "ok")
    assert len(list(ans.messages)) == 1


def test_a_bad_signature_gets_an_unsigned_notauth() -> None:
    ans = Primary().ask(make(key=OTHER_KEY).to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "refused")
    reply = single(ans)
    assert reply.rcode() == dns.rcode.NOTAUTH and not reply.had_tsig


def test_a_signature_out_of_its_time_window_gets_notauth() -> None:
    query = make()
    query.use_tsig(KEY, fudge=300)
    with clock(time.time() - 3600):  # signed an hour ago; checked against the real clock
        data = query.to_wire()
    ans = Primary().ask(data)
    assert ans is not None and (ans.kind, ans.outcome) == ("axfr", "refused")
    assert single(ans).rcode() == dns.rcode.NOTAUTH


@pytest.mark.parametrize(
    ("rdtype", "name"),
    [("A", ORIGIN), ("SOA", "other.zone."), ("AXFR", f"a.{ORIGIN}")],
)
def test_anything_but_soa_axfr_ixfr_for_the_origin_is_refused(rdtype: str, name: str) -> None:
    ans = Primary().ask(make(rdtype, name=name).to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("other", "refused")
    assert single(ans).rcode() == dns.rcode.REFUSED


def test_another_opcode_is_notimp() -> None:
    query = make("SOA", key=None)
    query.set_opcode(dns.opcode.NOTIFY)
    ans = Primary().ask(query.to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("other", "refused")
    assert single(ans).rcode() == dns.rcode.NOTIMP


def test_two_questions_are_formerr() -> None:
    query = make("SOA", key=None)
    query.question.append(query.question[0])
    ans = Primary().ask(query.to_wire())
    assert ans is not None and (ans.kind, ans.outcome) == ("other", "error")
    assert single(ans).rcode() == dns.rcode.FORMERR


def test_responses_and_garbage_are_dropped() -> None:
    p = Primary()
    response = dns.message.make_response(make("SOA", key=None))
    assert p.ask(response.to_wire()) is None
    signed_response = dns.message.make_response(make("SOA", key=None))
    signed_response.use_tsig(OTHER_KEY)
    assert p.ask(signed_response.to_wire()) is None  # a bad signature on a response: still dropped
    for junk in (b"", b"\x00" * 11, b"\xff" * 40, make().to_wire()[:-5]):
        assert p.ask(junk) is None


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("192.0.2.200", True),
        ("::ffff:192.0.2.7", True),  # an IPv4 client on a dual-stack socket
        ("2001:db8::5%eth0", True),  # a scoped address
        ("198.51.100.1", False),
        ("::ffff:198.51.100.1", False),
        ("2001:db9::1", False),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_allowed(peer: str, expected: bool) -> None:
    assert allowed(peer, ACL) is expected
