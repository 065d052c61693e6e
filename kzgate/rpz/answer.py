"""Who may ask what, and the answer: ACL, TSIG, AXFR/IXFR/SOA (pure apart from the clock).

Choices, each for a stated reason:
- A transfer (or SOA query) from outside ``allow_transfer`` → REFUSED; a
  transfer without TSIG when a key is configured → REFUSED (RFC 5936 section 6
  allows REFUSED; it is what kdig, BIND and Unbound report plainly).
- A TSIG that fails (unknown key, bad MAC, clock skew) → NOTAUTH, unsigned,
  as RFC 8945 section 5.2 says; the client learns no more than that.
- IXFR over UDP → the current SOA alone (RFC 1995 section 2): the client
  compares serials and comes back over TCP. AXFR over UDP → FORMERR
  (RFC 5936 section 4.2: AXFR is TCP only).
- Anything other than SOA/AXFR/IXFR for the origin → REFUSED: this is a
  transfer source, not an authoritative server for RPZ names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from kzgate.names import IPNetwork
from kzgate.rpz import wire
from kzgate.rpz.journal import Journal
from kzgate.rpz.zone import EXPIRE, MINIMUM, NS_TARGET, REFRESH, RETRY, TTL, Renderer, Zone

Kind = Literal["axfr", "ixfr", "soa", "other"]
Outcome = Literal["ok", "refused", "error"]

_TSIG_FAILURES = (
    dns.message.UnknownTSIGKey,
    dns.tsig.BadSignature,
    dns.tsig.BadKey,
    dns.tsig.BadTime,
    dns.tsig.BadAlgorithm,
    dns.tsig.PeerError,
)


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind  # for metrics: the transfer format served (an IXFR may come out as AXFR)
    outcome: Outcome
    messages: Iterator[bytes]


def allowed(peer: str, acl: Sequence[IPNetwork]) -> bool:
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in acl)


def soa_rrset(zone: Zone) -> dns.rrset.RRset:
    origin = zone.params.origin
    text = f"{NS_TARGET} hostmaster.{origin} {zone.serial} {REFRESH} {RETRY} {EXPIRE} {MINIMUM}"
    return dns.rrset.from_text(origin, TTL, "IN", "SOA", text)


def answer(
    data: bytes,
    peer: str,
    *,
    tcp: bool,
    zone: Zone,
    journal: Journal,
    acl: Sequence[IPNetwork],
    key: dns.tsig.Key | None,
    now: int,
) -> Answer | None:
    """The answer to one query, or None to drop it (not DNS, or a response)."""
    keyring = {key.name: key} if key else None
    try:
        query = dns.message.from_wire(data, keyring=keyring)
    except _TSIG_FAILURES:
        return _tsig_failure(data)
    except dns.exception.DNSException:
        return None  # malformed: nothing we could echo back safely
    if query.flags & dns.flags.QR:
        return None
    if query.opcode() != dns.opcode.QUERY:
        return _single("other", "refused", query, dns.rcode.NOTIMP)
    if len(query.question) != 1:
        return _single("other", "error", query, dns.rcode.FORMERR)
    q = query.question[0]
    kind = _kind(q.rdtype)
    origin = dns.name.from_text(zone.params.origin)
    if q.name != origin or q.rdclass != dns.rdataclass.IN or kind == "other":
        return _single("other", "refused", query, dns.rcode.REFUSED)
    if not allowed(peer, acl):
        return _single(kind, "refused", query, dns.rcode.REFUSED)
    if key is not None and kind != "soa" and not query.had_tsig:
        return _single(kind, "refused", query, dns.rcode.REFUSED)
    if kind == "soa" or (kind == "ixfr" and not tcp):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.answer.append(soa_rrset(zone))
        return Answer(kind, "ok", iter([response.to_wire()]))
    if not tcp:
        return _single(kind, "error", query, dns.rcode.FORMERR)
    return _transfer(query, kind, zone, journal, key, now)


def _transfer(
    query: dns.message.Message,
    kind: Kind,
    zone: Zone,
    journal: Journal,
    key: dns.tsig.Key | None,
    now: int,
) -> Answer:
    signer = None
    if query.had_tsig and key is not None:
        signer = wire.Signer(key, query.mac or b"", query.id, now)
    rd = bool(query.flags & dns.flags.RD)
    items_out = None
    if kind == "ixfr":
        client = _client_serial(query)
        if client is None:
            return _single(kind, "error", query, dns.rcode.FORMERR)
        changes = journal.since(client, zone.serial)
        if changes is not None:
            items_out = wire.ixfr_items(zone.serial, changes)
    qtype = wire.IXFR if kind == "ixfr" else wire.AXFR
    if items_out is None:  # AXFR, or an IXFR we have no history for
        kind = "axfr"
        serial, items = zone.items()
        items_out = wire.axfr_items(serial, items)
    messages = wire.pack(
        Renderer(zone.params), items_out, query_id=query.id, qtype=qtype, rd=rd, signer=signer
    )
    return Answer(kind, "ok", messages)


def _client_serial(query: dns.message.Message) -> int | None:
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(rrset[0].serial)
    return None


def _single(kind: Kind, outcome: Outcome, query: dns.message.Message, rcode: int) -> Answer:
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    return Answer(kind, outcome, iter([response.to_wire()]))


def _tsig_failure(data: bytes) -> Answer | None:
    try:
        query = dns.message.from_wire(data, keyring=False)  # parse, do not verify
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR:
        return None
    kind = _kind(query.question[0].rdtype) if query.question else "other"
    return _single(kind, "refused", query, dns.rcode.NOTAUTH)


def _kind(rdtype: int) -> Kind:
    if rdtype == dns.rdatatype.AXFR:
        return "axfr"
    if rdtype == dns.rdatatype.IXFR:
        return "ixfr"
    return "soa" if rdtype == dns.rdatatype.SOA else "other"
