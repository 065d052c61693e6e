"""The RPZ zone: names, wildcards, actions, rpz-ip encoding, serials (pure)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.message
import dns.name
import dns.rdatatype
import dns.zone
import pytest

from kzgate.config import RpzConfig
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import normalize_domain
from kzgate.rpz import wire
from kzgate.rpz.export import export_rpz
from kzgate.rpz.zone import (
    LONGEST_IP_TRIGGER,
    MAX_NAME_OCTETS,
    Renderer,
    Zone,
    ZoneParams,
    ip_trigger,
    next_serial,
    resolve_action,
    text_lines,
    uncarried,
    zone_params,
)

REF = InstructionRef("mci", "1", "2026-01-01")
V4, V6 = ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1")


def params(action: str = "nxdomain", ip_triggers: bool = False) -> ZoneParams:
    return zone_params(RpzConfig(action=action, ip_triggers=ip_triggers), "nxdomain", V4, V6)  # type: ignore[arg-type]


def parse_axfr(zone: Zone, limit: int = wire.LIMIT) -> list[tuple[str, str, str]]:
    serial, items = zone.items()
    out = []
    for msg in wire.pack(
        Renderer(zone.params),
        wire.axfr_items(serial, items),
        query_id=1,
        qtype=wire.AXFR,
        rd=False,
        signer=None,
        limit=limit,
    ):
        m = dns.message.from_wire(msg, xfr=True, origin=None)
        for rrset in m.answer:
            for rd in rrset:
                out.append(
                    (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
                )
    return out


@pytest.mark.parametrize(
    ("net", "owner"),
    [
        ("10.1.0.0/16", "16.0.0.1.10.rpz-ip"),
        ("192.0.2.7/32", "32.7.2.0.192.rpz-ip"),
        ("2001:db8::/32", "32.zz.db8.2001.rpz-ip"),
        ("2001:db8::1/128", "128.1.zz.db8.2001.rpz-ip"),
        ("::1/128", "128.1.zz.rpz-ip"),
        ("2001:db8:1:2:3:4:5:6/128", "128.6.5.4.3.2.1.db8.2001.rpz-ip"),
        ("2001:0:0:1::/64", "64.zz.1.0.0.2001.rpz-ip"),  # the longer zero run gets zz
    ],
)
def test_rpz_ip_encoding(net: str, owner: str) -> None:
    assert ip_trigger(ipaddress.ip_network(net)) == owner


def test_actions_from_block_mode() -> None:
    assert resolve_action("from_block_mode", "nxdomain") == "nxdomain"
    assert resolve_action("from_block_mode", "sinkhole") == "sinkhole"
    assert resolve_action("from_block_mode", "refused") == "nxdomain"
    assert resolve_action("nodata", "sinkhole") == "nodata"


@pytest.mark.parametrize(
    ("action", "rdatas"),
    [
        ("nxdomain", {("CNAME", ".")}),
        ("nodata", {("CNAME", "*.")}),
        ("sinkhole", {("A", "192.0.2.1"), ("AAAA", "2001:db8::1")}),
    ],
)
def test_name_and_wildcard_with_the_action(action: str, rdatas: set[tuple[str, str]]) -> None:
    zone = Zone(params(action), 1000)
    zone.change(Diff(domains_added={"example.com": REF}))
    records = parse_axfr(zone)
    assert records[0][1] == records[-1][1] == "SOA"
    body = {r for r in records[1:-1] if r[1] != "NS"}
    want = {
        (owner, t, rd)
        for owner in ("example.com.rpz.kzgate.", "*.example.com.rpz.kzgate.")
        for t, rd in rdatas
    }
    assert body == want
    assert zone.record_count() == len(records) - 1  # the SOA counts once


def test_ip_triggers_only_when_enabled() -> None:
    diff = Diff(prefixes_added={ipaddress.ip_network("10.0.0.0/8"): REF})
    assert Zone(params(), 5).change(diff) is None
    zone = Zone(params(ip_triggers=True), 5)
    assert zone.change(diff) is not None
    assert ("8.0.0.0.10.rpz-ip.rpz.kzgate.", "CNAME", ".") in parse_axfr(zone)


def test_serial_increments_once_per_content_change() -> None:
    zone = Zone(params(), 1000)
    c1 = zone.change(Diff(domains_added={"a.kz": REF, "b.kz": REF}))
    assert c1 is not None and (c1.old, c1.new, zone.serial) == (1000, 1001, 1001)
    # a relabel, a repeated add and an unknown removal change no record
    assert zone.change(Diff(domains_relabelled={"a.kz": REF})) is None
    assert (
        zone.change(Diff(domains_added={"a.kz": REF}, domains_removed=frozenset({"x.kz"}))) is None
    )
    assert zone.serial == 1001
    c2 = zone.change(Diff(domains_removed=frozenset({"a.kz"})))
    assert c2 is not None and c2.domains_removed == ("a.kz",) and zone.serial == 1002


def test_serial_wraps_and_skips_zero() -> None:
    assert next_serial(2**32 - 1) == 1
    assert next_serial(41) == 42


def test_replace_reports_the_difference() -> None:
    zone = Zone(params(), 10)
    zone.replace(State(domains={"a.kz": REF, "b.kz": REF}, prefixes={}))
    change = zone.replace(State(domains={"b.kz": REF, "c.kz": REF}, prefixes={}))
    assert change is not None
    assert (change.domains_removed, change.domains_added) == (("a.kz",), ("c.kz",))
    assert zone.replace(State(domains={"b.kz": REF, "c.kz": REF}, prefixes={})) is None


def test_large_zone_is_split_into_messages_under_the_limit() -> None:
    zone = Zone(params("sinkhole"), 10)
    zone.change(Diff(domains_added={f"host{i}.example.kz": REF for i in range(3000)}))
    serial, items = zone.items()
    msgs = list(
        wire.pack(
            Renderer(zone.params),
            wire.axfr_items(serial, items),
            query_id=7,
            qtype=wire.AXFR,
            rd=False,
            signer=None,
        )
    )
    assert len(msgs) > 5 and all(len(m) <= wire.LIMIT for m in msgs)
    assert len(parse_axfr(zone)) == 2 + 1 + 4 * 3000


def test_ixfr_items_sequence() -> None:
    zone = Zone(params(), 100)
    c1 = zone.change(Diff(domains_added={"a.kz": REF}))
    c2 = zone.change(Diff(domains_removed=frozenset({"a.kz"}), domains_added={"b.kz": REF}))
    assert c1 and c2
    assert list(wire.ixfr_items(102, [c1, c2])) == [
        102,
        100,
        101,
        "a.kz",
        101,
        "a.kz",
        102,
        "b.kz",
        102,
    ]
    assert list(wire.ixfr_items(102, [])) == [102]


def test_master_file_text() -> None:
    zone = Zone(params(ip_triggers=True), 77)
    zone.change(
        Diff(
            domains_added={"b.kz": REF, "a.kz": REF},
            prefixes_added={ipaddress.ip_network("10.0.0.0/8"): REF},
        )
    )
    lines = list(text_lines(zone))
    assert lines[:2] == ["$ORIGIN rpz.kzgate.\n", "$TTL 60\n"]
    assert "78 3600 600 86400 60" in lines[2]
    assert lines[4:] == [
        "a.kz CNAME .\n",
        "*.a.kz CNAME .\n",
        "b.kz CNAME .\n",
        "*.b.kz CNAME .\n",
        "8.0.0.0.10.rpz-ip CNAME .\n",
    ]
    # and dnspython reads it back as a valid zone
    z = dns.zone.from_text(
        "".join(lines), origin=dns.name.from_text("rpz.kzgate."), relativize=False
    )
    assert len(list(z.iterate_rdatas())) == zone.record_count()


def test_export_writes_the_zone_atomically(tmp_path: Path) -> None:
    path = tmp_path / "rpz.zone"
    path.write_text("old\n")
    count, left_out = export_rpz(
        State(domains={"a.kz": REF}, prefixes={ipaddress.ip_network("10.0.0.0/8"): REF}),
        RpzConfig(ip_triggers=True),
        "sinkhole",
        (V4, V6),
        path,
    )
    text = path.read_text()
    assert count == 2 + 4 + 1 and left_out == []
    assert "*.a.kz AAAA 2001:db8::1\n" in text and "8.0.0.0.10.rpz-ip CNAME .\n" in text
    assert [p.name for p in tmp_path.iterdir()] == ["rpz.zone"]  # no temp file left
    z = dns.zone.from_text(text, origin="rpz.kzgate.", relativize=False)
    assert len(list(z.iterate_rdatas())) == count


# -- owner names over 255 octets (issue 10): left out, named, and never in a transfer --------


def domain_of(length: int) -> str:
    """A valid domain of exactly ``length`` characters, in labels of at most 63."""
    name = "kz"
    while len(name) < length:
        room = length - len(name) - 1  # characters left for the next label
        label = min(63, room)
        if room - label == 1:  # would leave room for a dot alone
            label -= 1
        name = "a" * label + "." + name
    assert len(name) == length and normalize_domain(name) == name
    return name


def ixfr_records(zone: Zone, changes: list[object]) -> list[tuple[str, str, str]]:
    out = []
    for msg in wire.pack(
        Renderer(zone.params),
        wire.ixfr_items(zone.serial, changes),  # type: ignore[arg-type]
        query_id=2,
        qtype=wire.IXFR,
        rd=False,
        signer=None,
    ):
        m = dns.message.from_wire(msg, xfr=True, origin=None)
        out += [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), "") for r in m.answer]
    return out


LONGEST = domain_of(253)  # the longest name intake accepts
FITS = domain_of(240)  # with rpz.kzgate. (11 characters): *.name.origin is exactly 255 octets
ISSUE = domain_of(243)  # the reproducer of issue 10


def test_the_longest_domain_that_fits_is_exact() -> None:
    p = params()
    assert p.max_domain_chars() == 240
    owner = dns.name.from_text(f"*.{FITS}.{p.origin}")
    assert len(owner.to_wire()) == MAX_NAME_OCTETS
    with pytest.raises(dns.name.NameTooLong):
        dns.name.from_text(f"*.{domain_of(241)}.{p.origin}")
    asked = Diff(domains_added={FITS: REF, domain_of(241): REF, ISSUE: REF, LONGEST: REF})
    assert list(uncarried(p, asked).domains_added) == [domain_of(241), ISSUE, LONGEST]


def test_a_domain_too_long_for_the_zone_is_left_out_and_transfers_still_parse() -> None:
    zone = Zone(params(), 500)
    change = zone.change(Diff(domains_added={ISSUE: REF, FITS: REF, "a.kz": REF}))
    assert change is not None and change.domains_added == tuple(sorted((FITS, "a.kz")))
    assert zone.domains == {FITS, "a.kz"}
    records = parse_axfr(zone)  # dnspython refuses a name over 255 octets: NameTooLong
    owners = {owner for owner, _, _ in records}
    assert f"*.{FITS}.rpz.kzgate." in owners and "*.a.kz.rpz.kzgate." in owners
    assert not [o for o in owners if ISSUE in o]
    assert zone.record_count() == len(records) - 1
    # the same for a change that holds nothing the zone can carry: no serial, no change
    assert zone.change(Diff(domains_added={LONGEST: REF})) is None and zone.serial == 501


def test_resuming_a_left_out_domain_changes_nothing_and_ixfr_parses() -> None:
    zone = Zone(params(), 500)
    first = zone.change(Diff(domains_added={ISSUE: REF, "a.kz": REF}))
    assert zone.change(Diff(domains_removed=frozenset({ISSUE}))) is None
    second = zone.change(Diff(domains_added={"b.kz": REF, LONGEST: REF}))
    third = zone.change(Diff(domains_removed=frozenset({"a.kz", LONGEST})))
    assert first and second and third and zone.serial == 503
    assert third.domains_removed == ("a.kz",)
    records = ixfr_records(zone, [first, second, third])
    assert not [o for o, _, _ in records if ISSUE in o or LONGEST in o]
    assert ("*.b.kz.rpz.kzgate.", "CNAME", "") in records


def test_replace_leaves_out_what_the_zone_cannot_hold() -> None:
    zone = Zone(params("sinkhole"), 10)
    change = zone.replace(State(domains={ISSUE: REF, "a.kz": REF}, prefixes={}))
    assert change is not None and change.domains_added == ("a.kz",)
    assert zone.replace(State(domains={ISSUE: REF, "a.kz": REF}, prefixes={})) is None
    assert len(parse_axfr(zone)) == 2 + 1 + 4


def test_master_file_and_export_leave_it_out(tmp_path: Path) -> None:
    zone = Zone(params(), 77)
    zone.change(Diff(domains_added={ISSUE: REF, "a.kz": REF}))
    text = "".join(text_lines(zone))
    assert ISSUE not in text
    dns.zone.from_text(text, origin="rpz.kzgate.", relativize=False)  # BIND would load it
    path = tmp_path / "rpz.zone"
    state = State(domains={ISSUE: REF, LONGEST: REF, "a.kz": REF}, prefixes={})
    count, left_out = export_rpz(state, RpzConfig(), "nxdomain", (V4, V6), path)
    assert (count, left_out) == (2 + 2, sorted([ISSUE, LONGEST]))
    z = dns.zone.from_text(path.read_text(), origin="rpz.kzgate.", relativize=False)
    assert len(list(z.iterate_rdatas())) == count


def test_a_longer_origin_leaves_out_shorter_names() -> None:
    origin = domain_of(100) + "."
    p = ZoneParams(origin, "nxdomain", V4, V6, ip_triggers=False)
    assert p.max_domain_chars() == 255 - 4 - 101
    zone = Zone(p, 1)
    zone.change(Diff(domains_added={domain_of(150): REF, domain_of(151): REF}))
    assert zone.domains == {domain_of(150)}


def test_ip_triggers_are_checked_too() -> None:
    net_long = ipaddress.ip_network("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128")
    net_short = ipaddress.ip_network("10.0.0.0/8")
    assert ip_trigger(net_long) == "128.ffff.ffff.ffff.ffff.ffff.ffff.db8.2001.rpz-ip"
    # The longest origin the config accepts: every trigger fits, the longest exactly.
    roomy = ZoneParams(domain_of(202) + ".", "nxdomain", V4, V6, ip_triggers=True)
    assert len(dns.name.from_text(f"{LONGEST_IP_TRIGGER}.{roomy.origin}").to_wire()) == 255
    assert roomy.carries_prefix(ipaddress.ip_network(("ffff:" * 8)[:-1] + "/128"))
    # One built by hand past it: a long trigger is left out, a short one kept.
    tight = ZoneParams(domain_of(206) + ".", "nxdomain", V4, V6, ip_triggers=True)
    asked = Diff(prefixes_added={net_long: REF, net_short: REF})
    assert list(uncarried(tight, asked).prefixes_added) == [net_long]
    zone = Zone(tight, 1)
    zone.change(asked)
    assert zone.prefixes == {net_short}
    assert ("8.0.0.0.10.rpz-ip." + tight.origin, "CNAME", ".") in parse_axfr(zone)
    # Without ip_triggers prefixes are never in the zone, so never "left out" of it.
    assert not uncarried(params(), asked).prefixes_added
