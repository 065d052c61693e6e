"""Hostile inputs for bench/adversary.py: seeded, pure generators of bytes.

Every generator takes a ``random.Random`` so a run can be repeated exactly. What
they make is what a subscriber, a spoofing upstream or a stranger on the API
port can send: valid messages mutated at random, random bytes of every length
the transport allows, and hand-made shapes that broke DNS servers before (names
at and past 255 octets, compression loops and forward pointers, section counts
that lie, odd OPT records, every opcode).
"""

from __future__ import annotations

import base64
import random
import struct

UDP_MAX = 65_507  # the largest UDP payload over IPv4
TCP_MAX = 65_535  # a DNS message over TCP (two-octet length)

_HEADER = struct.Struct("!6H")
_TYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 39, 41, 43, 46, 48, 65, 251, 252, 255, 0, 65535]


def wire_name(name: str) -> bytes:
    out = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    return out + b"\x00"


def query(
    name: str,
    qtype: int = 1,
    *,
    qid: int = 0x1234,
    flags: int = 0x0100,
    edns: bool = False,
    do: bool = False,
    options: bytes = b"",
) -> bytes:
    """A well-formed query (the base that mutations start from)."""
    head = _HEADER.pack(qid, flags, 1, 0, 0, 1 if edns else 0)
    body = wire_name(name) + struct.pack("!HH", qtype, 1)
    if edns:
        body += b"\x00" + struct.pack("!HHBBHH", 41, 1232, 0, 0, 0x8000 if do else 0, len(options))
        body += options
    return head + body


def random_length(rng: random.Random, top: int) -> int:
    """Log-uniform over 0..top: short inputs often, the longest ones too."""
    if rng.random() < 0.02:
        return top  # the transport's limit itself
    return min(top, int(2 ** rng.uniform(0, top.bit_length())))


def random_bytes(rng: random.Random, top: int) -> bytes:
    return rng.randbytes(random_length(rng, top))


