"""What a probe checks, where, what it expected and what it saw: plain values.

A *target* is one thing to check (a name for DNS, an address for the kernel);
a *place* is where it is checked (one of kzgate's own DNS listeners, one of
the operator's resolvers from ``probes.resolvers``, the nftables sets, the
routing table, or a connect() from the host); a *check* is one target at one
place, with what was seen and whether that is what the register says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from kzgate.model import InstructionRef

# What the effective state says about a target: restricted by some active
# instruction ("blocked"), or by none ("open": a resumed one, checked lifted).
Expect = Literal["blocked", "open"]

# What one check found. "unreachable": the place did not give an answer that
# shows either way (a timeout, SERVFAIL, a refused query, a malformed reply);
# it is never counted as "fail". Values of the metric label ``outcome``.
Outcome = Literal["pass", "fail", "unreachable"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "unreachable")

# Where a check runs. Values of the metric label ``kind``.
PlaceKind = Literal["kzgate", "resolver", "nft", "routes", "connect"]
PLACE_KINDS: tuple[PlaceKind, ...] = ("kzgate", "resolver", "nft", "routes", "connect")


@dataclass(frozen=True, slots=True, order=True)
class Place:
    """One place a probe asks. ``name`` is bounded by the config (a listener's or a
    resolver's host:port, or the kind itself for kernel places), so it may be a
    metric label value."""

    kind: PlaceKind
    name: str


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One thing to check: a name (DNS places) or an address (kernel places).

    ``source`` is the register target it stands for, as ``kind:value``
    (``domain:example.kz``; a subdomain probe of it, ``kzgate-probe-3f.example.kz``,
    keeps the same source). ``expect`` comes from the effective state, not from
    the instruction's status: a resumed name that another active instruction
    still covers is expected blocked.
    """

    kind: Literal["name", "address"]
    value: str  # a normalized name in A-label form, or an IP address as text
    source: str
    instruction: InstructionRef
    expect: Expect


@dataclass(frozen=True, slots=True)
class Check:
    """One target at one place: what was seen, for people, and the outcome."""

    target: ProbeTarget
    place: Place
    observed: str  # "NXDOMAIN", "A 192.0.2.1", "timeout", "element 10.0.0.0/24", "no element", ...
    outcome: Outcome
    at: dt.datetime
