"""What an observed answer means: a check's outcome from the reply and the expectation.

Pure. ``dns_check`` parses a reply that came from the network (a resolver, or
anything that spoofed one), so every failure to parse is an answer of its own,
"malformed", never an exception (fuzzed: tests/fuzz/py/probe_dns_reply.py).
dnspython parses it: a runtime dependency already (RPZ transfers), so the
probes add none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from kzgate.config.model import DnsConfig, RpzConfig
from kzgate.probes.model import Check, Outcome, Place, ProbeTarget
from kzgate.rpz.zone import resolve_action

_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
KZGATE_EDE = 16  # Censored: kzgate/dns/engine.py puts it in every block answer to an EDNS query
_SHOWN_RECORDS = 3  # records named in ``observed``; the rest counted


@dataclass(frozen=True)
class BlockAnswer:
    """What a block looks like at a DNS place."""

    rcodes: frozenset[str]  # e.g. {"NXDOMAIN"}; {"REFUSED"} for block_mode refused at kzgate
    addresses: frozenset[str]  # sinkhole addresses (block_mode sinkhole / rpz sinkhole)
    nodata: bool  # RPZ action nodata: NOERROR with no answer is a block
    # An extended DNS error (RFC 8914) every block answer carries, when the place marks
    # its blocks: kzgate's own answers carry 16 (Censored), naming the instruction.
    # Without it, an upstream's NXDOMAIN for a name that does not exist would pass
    # for a block (a subdomain probe's name, above all).
    ede: int | None = None


def block_answer_for_kzgate(dns_cfg: DnsConfig) -> BlockAnswer:
    """kzgate's own listeners answer a blocked name per ``dns.block_mode``."""
    if dns_cfg.block_mode == "sinkhole":
        sinkholes = frozenset({str(dns_cfg.sinkhole_ipv4), str(dns_cfg.sinkhole_ipv6)})
        return BlockAnswer(frozenset(), sinkholes, nodata=False, ede=KZGATE_EDE)
    rcode = "REFUSED" if dns_cfg.block_mode == "refused" else "NXDOMAIN"
    return BlockAnswer(frozenset({rcode}), frozenset(), nodata=False, ede=KZGATE_EDE)


def block_answer_for_resolvers(dns_cfg: DnsConfig, rpz: RpzConfig) -> BlockAnswer:
    """The operator's resolvers answer per the RPZ zone's records (kzgate/rpz/zone.py):
    ``CNAME .`` is NXDOMAIN, ``CNAME *.`` is NODATA, A/AAAA records are the sinkhole."""
    action = resolve_action(rpz.action, dns_cfg.block_mode)
    if action == "sinkhole":
        sinkholes = frozenset({str(dns_cfg.sinkhole_ipv4), str(dns_cfg.sinkhole_ipv6)})
        return BlockAnswer(frozenset(), sinkholes, nodata=False)
    if action == "nodata":
        return BlockAnswer(frozenset(), frozenset(), nodata=True)
    return BlockAnswer(frozenset({"NXDOMAIN"}), frozenset(), nodata=False)


def _check(
    target: ProbeTarget, place: Place, observed: str, outcome: Outcome, at: dt.datetime
) -> Check:
    return Check(target, place, observed, outcome, at)


def _judged(looks_blocked: bool, target: ProbeTarget) -> Outcome:
    return "pass" if looks_blocked == (target.expect == "blocked") else "fail"


def dns_check(
    target: ProbeTarget, place: Place, reply: bytes | None, block: BlockAnswer, at: dt.datetime
) -> Check:
    """The check of one DNS reply to a query for ``target.value`` (A or AAAA)."""
    if reply is None:
        return _check(target, place, "timeout", "unreachable", at)
    try:
        msg = dns.message.from_wire(reply, ignore_trailing=False)
    except Exception:  # untrusted bytes: whatever dnspython raises, it is not an answer
        return _check(target, place, "malformed", "unreachable", at)
    if not _answers_question(msg, target.value):
        return _check(target, place, "not an answer to the question", "unreachable", at)
    rcode = dns.rcode.to_text(msg.rcode())
    if rcode in block.rcodes and not _marked(msg, block):
        outcome: Outcome = "fail" if rcode == "NXDOMAIN" else "unreachable"
        return _check(target, place, f"{rcode} without EDE {block.ede}", outcome, at)
    if rcode in block.rcodes:
        return _check(target, place, rcode, _judged(True, target), at)
    if rcode == "NXDOMAIN":  # not this place's block answer, but no more an open name
        return _check(target, place, rcode, "fail", at)
    if rcode != "NOERROR":  # SERVFAIL, a REFUSED that is not the block, FORMERR, ...
        return _check(target, place, rcode, "unreachable", at)
    records, addresses = _answer_records(msg)
    if not addresses:
        observed = "NODATA" if not records else ", ".join(records) + ", no address"
        return _check(target, place, observed, _judged(block.nodata, target), at)
    observed = _shown(records)
    sinkholed = all(a in block.addresses for a in addresses) and _marked(msg, block)
    return _check(target, place, observed, _judged(sinkholed, target), at)


def _marked(msg: dns.message.Message, block: BlockAnswer) -> bool:
    """The reply carries the place's block marker, or the place has none."""
    if block.ede is None:
        return True
    return any(
        isinstance(option, dns.edns.EDEOption) and int(option.code) == block.ede
        for option in msg.options
    )


def _answers_question(msg: dns.message.Message, qname: str) -> bool:
    if not msg.flags & dns.flags.QR or msg.opcode() != dns.opcode.QUERY:
        return False
    if len(msg.question) != 1:
        return False
    q = msg.question[0]
    try:
        wanted = dns.name.from_text(qname)
    except Exception:  # a target that is not a DNS name cannot be answered
        return False
    return (
        q.name == wanted  # dnspython compares names case-insensitively
        and q.rdclass == dns.rdataclass.IN
        and q.rdtype in _ADDRESS_TYPES
    )


def _answer_records(msg: dns.message.Message) -> tuple[list[str], list[str]]:
    """The answer section's records as text, and the addresses among them."""
    records: list[str] = []
    addresses: list[str] = []
    for rrset in msg.answer:
        rtype = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            text = rdata.to_text()
            records.append(f"{rtype} {text}")
            if rrset.rdtype in _ADDRESS_TYPES:
                addresses.append(text)
    return records, addresses


def _shown(records: list[str]) -> str:
    shown = ", ".join(records[:_SHOWN_RECORDS])
    more = len(records) - _SHOWN_RECORDS
    return shown + (f" (+{more} more)" if more > 0 else "")


def kernel_check(target: ProbeTarget, place: Place, found: str | None, at: dt.datetime) -> Check:
    """``found``: what covers the address ("blocked_v4 10.0.0.0/24", "table 666
    10.0.0.0/24 blackhole") or None; a pass when that matches the expectation."""
    observed = found if found is not None else "not covered"
    return _check(target, place, observed, _judged(found is not None, target), at)


def connect_check(target: ProbeTarget, place: Place, result: str, at: dt.datetime) -> Check:
    """``result`` of ``kernel.Kernel.connect_result``: "blocked: EPERM" when an output
    rule stopped the packet; "open: connected" or "open: ECONNREFUSED" when it got
    out; "unreachable: ..." (a timeout, no route) shows neither."""
    verdict = result.split(":", 1)[0]
    if verdict == "blocked":
        return _check(target, place, result, _judged(True, target), at)
    if verdict == "open":
        return _check(target, place, result, _judged(False, target), at)
    return _check(target, place, result, "unreachable", at)
