"""The DNS engine alone (no sockets): µs per Engine.on_query at 1,000,000 restricted names.

Workload: one query at a time through the sans-IO engine, for a blocked
subdomain, a cached answer (a CNAME chain re-checked against the policy on
every hit) and a name that must be forwarded; with and without EDNS(0). It
also measures what the Prometheus counters cost on the hot path: the plain
dict increment each query does, as a share of the whole on_query call.

    .venv/bin/python bench/engine.py [--names 1000000] [--calls 200000]
"""

from __future__ import annotations

import argparse
import json
import timeit

import dnslib

from kzgate.dns.engine import Engine
from kzgate.dns.types import BlockSettings, DnsStats, Forward
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex


def query(name: str, edns: bool) -> bytes:
    record = dnslib.DNSRecord(dnslib.DNSHeader(id=7, rd=1), q=dnslib.DNSQuestion(name))
    if edns:
        record.add_ar(dnslib.EDNS0(udp_len=1232))
    return bytes(record.pack())


def best_us(fn: object, calls: int) -> float:
    return min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    index = PolicyIndex()
    ref = InstructionRef("mci", "42", "2026-11-01")
    for i in range(args.names):
        index.set_domain(f"site{i}.example{i % 1000}.kz", ref)
    engine = Engine(index, BlockSettings())
    results: dict[str, float] = {}
    for edns in (False, True):
        blocked = query("www.site123.example123.kz", edns)
        allowed = query("www.allowed-name.example.com", edns)
        forward = engine.on_query(allowed, 0.0)
        assert isinstance(forward, Forward)
        reply = dnslib.DNSRecord.parse(forward.upstream_query).reply()
        reply.add_answer(
            *dnslib.RR.fromZone(
                "www.allowed-name.example.com. 300 IN CNAME cdn.example.net.\n"
                "cdn.example.net. 300 IN A 192.0.2.7"
            )
        )
        engine.on_upstream(forward, bytes(reply.pack()), 0.0)
        miss = query("www.other-name.example.org", edns)
        for label, data in (("blocked", blocked), ("cache_hit", allowed), ("forward", miss)):
            results[f"{label}{'_edns' if edns else ''}_us"] = round(
                best_us(lambda data=data: engine.on_query(data, 1.0), args.calls), 3
            )
    stats = DnsStats()
    verdicts = stats.verdicts

    def count() -> None:
        verdicts["blocked"] += 1

    counter_us = best_us(count, args.calls * 5)
    results["counter_increment_us"] = round(counter_us, 4)
    results["counter_share_of_blocked_percent"] = round(100 * counter_us / results["blocked_us"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
