"""Fuzz upstream answer handling: wire.scan_reply, Engine.on_upstream, the cache, reply matching.

A reply comes from the network too (a broken upstream, a spoofer who guessed the ID). The first
input octet sets the client's query (EDNS, DO, CD, TCP, the question's case); the rest is the
reply. The Forward asks the reply's own question when it has one (so scan_reply gets past the
question check), else a fixed one. Then the same question is asked again a second and a half
later, to take the cache-hit path (TTLs aged in place at the offsets the scan recorded).

Nothing may escape: on_upstream answers SERVFAIL for a reply scan_reply refuses (WireError).
Every answer carries the client's ID and question, QR, and fits the client's size.
"""

from __future__ import annotations

import struct

from _harness import fuzz, instrumented

with instrumented(__name__):
    from _dnsworld import NOW, engines

    from kzgate.dns import upstream, wire
    from kzgate.dns.engine import Engine
    from kzgate.dns.types import Forward

MAX_LEN = 65535 + 1  # a reply over TCP (65,535 octets) after the control octet
TIMEOUT = 5  # seconds per input

ENGINES: list[Engine] = engines()
FALLBACK_QUESTION = b"\x03www\x07example\x02kz\x00\x00\x01\x00\x01"
CLIENT_ID = 0x4242
EDNS, DO, CD, TCP, UPPER = 1, 2, 4, 8, 16


def forward(control: int, reply: bytes) -> Forward:
    try:
        question = reply[12 : wire.question_end(reply)]
    except wire.WireError:
        question = FALLBACK_QUESTION
    name = question[:-4].lower()
    if control & UPPER:  # the client's 0x20 case differs from the reply's
        question = question[:-4].upper() + question[-4:]
    qtype, qclass = struct.unpack_from("!HH", question, len(question) - 4)
    edns, do = bool(control & EDNS), bool(control & (EDNS | DO) == EDNS | DO)
    max_size = 65535 if control & TCP else (1232 if edns else 512)
    flags = 0x0100 | (0x0010 if control & CD else 0)
    return Forward(CLIENT_ID, question, name, qtype, qclass, do, edns, max_size, b"", flags)


def again(fwd: Forward) -> bytes:
    """The client asking the same question again, with its EDNS and flags."""
    opt = wire.opt_rr(fwd.do_bit) if fwd.edns else b""
    return wire.HEADER.pack(0x5151, fwd.flags, 1, 0, 0, int(fwd.edns)) + fwd.question + opt


def check(out: bytes, client_id: int, question: bytes, max_size: int) -> None:
    assert 12 <= len(out) <= max_size, (len(out), max_size)
    assert struct.unpack_from("!H", out)[0] == client_id and out[2] & 0x80
    assert out[12 : 12 + len(question)] == question, "not the client's question"


def target(data: bytes) -> None:
    if not data:
        return
    control, reply = data[0], data[1:]
    _match(reply)
    fwd = forward(control, reply)
    try:
        scan = wire.scan_reply(reply, fwd.question)
    except wire.WireError:
        scan = None
    if scan is not None:
        assert len(scan.ttl_offsets) == len(scan.ttls)
        assert all(off >= 0 and off + 4 <= len(reply) for off in scan.ttl_offsets)
        assert all(0 < len(t) <= 255 for t in scan.targets)
    for engine in ENGINES:
        engine.cache.clear()  # each input starts from the same state
        out = engine.on_upstream(fwd, reply, NOW)
        check(out, CLIENT_ID, fwd.question, fwd.max_size)
        if scan is None:
            assert out[3] & 0x0F == wire.SERVFAIL
        cached = engine.stats.verdicts["cached"]
        query = again(fwd)
        second = engine.on_query(query, NOW + 1.5, tcp=bool(control & TCP))
        if isinstance(second, bytes):
            check(second, 0x5151, fwd.question, fwd.max_size)
            if engine.stats.verdicts["cached"] > cached and not second[2] & 0x02:
                assert scan is not None
                _aged_only(reply, second, len(fwd.question), scan.ttl_offsets)


def _match(reply: bytes) -> None:
    """upstream.py's key for a reply names the question the engine's reader sees."""
    key = upstream._key(reply)
    try:
        end = wire.question_end(reply)
    except wire.WireError:
        return  # _key also takes names past 255 octets: no query of ours has one
    assert key == (reply[0] << 8 | reply[1], reply[12 : end - 4].lower() + reply[end - 4 : end])


def _aged_only(reply: bytes, hit: bytes, qlen: int, ttl_offsets: list[int]) -> None:
    """A cache hit is the stored reply with only the ID, RD, question case and TTLs changed;
    every TTL is at most what the upstream said (aged, never raised)."""
    assert len(hit) == len(reply), "a cache hit changed the reply's length"
    changed = {0, 1, 2, *range(12, 12 + qlen)}
    for off in ttl_offsets:
        changed.update(range(off, off + 4))
        assert hit[off : off + 4] <= reply[off : off + 4] or reply[off] & 0x80, off
    assert all(a == b for i, (a, b) in enumerate(zip(reply, hit, strict=True)) if i not in changed)
    assert hit[2] & 0xFE == reply[2] & 0xFE, "a cache hit changed flags other than RD"


if __name__ == "__main__":
    fuzz(target)