def mutate(rng: random.Random, data: bytes, top: int) -> bytes:
    """1-8 random edits: flips, overwrites, insertions, deletions, truncation, growth."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:
            out[min(at, len(out) - 1)] = rng.choice(
                (0x00, 0x3F, 0x40, 0xC0, 0xFF, rng.randrange(256))
            )
        elif kind == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3 and out:
            del out[at : at + rng.randint(1, 16)]
        elif kind == 4:
            del out[at:]
        elif kind == 5:
            out += rng.randbytes(random_length(rng, max(0, top - len(out))))
        elif kind == 6 and len(out) >= 12:
            # a section count that lies
            slot = 4 + 2 * rng.randrange(4)
            out[slot : slot + 2] = rng.choice((0, 1, 2, 255, 0xFFFF)).to_bytes(2, "big")
    return bytes(out[:top])


def _labels(lengths: list[int], fill: bytes = b"a") -> bytes:
    return b"".join(bytes([n]) + fill * n for n in lengths)


def handmade(rng: random.Random) -> bytes:
    """A shape from the list of things that broke DNS parsers before."""
    qid = rng.randrange(65536)
    head = _HEADER.pack(qid, 0x0100, 1, 0, 0, 0)
    tail = b"\x00\x01\x00\x01"
    choice = rng.randrange(16)
    if choice == 0:  # names at, just past and far past the 255-octet limit
        lengths = rng.choice(
            [[63, 63, 63, 61], [63, 63, 63, 62], [63, 63, 63, 61, 63], [63] * 8, [1] * 128]
        )
        return head + _labels(lengths) + b"\x00" + tail
    if choice == 1:  # a label length with the reserved 01/10 bits
        return head + bytes([rng.randrange(64, 192)]) + b"a" * 80 + b"\x00" + tail
    if choice == 2:  # a compression pointer to itself, in the question
        return head + b"\xc0\x0c" + tail
    if choice == 3:  # a forward pointer and a pointer past the end
        return head + rng.choice((b"\xc0\x20", b"\xff\xff", b"\xc0\x0e")) + tail + b"\x00" * 16
    if choice == 4:  # QDCOUNT lies
        count = rng.choice((0, 2, 255, 0xFFFF))
        return _HEADER.pack(qid, 0x0100, count, 0, 0, 0) + wire_name("example.kz") + tail
    if choice == 5:  # ARCOUNT of 65535 with one OPT, or two OPTs
        opt = b"\x00" + struct.pack("!HHBBHH", 41, 4096, 0, 0, 0, 0)
        n = rng.choice((2, 0xFFFF))
        return _HEADER.pack(qid, 0x0100, 1, 0, 0, n) + wire_name("example.kz") + tail + opt * 2
    if choice == 6:  # OPT with a non-root owner, an EDNS version 1, a huge RDLENGTH
        owner = rng.choice((b"\x01a\x00", b"\x00"))
        version = rng.choice((0, 1, 255))
        rdlen = rng.choice((0, 4, 0xFFFF))
        opt = owner + struct.pack("!HHBBHH", 41, 4096, 0, version, 0, rdlen) + b"\x00" * 4
        return _HEADER.pack(qid, 0x0100, 1, 0, 0, 1) + wire_name("example.kz") + tail + opt
    if choice == 7:  # an EDNS option whose length runs past the end
        options = struct.pack("!HH", rng.choice((10, 15, 8)), 0xFFFF) + b"x" * 8
        return query("example.kz", qid=qid, edns=True, options=options)
    if choice == 8:  # every opcode, QR set, Z bits, TC set
        flags = (rng.randrange(16) << 11) | rng.choice((0x8000, 0x0040, 0x0200, 0x0100))
        return _HEADER.pack(qid, flags, 1, 0, 0, 0) + wire_name("example.kz") + tail
    if choice == 9:  # AXFR/IXFR/ANY/odd classes over UDP
        qtype = rng.choice((251, 252, 255, 0, 65535))
        qclass = rng.choice((1, 3, 254, 255, 0))
        return head + wire_name("example.kz") + struct.pack("!HH", qtype, qclass)
    if choice == 10:  # header only, or shorter
        return head[: rng.randrange(13)]
    if choice == 11:  # an answer section in a query, with pointers into it
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c"
        return _HEADER.pack(qid, 0x0100, 1, 1, 0, 0) + wire_name("example.kz") + tail + rr
    if choice == 12:  # many one-octet labels, upper case, bytes outside LDH
        name = bytes(x for _ in range(60) for x in (1, rng.randrange(256)))
        return head + name + b"\x00" + tail
    if choice == 13:  # a restricted name's parent walk: deep subdomains of a blocked name
        depth = rng.randint(1, 60)
        return head + _labels([1] * depth, b"x") + wire_name("blocked.adversary.kz") + tail
    if choice == 14:  # the same query repeated to the transport's limit
        one = query("example.kz", qid=qid)
        return (one * (UDP_MAX // len(one) + 1))[: rng.choice((512, 4096, 4097, UDP_MAX))]
    return query(  # a cookie and padding option, both legal, of odd sizes
        "example.kz",
        qid=qid,
        edns=True,
        do=True,
        options=struct.pack("!HH", 10, 8)
        + rng.randbytes(8)
        + struct.pack("!HH", 12, 300)
        + bytes(300),
    )


NAMES = [
    "blocked.adversary.kz",
    "www.blocked.adversary.kz",
    "ok.adversary.kz",
    "Mixed.Case.Adversary.KZ",
    "xn--80ak6aa92e.kz",
    "a.b.c.d.e.f.g.example.com",
    "example.kz",
]


def dns_query(rng: random.Random, top: int = UDP_MAX) -> tuple[str, bytes]:
    """(kind, bytes): one hostile query of the mix the benchmark sends."""
    roll = rng.random()
    if roll < 0.55:
        base = query(
            rng.choice(NAMES),
            rng.choice(_TYPES),
            qid=rng.randrange(65536),
            edns=rng.random() < 0.5,
            do=rng.random() < 0.3,
        )
        return "mutated", mutate(rng, base, top)
    if roll < 0.80:
        return "handmade", handmade(rng)[:top]
    if roll < 0.95:
        return "random", random_bytes(rng, top)
    return "valid", query(rng.choice(NAMES), rng.choice(_TYPES), qid=rng.randrange(65536))


def upstream_reply(rng: random.Random, answer: bytes) -> bytes | None:
    """What a spoofing or broken upstream sends instead of ``answer`` (None: nothing)."""
    roll = rng.random()
    if roll < 0.35:
        return answer
    if roll < 0.70:
        return mutate(rng, answer, UDP_MAX)
    if roll < 0.80:
        return random_bytes(rng, 4096)
    if roll < 0.90:
        return bytes([answer[0] ^ 0xFF]) + answer[1:] if answer else answer  # a wrong ID
    return None


def jws_junk(rng: random.Random, valid: bytes) -> bytes:
    """A task body that is not a valid task: a mutated JWS, base64 garbage, random bytes."""
    roll = rng.random()
    if roll < 0.5:
        return mutate(rng, valid, len(valid) + 4096)
    if roll < 0.7:
        parts = [base64.urlsafe_b64encode(rng.randbytes(rng.randint(0, 300))).rstrip(b"=")]
        return b".".join(parts * rng.choice((1, 2, 3, 4, 5)))
    if roll < 0.85:
        head, payload, sig = [*valid.split(b"."), b"", b""][:3]
        return b".".join((head, payload + b"A" * rng.randint(1, 3), sig))
    return random_bytes(rng, 65_536)
