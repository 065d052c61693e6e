"""The RPZ zone as compact sets, and its records rendered lazily (pure).

A 1M-name zone is kept as one set of name strings (and one of prefixes), not as
DNS objects: every record of a name follows from the name and the zone-wide
action, so records are rendered to wire bytes (``render``) or master-file text
(``text_lines``) only while a transfer or an export walks the zone.

Policy encoding (draft-vixie-dnsop-dns-rpz, section 3): a QNAME trigger ``D``
is the owner ``D.<origin>``, and ``*.D.<origin>`` covers its subdomains; the
action ``CNAME .`` means NXDOMAIN, ``CNAME *.`` NODATA, and address records are
local data. An IP trigger (section 4.3) is ``<len>.<reversed address>.rpz-ip``.

A name in the zone is at most 255 octets (RFC 1035 section 3.1), origin
included, so a legal domain of up to 253 characters may have no owner here:
``*.D.<origin>`` is 4 octets longer than D's text plus the origin's. Such a
target is left out of the zone (a record that long would make every transfer
fail, and the whole fleet would keep an old zone), and ``uncarried`` names it
so that the pipeline reports it. rpz-ip owners are at most 51 octets plus the
origin, which kzgate/config keeps short enough for all of them; they are checked
all the same.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from kzgate.config import RpzConfig
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import IPNetwork

RpzAction = Literal["nxdomain", "nodata", "sinkhole"]

# RR types and class IN (RFC 1035, RFC 3596)
A, NS, CNAME, SOA, AAAA = 1, 2, 5, 6, 28
IN = 1
TTL = 60
# SOA timers: secondaries poll hourly (NOTIFY makes changes immediate), retry
# after 10 min, keep serving a day without us; negative answers cached 60 s.
REFRESH, RETRY, EXPIRE, MINIMUM = 3600, 600, 86400, 60
NS_TARGET = "localhost."  # RPZ zones are not delegated; the NS is a formality
PTR_ORIGIN = b"\xc0\x0c"  # the origin is the question name, at offset 12 of every message
MAX_NAME_OCTETS = 255  # RFC 1035 section 3.1: a whole name in wire form, root octet included

# An item of the zone as transfers walk it: a domain, an IP trigger, the SOA
# with a given serial (int), or the apex NS (None).
Item = str | IPNetwork | int | None


_LEN = [bytes((n,)) for n in range(256)]


def labels_wire(name: str) -> bytes:
    """``a.b`` as length-prefixed labels, without the root octet (hot: 1M calls per AXFR)."""
    out = b""
    for label in name.encode("ascii").split(b"."):
        out += _LEN[len(label)] + label
    return out


def name_wire(absolute: str) -> bytes:
    """An absolute name (``a.b.``) in uncompressed wire form."""
    stripped = absolute.removesuffix(".")
    return (labels_wire(stripped) if stripped else b"") + b"\x00"


def ip_trigger(net: IPNetwork) -> str:
    """The rpz-ip owner (relative to the origin) of a prefix.

    IPv4 ``10.1.0.0/16`` → ``16.0.0.1.10.rpz-ip``; IPv6 ``2001:db8::/32`` →
    ``32.zz.db8.2001.rpz-ip``: 16-bit groups in hex, reversed, with ``zz``
    where RFC 5952 text has ``::`` (the longest run of zero groups).
    """
    if isinstance(net, ipaddress.IPv4Network):
        parts = str(net.network_address).split(".")
    else:
        text = net.network_address.compressed
        if "::" in text:
            left, right = text.split("::")
            parts = [*(left.split(":") if left else []), "zz", *(right.split(":") if right else [])]
        else:
            parts = text.split(":")
    return f"{net.prefixlen}.{'.'.join(reversed(parts))}.rpz-ip"


# 128.ffff.ffff.ffff.ffff.ffff.ffff.ffff.ffff.rpz-ip: no prefix has a longer trigger
LONGEST_IP_TRIGGER = ip_trigger(ipaddress.IPv6Network(("ffff:" * 8)[:-1] + "/128"))


def owner_octets(relative: str, origin: str) -> int:
    """Wire length of the owner ``relative.<origin>`` (ASCII text; ``origin`` absolute)."""
    return len(relative) + 1 + len(origin) + 1


@dataclass(frozen=True, slots=True)
class ZoneParams:
    origin: str  # absolute, lower case, with the trailing dot
    action: RpzAction
    sinkhole_ipv4: ipaddress.IPv4Address
    sinkhole_ipv6: ipaddress.IPv6Address
    ip_triggers: bool

    def max_domain_chars(self) -> int:
        """The longest domain (text) whose owners, ``D`` and ``*.D``, both fit the zone."""
        return MAX_NAME_OCTETS - owner_octets("*.", self.origin)

    def carries_prefix(self, net: IPNetwork) -> bool:
        if owner_octets(LONGEST_IP_TRIGGER, self.origin) <= MAX_NAME_OCTETS:
            return True  # every origin kzgate/config accepts: every trigger fits
        return owner_octets(ip_trigger(net), self.origin) <= MAX_NAME_OCTETS


def _any_longer(names: Collection[str], limit: int) -> bool:
    # map(len) runs in C: a 1M-name start-up pays ~20 ms for the usual answer, no.
    return max(map(len, names), default=0) > limit


def uncarried(params: ZoneParams, diff: Diff) -> Diff:
    """Of what ``diff`` adds, what the zone cannot hold (its owner names would be too long).

    A domain is left out whole when ``*.D`` does not fit, even if ``D`` alone
    would: the target covers every subdomain, and half of it would be a block
    that looks enforced and is not. Prefixes count only with ip_triggers.
    """
    limit = params.max_domain_chars()
    domains: dict[str, InstructionRef] = {}
    if _any_longer(diff.domains_added, limit):
        domains = {d: r for d, r in diff.domains_added.items() if len(d) > limit}
    prefixes: dict[IPNetwork, InstructionRef] = {}
    if params.ip_triggers:
        prefixes = {p: r for p, r in diff.prefixes_added.items() if not params.carries_prefix(p)}
    return Diff(domains_added=domains, prefixes_added=prefixes)


def resolve_action(setting: str, block_mode: str) -> RpzAction:
    """The RPZ action for ``rpz.action`` given ``dns.block_mode``.

    ``refused`` has no RPZ counterpart that every resolver implements (BIND has
    rpz-drop, Unbound partly), so it maps to NXDOMAIN, the legal default.
    """
    if setting in ("nxdomain", "nodata", "sinkhole"):
        return setting  # type: ignore[return-value]
    return "sinkhole" if block_mode == "sinkhole" else "nxdomain"


def zone_params(
    cfg: RpzConfig,
    block_mode: str,
    sinkhole_ipv4: ipaddress.IPv4Address,
    sinkhole_ipv6: ipaddress.IPv6Address,
) -> ZoneParams:
    return ZoneParams(
        origin=cfg.origin,
        action=resolve_action(cfg.action, block_mode),
        sinkhole_ipv4=sinkhole_ipv4,
        sinkhole_ipv6=sinkhole_ipv6,
        ip_triggers=cfg.ip_triggers,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One step of the zone's history: what turned serial ``old`` into ``new``."""

    old: int
    new: int
    domains_removed: tuple[str, ...]
    domains_added: tuple[str, ...]
    prefixes_removed: tuple[IPNetwork, ...]
    prefixes_added: tuple[IPNetwork, ...]

    def size(self) -> int:
        return (
            len(self.domains_removed)
            + len(self.domains_added)
            + len(self.prefixes_removed)
            + len(self.prefixes_added)
        )

    def removed(self) -> Iterator[Item]:
        yield from self.domains_removed
        yield from self.prefixes_removed

    def added(self) -> Iterator[Item]:
        yield from self.domains_added
        yield from self.prefixes_added


