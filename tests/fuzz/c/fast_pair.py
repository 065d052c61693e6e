"""The C fast path against the engine for one datagram: the oracle of the dns_fast_answer
fuzzer (which runs it in an embedded interpreter, with its own instrumented build of
kzgate's C files as kzgate._native) and of tests/unit/test_native_corpus.py.

For each block mode, two engines built alike: restricted names, and a cache filled
through the engine's own on_query/on_upstream (plain and EDNS, DO or not; a CNAME into
a restricted name, an answer too big for 512 octets, a negative answer with its SOA).
One answers as the server does (C first, the engine for what C leaves), the other
alone: the answers must be equal byte for byte, and the counters too.
"""

from __future__ import annotations

import zlib

import dnslib

from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST
from kzgate.dns.types import BlockMode, BlockSettings, Forward
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex

RESTRICTED = {
    "bad.kz": InstructionRef("mci", "42", "2026-11-01"),
    "other-bad.kz": InstructionRef("mci", "43", "2026-11-02"),
    "xn--80ak6aa92e.kz": InstructionRef("sts", "7/1", "2026-12-01"),
}
UPSTREAM = {  # name -> (rcode, answer RRs, authority RRs)
    "ok.kz": (0, "ok.kz. 300 IN A 203.0.113.5", ""),
    "Mixed.KZ": (0, "mixed.kz. 30 IN A 203.0.113.6\nmixed.kz. 7200 IN A 203.0.113.7", ""),
    # restricted only once cached (LATE): each hit re-checks the target, and the engine blocks
    "alias.kz": (0, "alias.kz. 300 IN CNAME www.late.kz.\nwww.late.kz. 300 IN A 203.0.113.8", ""),
    "big.kz": (0, "\n".join(f"big.kz. 300 IN TXT {'x' * 200}{i}" for i in range(3)), ""),
    "neg.kz": (3, "", "kz. 600 IN SOA ns.kz. host.kz. 1 3600 600 86400 120"),
}
LATE = ("late.kz", InstructionRef("mci", "44", "2026-11-03"))
MODES: tuple[BlockMode, ...] = ("nxdomain", "sinkhole", "refused")
# Chosen per datagram from its CRC: inside every TTL, and past the shorter ones.
NOWS = (0.5, 1.0, 29.9, 31.0, 119.0, 299.5, 301.0)


def question(name: str, qtype: str, *, edns: bool, do: bool) -> bytes:
    q = dnslib.DNSRecord(
        dnslib.DNSHeader(id=7, rd=1), q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype))
    )
    if edns:
        q.add_ar(dnslib.EDNS0(udp_len=1232, flags="do" if do else ""))
    return bytes(q.pack())


def engine(mode: BlockMode) -> Engine:
    index = PolicyIndex()
    for name, ref in RESTRICTED.items():
        index.set_domain(name, ref)
    eng = Engine(index, BlockSettings(mode=mode))
    for edns, do in ((False, False), (True, False), (True, True)):
        for name in RESTRICTED:  # memoizes the EDE options the C path reads
            eng.on_query(question(name, "A", edns=edns, do=do), 0.0)
        for name, (rcode, answers, authority) in UPSTREAM.items():
            for qtype in ("A", "AAAA", "TXT"):
                fwd = eng.on_query(question(name, qtype, edns=edns, do=do), 0.0)
                assert isinstance(fwd, Forward)
                reply = dnslib.DNSRecord.parse(fwd.upstream_query).reply()
                reply.header.rcode = rcode
                for rr in dnslib.RR.fromZone(answers) if answers else ():
                    reply.add_answer(rr)
                for rr in dnslib.RR.fromZone(authority) if authority else ():
                    reply.add_auth(rr)
                eng.on_upstream(fwd, bytes(reply.pack()), 0.0)
    index.set_domain(*LATE)
    return eng


class Checker:
    def __init__(self) -> None:
        assert FAST is not None, "kzgate._native is not built"
        self.pairs = {mode: (engine(mode), engine(mode)) for mode in MODES}
        # What the caches hold now: put back when an expired entry was dropped.
        self.filled = {
            id(eng): dict(eng.cache.entries) for pair in self.pairs.values() for eng in pair
        }
        self.answered = 0  # by the C path

    def check(self, data: bytes) -> None:
        assert FAST is not None
        now = NOWS[zlib.crc32(data) % len(NOWS)]
        for mode, (c_engine, py_engine) in self.pairs.items():
            out = FAST.answer(data, now, c_engine.fast_view)
            expected = py_engine.on_query(data, now)
            if out is not None:
                assert out == expected, f"{mode}: C answered {out!r}, the engine {expected!r}"
                self.answered += 1
            else:
                assert c_engine.on_query(data, now) == expected, mode
            assert c_engine.stats == py_engine.stats, f"{mode}: counters differ"
            for eng in (c_engine, py_engine):
                filled = self.filled[id(eng)]
                if len(eng.cache.entries) != len(filled):
                    eng.cache.entries.clear()
                    eng.cache.entries.update(filled)
