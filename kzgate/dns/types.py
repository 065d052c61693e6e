"""Values shared by the DNS engine (pure) and its asyncio edges."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

BlockMode = Literal["nxdomain", "sinkhole", "refused"]

# Verdicts counted in kzgate_dns_queries_total{verdict}; a fixed, bounded set.
VERDICTS = (
    "blocked",  # the name (or a parent) is restricted
    "blocked_cname",  # an upstream answer's CNAME chain entered a restricted name
    "cached",  # answered from the cache
    "forwarded",  # answered by an upstream
    "servfail",  # every upstream failed
    "formerr",  # malformed query answered FORMERR
    "notimp",  # opcode other than QUERY
    "dropped",  # not answerable at all (short header, QR=1, ...)
)


DEFAULT_SINKHOLE_V4 = ipaddress.IPv4Address("192.0.2.1")
DEFAULT_SINKHOLE_V6 = ipaddress.IPv6Address("2001:db8::1")


@dataclass(frozen=True, slots=True)
class BlockSettings:
    mode: BlockMode = "nxdomain"
    ttl: int = 60
    sinkhole_ipv4: ipaddress.IPv4Address = DEFAULT_SINKHOLE_V4
    sinkhole_ipv6: ipaddress.IPv6Address = DEFAULT_SINKHOLE_V6


@dataclass(slots=True)
class DnsStats:
    """Plain counters on the hot path; exported as Prometheus metrics by the edge."""

    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    cache_hits: int = 0
    # what the listener's limits refused, by reason (kzgate_listener_refusals_total{listener="dns"})
    refusals: dict[str, int] = field(default_factory=dict)

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class Forward:
    """A query the engine could not answer itself: ask upstream, then call engine.on_upstream.

    ``upstream_query`` is the message to send (its ID is set by the upstream
    client); the other fields are what the engine needs to finish the answer.
    """

    client_id: int
    question: bytes  # the client's question section, exact bytes (0x20 case kept)
    name: bytes  # lower-case wire-form QNAME
    qtype: int
    qclass: int
    do_bit: bool
    edns: bool  # the client sent OPT
    max_size: int  # largest answer the client accepts on this transport
    upstream_query: bytes
    # The client's header flags: opcode, RD and CD are copied into whatever answer it gets.
    flags: int = 0x0100
