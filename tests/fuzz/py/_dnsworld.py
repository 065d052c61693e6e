"""A small resolver world shared by the DNS harnesses: a policy, engines, real replies.

Queries and replies are built with dnslib, as a client and an upstream would send them.
"""

from __future__ import annotations

import struct

import dnslib

from kzgate.dns.engine import Engine
from kzgate.dns.types import BlockSettings, Forward
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex

REF = InstructionRef("mci", "04-1/123", "2026-11-20")
# Long enough that the block answer's EDE text is cut to fit small UDP sizes.
LONG_REF = InstructionRef("mci", "N" * 180, "2026-11-21")
BLOCKED = {"bad.kz": REF, "blocked.example": LONG_REF, ("a" * 60 + ".") * 3 + "kz": REF}
NOW = 1_000_000.0
MODES = ("nxdomain", "sinkhole", "refused")

HEADER = struct.Struct("!6H")


def policy() -> PolicyIndex:
    index = PolicyIndex()
    for name, ref in BLOCKED.items():
        index.set_domain(name, ref)
    return index


def query(
    name: str,
    qtype: str = "A",
    *,
    qid: int = 0x1234,
    edns: bool = False,
    do: bool = False,
    udp: int = 1232,
    cd: bool = False,
) -> bytes:
    q = dnslib.DNSRecord(
        dnslib.DNSHeader(id=qid, rd=1, cd=int(cd)),
        q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)),
    )
    if edns:
        q.add_ar(dnslib.EDNS0(udp_len=udp, flags="do" if do else ""))
    return bytes(q.pack())


def reply(data: bytes, *records: str, rcode: int = 0, auth: str = "", tc: bool = False) -> bytes:
    """An upstream's reply to ``data`` holding ``records`` (zone-file text) in its answer."""
    q = dnslib.DNSRecord.parse(data)
    r = q.reply()
    r.header.rcode = rcode
    r.header.tc = int(tc)
    for text in records:
        for rr in dnslib.RR.fromZone(text):
            r.add_answer(rr)
    if auth:
        for rr in dnslib.RR.fromZone(auth):
            r.add_auth(rr)
    return bytes(r.pack())


def engines() -> list[Engine]:
    """One engine per block mode, with a cache primed by forwarded queries and their replies."""
    out = []
    for mode in MODES:
        engine = Engine(policy(), BlockSettings(mode=mode))  # type: ignore[arg-type]
        prime(engine)
        out.append(engine)
    return out


def prime(engine: Engine) -> None:
    """Cache answers for good.kz (A), an NXDOMAIN, and a CNAME whose target is restricted
    after it was cached (the cache-hit path re-checks targets against the policy)."""
    for edns in (False, True):
        for do in (False, True) if edns else (False,):
            for name, qtype, records, rcode, auth in (
                ("good.kz", "A", ["good.kz. 300 IN A 192.0.2.7"], 0, ""),
                ("alias.kz", "A", ["alias.kz. 300 IN CNAME www.later.kz."], 0, ""),
                ("gone.kz", "AAAA", [], 3, "kz. 900 IN SOA ns.kz. h.kz. 1 2 3 4 300"),
            ):
                q = query(name, qtype, edns=edns, do=do)
                fwd = engine.on_query(q, NOW)
                assert isinstance(fwd, Forward), fwd
                engine.on_upstream(fwd, reply(q, *records, rcode=rcode, auth=auth), NOW)
    engine.index.set_domain("later.kz", REF)
