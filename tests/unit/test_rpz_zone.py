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
from kzgate.rpz import wire
from kzgate.rpz.export import export_rpz
from kzgate.rpz.zone import (
    Renderer,
    Zone,
    ZoneParams,
    ip_trigger,
    next_serial,
    resolve_action,
    text_lines,
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
    count = export_rpz(
        State(domains={"a.kz": REF}, prefixes={ipaddress.ip_network("10.0.0.0/8"): REF}),
        RpzConfig(ip_triggers=True),
        "sinkhole",
        (V4, V6),
        path,
    )
    text = path.read_text()
    assert count == 2 + 4 + 1
    assert "*.a.kz AAAA 2001:db8::1\n" in text and "8.0.0.0.10.rpz-ip CNAME .\n" in text
    assert [p.name for p in tmp_path.iterdir()] == ["rpz.zone"]  # no temp file left
    z = dns.zone.from_text(text, origin="rpz.kzgate.", relativize=False)
    assert len(list(z.iterate_rdatas())) == count
