"""Fuzz how a probe judges a DNS reply: kzgate/probes/verdict.dns_check and dnsprobe.matches.

The bytes are one UDP datagram from a resolver the probe asked (or a spoofer). The first
input octet picks the expectation (bit 0: blocked) and the place's block answer (bits 1-2:
NXDOMAIN, sinkhole, NODATA, REFUSED); the rest is the reply. The probe target is the reply's
own question when dnspython can read one (so inputs get past the question check), else a
fixed name.

dns_check documents no error: every reply is a Check, "unreachable" when it shows nothing.
Invariants: the outcome is one of the three; flipping the expectation swaps pass and fail
and leaves unreachable alone (an answer looks blocked or open, whatever was expected),
except an NXDOMAIN where the block answer is another, which fails either way;
``observed`` stays short (it goes into tables and reports). dnsprobe.matches, which reads
the same datagram first, never raises.
"""

from __future__ import annotations

import datetime as dt

from _harness import fuzz, instrumented

with instrumented(__name__):
    import dns.message

    from kzgate.model import InstructionRef
    from kzgate.probes.dnsprobe import build_query, matches
    from kzgate.probes.model import OUTCOMES, Place, ProbeTarget
    from kzgate.probes.verdict import BlockAnswer, dns_check

MAX_LEN = 65535 + 1  # a UDP reply (at most 65,535 octets) after the control octet
TIMEOUT = 5  # seconds per input

AT = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
REF = InstructionRef("mci", "1", "2026-11-01")
PLACE = Place("resolver", "127.0.0.1:53")
FALLBACK = "example.kz"
_PLAIN = (
    BlockAnswer(frozenset({"NXDOMAIN"}), frozenset(), nodata=False),
    BlockAnswer(frozenset(), frozenset({"192.0.2.1", "2001:db8::1"}), nodata=False),
    BlockAnswer(frozenset(), frozenset(), nodata=True),
    BlockAnswer(frozenset({"REFUSED"}), frozenset(), nodata=False),
)
# kzgate's own places: every block answer must carry EDE 16
BLOCKS = _PLAIN + tuple(
    BlockAnswer(b.rcodes, b.addresses, nodata=b.nodata, ede=16) for b in _PLAIN
)
SWAPPED = {"pass": "fail", "fail": "pass", "unreachable": "unreachable"}


def qname(reply: bytes) -> str:
    try:
        msg = dns.message.from_wire(reply)
        return str(msg.question[0].name.to_text(omit_final_dot=True)) or "."
    except Exception:
        return FALLBACK


def target(data: bytes) -> None:
    if not data:
        return
    control, reply = data[0], data[1:]
    block = BLOCKS[(control >> 1) & 7]
    name = qname(reply)
    checks = []
    for expect in ("blocked", "open") if control & 1 else ("open", "blocked"):
        t = ProbeTarget("name", name, "domain:" + name, REF, expect)  # type: ignore[arg-type]
        check = dns_check(t, PLACE, reply, block, AT)
        assert check.outcome in OUTCOMES
        assert isinstance(check.observed, str) and 0 < len(check.observed) <= 1200
        checks.append(check)
    unmarked = checks[0].observed == f"NXDOMAIN without EDE {block.ede}"
    if unmarked or (checks[0].observed == "NXDOMAIN" and "NXDOMAIN" not in block.rcodes):
        # not this place's block answer, and no answer for an open name: fails either way
        assert checks[0].outcome == checks[1].outcome == "fail", checks
    else:
        assert checks[1].outcome == SWAPPED[checks[0].outcome], checks
    assert checks[0].observed == checks[1].observed
    if name != FALLBACK and len(name) <= 253:
        try:
            query = build_query(name)
        except Exception:
            return  # a question dnspython read but will not write (escapes, long labels)
        assert isinstance(matches(query, reply), bool)


if __name__ == "__main__":
    fuzz(target)
