"""Fuzz the DNS query reader of kzgate/dns/wire.py: question_end, parse_query, find_opt, names.

The bytes are what a subscriber sends to the resolver. Only ``WireError`` (the module's one
documented error, which the engine turns into FORMERR) may escape; the invariants below are
what the engine relies on when it slices the question and sizes its answers.
"""

from __future__ import annotations

import struct

from _harness import fuzz, instrumented

with instrumented(__name__):
    from kzgate.dns import wire

# The largest DNS message TCP carries (a two-octet length, RFC 1035 section 4.2.2); UDP less.
MAX_LEN = 65535
TIMEOUT = 5  # seconds; a query that takes longer is a denial of service

_COUNTS = struct.Struct("!4H")


def _names(data: bytes, off: int) -> None:
    """read_name and skip_name on the name at ``off`` must agree where the former succeeds."""
    try:
        name, end = wire.read_name(data, off)
    except wire.WireError:
        return
    assert 1 <= len(name) <= 255 and name.endswith(b"\x00"), name
    assert name == name.lower()
    assert wire.skip_name(data, off) == end <= len(data)


def target(data: bytes) -> None:
    try:
        end = wire.question_end(data)
    except wire.WireError:
        end = None
    else:
        assert 17 <= end <= len(data)
        assert end - 4 - 12 <= 255  # QNAME, root octet included
    _names(data, 12)
    if len(data) < 12:
        return  # parse_query's caller (Engine.on_query) checks for a header first
    try:
        q = wire.parse_query(data)
    except wire.WireError:
        return
    assert end is not None, "parse_query read a question that question_end refuses"
    assert q.question == data[12:end]
    assert q.qname == data[12 : end - 4].lower()
    assert (q.qtype, q.qclass) == struct.unpack_from("!HH", data, end - 4)
    assert 512 <= q.udp_size <= 65535 and 0 <= q.version <= 255
    assert q.edns or (not q.do_bit and q.udp_size == 512 and q.version == 0)
    # The full record walk agrees with parse_query's one-unpack shortcut for a lone OPT.
    an, ns, ar = _COUNTS.unpack_from(data, 4)[1:]
    opt = wire.find_opt(data, end, an, ns, ar)
    assert (opt is not None) == q.edns
    if opt is not None:
        assert max(opt[0], 512) == q.udp_size and bool(opt[1] & 0x8000) == q.do_bit


if __name__ == "__main__":
    fuzz(target)
