"""Fuzz how kzgate/rpz/notify.py reads a secondary's reply to a NOTIFY: is_ack.

The bytes are one UDP datagram arriving on the NOTIFY socket (the secondary's answer, or a
spoofer's). is_ack documents no error: it returns True or False, for the unsigned NOTIFY and
for the TSIG-signed one.

A fuzzer cannot forge the TSIG of a signed acknowledgement, and one in the corpus goes stale
(TSIG time is checked against the clock), so when the input parses as a message it is also
re-signed now as the answer to the signed NOTIFY, with the NOTIFY's ID: is_ack must then say
True exactly when that message is a NOERROR NOTIFY response.
"""

from __future__ import annotations

from _harness import RPZ_ORIGIN, TSIG_NAME, TSIG_SECRET, fuzz, instrumented

with instrumented(__name__):
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.opcode
    import dns.rcode
    import dns.rrset
    import dns.tsig

    from kzgate.rpz.notify import is_ack, notify_message

MAX_LEN = 65535  # a UDP datagram carries at most 65,507 octets; 65,535 bounds it
TIMEOUT = 5  # seconds per input

KEY = dns.tsig.Key(dns.name.from_text(TSIG_NAME), TSIG_SECRET, "hmac-sha256")
SOA = dns.rrset.from_text(
    RPZ_ORIGIN, 60, "IN", "SOA", f"localhost. hostmaster.{RPZ_ORIGIN} 2026112203 3600 600 86400 60"
)
QUERY_ID = 0x2A2A


def sent(key: dns.tsig.Key | None) -> dns.message.Message:
    """A NOTIFY as the Notifier sends it (rendered, so a signed one has its MAC)."""
    msg = notify_message(SOA, key)
    msg.id = QUERY_ID
    msg.to_wire()
    return msg


PLAIN, SIGNED = sent(None), sent(KEY)


def target(data: bytes) -> None:
    assert is_ack(data, PLAIN, None) in (True, False)
    assert is_ack(data, SIGNED, KEY) in (True, False)
    try:
        reply = dns.message.from_wire(data, keyring=False)
    except dns.exception.DNSException:
        return
    if reply.had_tsig:
        return  # use_tsig would sign over the old TSIG's settings; the plain path read it
    reply.id = QUERY_ID
    reply.use_tsig(KEY)
    reply.request_mac = SIGNED.mac
    try:
        wire = reply.to_wire()
    except (dns.exception.DNSException, ValueError):
        # dnspython will not render it again (no room for the TSIG, say): harness, not parser
        return
    expected = (
        bool(reply.flags & dns.flags.QR)
        and reply.opcode() == dns.opcode.NOTIFY
        and reply.rcode() == dns.rcode.NOERROR
    )
    assert is_ack(wire, SIGNED, KEY) == expected, "a valid signed reply misjudged"


if __name__ == "__main__":
    fuzz(target)
