"""Do two DNS servers give the same answers? A benchmark checks this before it times them.

Timing two resolvers says nothing if they answer differently (one of them
forwarding what it should block, say). ``differences`` asks both servers the
same queries over UDP, without EDNS as the benchmark's traffic is, and compares
per query:

* the RCODE;
* the answer section as a set of ``owner class type rdata`` records.

Normalized, because it legitimately differs between two correct resolvers:

* TTLs (a cached record's TTL counts down from when each server fetched it);
* the order of the answer records, and the case of owner names;
* the authority section: kzgate's block answer carries an SOA for the
  restricted name (so resolvers behind it cache the NXDOMAIN for
  ``dns.block_ttl``), an Unbound ``always_nxdomain`` local zone carries none;
* the additional section, and header flags other than the RCODE (AA, RA).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dnslib import CLASS, QTYPE, RCODE, DNSRecord


@dataclass(frozen=True)
class Answer:
    rcode: str
    records: frozenset[str]

    def __str__(self) -> str:
        return f"{self.rcode} [{'; '.join(sorted(self.records))}]"


def normalized(data: bytes) -> Answer:
    """The parts of an answer compared, with what legitimately differs left out."""
    reply = DNSRecord.parse(data)
    return Answer(
        str(RCODE[reply.header.rcode]),
        frozenset(
            f"{str(rr.rname).lower()} {CLASS[rr.rclass]} {QTYPE[rr.rtype]} {rr.rdata}"
            for rr in reply.rr
        ),
    )


def ask(port: int, name: str, qtype: str, timeout: float = 2.0) -> Answer | None:
    """One UDP query to 127.0.0.1:port; None when no answer came within ``timeout``."""
    query = DNSRecord.question(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.pack(), ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    if data[:2] != query.pack()[:2]:
        raise ValueError(f"127.0.0.1:{port} answered {name} {qtype} with another query's ID")
    return normalized(data)


def samples_by_kind(
    lines: Iterable[str], kind_of: Callable[[str], str], per_kind: int
) -> dict[str, list[tuple[str, str]]]:
    """Up to ``per_kind`` distinct queries of each kind ("<kind> <qtype>") in a dnsperf file."""
    out: dict[str, list[tuple[str, str]]] = {}
    for line in lines:
        name, qtype = line.split()
        picked = out.setdefault(f"{kind_of(name)} {qtype}", [])
        if len(picked) < per_kind and (name, qtype) not in picked:
            picked.append((name, qtype))
    return out


def differences(
    samples: dict[str, list[tuple[str, str]]], ports: dict[str, int]
) -> tuple[int, list[str]]:
    """(queries asked of each server, one line per query on which the servers disagree)."""
    (first, first_port), (second, second_port) = ports.items()
    asked, diffs = 0, []
    for kind, queries in samples.items():
        for name, qtype in queries:
            asked += 1
            a, b = ask(first_port, name, qtype), ask(second_port, name, qtype)
            if a is None or b is None or a != b:
                diffs.append(f"{kind}: {name} {qtype}: {first} {a}, {second} {b}")
    return asked, diffs
