"""Fuzz the RPZ transfer listener's answer: kzgate/rpz/answer.py (with rpz/wire.py streaming).

The bytes are one query to the transfer listener, over UDP and over TCP, from an address inside
the ACL and from one outside it, with no TSIG key configured and with one. ``answer`` documents
no error: it returns None (drop) or an Answer whose messages dnspython reads back. dnspython
parses the query first (and checks its TSIG).

A fuzzer cannot forge a TSIG, and a signed query in the corpus goes stale (TSIG time is checked
against the clock, 300 s fudge), so the signed paths are reached by re-signing: when the input
parses as a message without TSIG, it is signed with the configured key now and answered over
TCP; every message of that answer must then verify as the client would check it (the first
over the request MAC, each later one chained to the one before, RFC 8945 section 5.3.1).
"""

from __future__ import annotations

import ipaddress
import itertools
import time

from _harness import RPZ_ORIGIN, TSIG_NAME, TSIG_SECRET, fuzz, instrumented

with instrumented(__name__):
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.tsig

    from kzgate.model import Diff, InstructionRef
    from kzgate.rpz.answer import answer
    from kzgate.rpz.journal import Journal
    from kzgate.rpz.zone import Zone, ZoneParams

MAX_LEN = 65535  # a TCP message; a UDP datagram is shorter
TIMEOUT = 10  # seconds per input (it answers eight times, with an HMAC over every message)
MAX_MESSAGES = 100  # the small zone below fits one message; more would be a runaway stream

KEY = dns.tsig.Key(dns.name.from_text(TSIG_NAME), TSIG_SECRET, "hmac-sha256")
ORIGIN = dns.name.from_text(RPZ_ORIGIN)
ACL = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
INSIDE, OUTSIDE = "127.0.0.1", "192.0.2.9"
REF = InstructionRef("mci", "04-1/123", "2026-11-20")
FIRST_SERIAL = 2026112201


def world() -> tuple[Zone, Journal]:
    """A sinkhole zone with IP triggers and a three-step IXFR history."""
    params = ZoneParams(
        RPZ_ORIGIN,
        "sinkhole",
        ipaddress.IPv4Address("192.0.2.1"),
        ipaddress.IPv6Address("2001:db8::1"),
        True,
    )
    zone, journal = Zone(params, FIRST_SERIAL), Journal(10)
    for diff in (
        Diff(domains_added={"bad.kz": REF, "evil.example": REF}),
        Diff(prefixes_added={ipaddress.ip_network("10.0.0.0/24"): REF}),
        Diff(domains_removed=frozenset({"evil.example"}), domains_added={"xn--80ak6aa92e.kz": REF}),
    ):
        change = zone.change(diff)
        assert change is not None
        journal.record(change)
    return zone, journal


ZONE, JOURNAL = world()


def respond(data: bytes, peer: str, tcp: bool, key: dns.tsig.Key | None) -> list[bytes] | None:
    ans = answer(
        data, peer, tcp=tcp, zone=ZONE, journal=JOURNAL, acl=ACL, key=key, now=int(time.time())
    )
    if ans is None:
        return None
    messages = list(itertools.islice(ans.messages, MAX_MESSAGES + 1))
    assert 1 <= len(messages) <= MAX_MESSAGES, len(messages)
    assert ans.kind in ("axfr", "ixfr", "soa", "other")
    assert ans.outcome in ("ok", "refused", "error")
    return messages


def unsigned_check(data: bytes, messages: list[bytes]) -> None:
    for m in messages:
        assert m[:2] == data[:2], "an answer with another ID"
        dns.message.from_wire(m, keyring=False, xfr=True, origin=ORIGIN, multi=True)


def signed_check(query: dns.message.Message, messages: list[bytes]) -> None:
    ctx = None
    for m in messages:
        reply = dns.message.from_wire(
            m, keyring=KEY, request_mac=query.mac, xfr=True, origin=ORIGIN, tsig_ctx=ctx, multi=True
        )
        assert reply.id == query.id and reply.had_tsig, "a signed query got an unsigned answer"
        ctx = reply.tsig_ctx


def target(data: bytes) -> None:
    for key in (None, KEY):
        for tcp in (False, True):
            messages = respond(data, INSIDE, tcp, key)
            if messages is not None:
                unsigned_check(data, messages)
        respond(data, OUTSIDE, True, key)
    try:
        query = dns.message.from_wire(data, keyring=False)
    except dns.exception.DNSException:
        return
    if query.had_tsig or query.flags & dns.flags.QR:
        return
    try:
        query.use_tsig(KEY)
        wire = query.to_wire()
    except (dns.exception.DNSException, ValueError):
        # dnspython will not render it again (no room for the TSIG, say): harness, not parser
        return
    messages = respond(wire, INSIDE, True, KEY)
    if messages is not None:
        signed_check(query, messages)


if __name__ == "__main__":
    fuzz(target)