def next_serial(serial: int) -> int:
    """RFC 1982 serial arithmetic: +1 modulo 2^32, skipping 0 (some tools treat it as unset)."""
    return (serial + 1) % (1 << 32) or 1


class Zone:
    """The zone content and serial. Only ``change`` and ``replace`` mutate it."""

    def __init__(self, params: ZoneParams, serial: int) -> None:
        self.params = params
        self.serial = serial % (1 << 32) or 1
        self.domains: set[str] = set()
        self.prefixes: set[IPNetwork] = set()
        self._max_domain = params.max_domain_chars()

    def __len__(self) -> int:
        return len(self.domains) + len(self.prefixes)

    def change(self, diff: Diff) -> Change | None:
        """Apply ``diff``; the Change (serial bumped), or None when no record changed.

        Relabelled domains change no record (the zone names no instruction), and
        prefixes matter only with ip_triggers: such diffs leave the serial alone.
        What the zone cannot hold (``uncarried``) is left out, and so is its removal.
        """
        added = self._fitting([d for d in diff.domains_added if d not in self.domains])
        removed = [d for d in diff.domains_removed if d in self.domains]
        p_added: list[IPNetwork] = []
        p_removed: list[IPNetwork] = []
        if self.params.ip_triggers:
            carries = self.params.carries_prefix
            p_added = [p for p in diff.prefixes_added if p not in self.prefixes and carries(p)]
            p_removed = [p for p in diff.prefixes_removed if p in self.prefixes]
        return self._commit(removed, added, p_removed, p_added)

    def replace(self, state: State) -> Change | None:
        """Make the content equal ``state`` but for what it cannot hold; the Change, or None."""
        wanted = state.domains.keys()
        removed = [d for d in self.domains if d not in wanted]
        added = self._fitting([d for d in wanted if d not in self.domains])
        p_added: list[IPNetwork] = []
        p_removed: list[IPNetwork] = []
        if self.params.ip_triggers:
            carries = self.params.carries_prefix
            p_removed = [p for p in self.prefixes if p not in state.prefixes]
            p_added = [p for p in state.prefixes if p not in self.prefixes and carries(p)]
        return self._commit(removed, added, p_removed, p_added)

    def _fitting(self, names: list[str]) -> list[str]:
        """``names`` without those the zone cannot hold (see ``uncarried``)."""
        limit = self._max_domain
        return [d for d in names if len(d) <= limit] if _any_longer(names, limit) else names

    def _commit(
        self,
        removed: list[str],
        added: list[str],
        p_removed: list[IPNetwork],
        p_added: list[IPNetwork],
    ) -> Change | None:
        if not (removed or added or p_removed or p_added):
            return None
        self.domains.difference_update(removed)
        self.domains.update(added)
        self.prefixes.difference_update(p_removed)
        self.prefixes.update(p_added)
        old, self.serial = self.serial, next_serial(self.serial)
        # sorted: transfers and exports come out the same for the same content
        return Change(
            old,
            self.serial,
            tuple(sorted(removed)),
            tuple(sorted(added)),
            tuple(sorted(p_removed, key=_net_key)),
            tuple(sorted(p_added, key=_net_key)),
        )

    def items(self) -> tuple[int, list[Item]]:
        """A snapshot for AXFR: the serial and every item in transfer order.

        A list of references (8 bytes per name), so a transfer that yields to
        the loop between messages sees one consistent serial while apply() goes on.
        """
        items: list[Item] = [None]
        items.extend(self.domains)
        items.extend(self.prefixes)
        return self.serial, items

    def record_count(self) -> int:
        per_name = 4 if self.params.action == "sinkhole" else 2
        return 2 + per_name * len(self.domains) + len(self.prefixes)


def _net_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


# --- wire rendering -----------------------------------------------------------


def _rr_tail(rrtype: int, rdata: bytes, ttl: int = TTL) -> bytes:
    """Everything of a record after its owner name."""
    return struct.pack("!HHIH", rrtype, IN, ttl, len(rdata)) + rdata


def _pointer(offset: int) -> bytes:
    return (0xC000 | offset).to_bytes(2, "big")


class Renderer:
    """Renders zone items as wire records at a given offset in a message.

    Owners are compressed against the question name (the origin, at offset 12),
    and a wildcard against its base name, so a name costs its labels once.
    """

    def __init__(self, params: ZoneParams) -> None:
        self.params = params
        self._tails: tuple[bytes, ...]
        if params.action == "nxdomain":
            self._tails = (_rr_tail(CNAME, b"\x00"),)
        elif params.action == "nodata":
            self._tails = (_rr_tail(CNAME, b"\x01*\x00"),)
        else:
            self._tails = (
                _rr_tail(A, params.sinkhole_ipv4.packed),
                _rr_tail(AAAA, params.sinkhole_ipv6.packed),
            )
        self._ip_tail = _rr_tail(CNAME, b"\x00")
        self._ns = PTR_ORIGIN + _rr_tail(NS, name_wire(NS_TARGET))
        self._soa_names = name_wire(NS_TARGET) + name_wire("hostmaster." + params.origin)

    def soa(self, serial: int) -> bytes:
        rdata = self._soa_names + struct.pack("!5I", serial, REFRESH, RETRY, EXPIRE, MINIMUM)
        return PTR_ORIGIN + _rr_tail(SOA, rdata)

    def render(self, item: Item, offset: int) -> tuple[bytes, int]:
        """(wire records, record count) of ``item`` starting at ``offset``."""
        if isinstance(item, str):
            return self._domain(item, offset)
        if item is None:
            return self._ns, 1
        if isinstance(item, int):
            return self.soa(item), 1
        return labels_wire(ip_trigger(item)) + PTR_ORIGIN + self._ip_tail, 1

    def _domain(self, name: str, offset: int) -> tuple[bytes, int]:
        if len(self._tails) == 1:  # CNAME actions: the common case, kept short
            tail = self._tails[0]
            return labels_wire(name) + PTR_ORIGIN + tail + b"\x01*" + _pointer(offset) + tail, 2
        tails = self._tails
        base = _pointer(offset)
        out = bytearray(labels_wire(name) + PTR_ORIGIN + tails[0])
        for tail in tails[1:]:
            out += base + tail
        wild = _pointer(offset + len(out))
        out += b"\x01*" + base + tails[0]
        for tail in tails[1:]:
            out += wild + tail
        return bytes(out), 2 * len(tails)


# --- master-file text (RFC 1035 section 5) --------------------------------------


def text_lines(zone: Zone) -> Iterator[str]:
    """The zone in master-file format, one record a line, owners relative to $ORIGIN."""
    p = zone.params
    yield f"$ORIGIN {p.origin}\n"
    yield f"$TTL {TTL}\n"
    yield (
        f"@ SOA {NS_TARGET} hostmaster.{p.origin} "
        f"{zone.serial} {REFRESH} {RETRY} {EXPIRE} {MINIMUM}\n"
    )
    yield f"@ NS {NS_TARGET}\n"
    if p.action == "nxdomain":
        rdatas = ["CNAME ."]
    elif p.action == "nodata":
        rdatas = ["CNAME *."]
    else:
        rdatas = [f"A {p.sinkhole_ipv4}", f"AAAA {p.sinkhole_ipv6}"]
    for name in sorted(zone.domains):
        for owner in (name, "*." + name):
            for rdata in rdatas:
                yield f"{owner} {rdata}\n"
    yield from _ip_lines(sorted(zone.prefixes, key=_net_key))


def _ip_lines(prefixes: Iterable[IPNetwork]) -> Iterator[str]:
    for net in prefixes:
        yield f"{ip_trigger(net)} CNAME .\n"
