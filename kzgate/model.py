"""Plain immutable values that flow between the pure core and the edges."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kzgate.names import IPNetwork

TaskType = Literal["restrict", "resume"]
TargetKind = Literal["domain", "ip", "cidr", "url", "app"]
TARGET_KINDS: tuple[TargetKind, ...] = ("domain", "ip", "cidr", "url", "app")
REASONS = (
    "false_registrant_data",
    "malware",
    "court_decision",
    "security_incident",
    "no_certificate",
    "hosted_abroad",
    "illegal_content",
    "other",
)


@dataclass(frozen=True, slots=True, order=True)
class InstructionRef:
    """An instruction's identity: its issuer, outgoing number and date (YYYY-MM-DD)."""

    iss: str
    number: str
    date: str

    def label(self) -> str:
        """How the instruction is named to people: in EDE text, nft comments, logs."""
        return f"{self.iss} No. {self.number} of {self.date}"


@dataclass(frozen=True, slots=True)
class Target:
    """One normalized target of a restriction."""

    kind: TargetKind
    value: str


@dataclass(frozen=True, slots=True)
class Task:
    """A verified, schema-checked, normalized task, with the exact bytes it came from."""

    v: int
    id: str
    iss: str
    aud: tuple[str, ...]
    seq: int
    issued_at: dt.datetime
    type: TaskType
    authority: str
    instruction: InstructionRef
    payload: bytes  # the exact JWS payload bytes, as received and verified
    sha256: str  # hex SHA-256 of payload
    kid: str
    # restrict
    ground: str | None = None
    reason: str | None = None
    targets: tuple[Target, ...] = ()
    # resume
    applicant: str | None = None
    removed_links: tuple[str, ...] = ()
    removed_as_of: dt.date | None = None


@dataclass(frozen=True, slots=True)
class Diff:
    """A change of the effective state, exactly as each enforcer must apply it.

    ``*_added`` map each newly enforced target to one instruction that covers it
    (for block-answer text and element comments). ``domains_relabelled`` are names
    that stay blocked but whose naming instruction changed. Prefixes are the
    maximal ones: never two where one contains the other.
    """

    domains_added: Mapping[str, InstructionRef] = field(default_factory=dict)
    domains_removed: frozenset[str] = frozenset()
    domains_relabelled: Mapping[str, InstructionRef] = field(default_factory=dict)
    prefixes_added: Mapping[IPNetwork, InstructionRef] = field(default_factory=dict)
    prefixes_removed: frozenset[IPNetwork] = frozenset()

    def is_empty(self) -> bool:
        return not (
            self.domains_added
            or self.domains_removed
            or self.domains_relabelled
            or self.prefixes_added
            or self.prefixes_removed
        )

    def size(self) -> int:
        return (
            len(self.domains_added)
            + len(self.domains_removed)
            + len(self.domains_relabelled)
            + len(self.prefixes_added)
            + len(self.prefixes_removed)
        )


@dataclass(frozen=True, slots=True)
class State:
    """The whole effective state: every enforced domain and maximal prefix."""

    domains: Mapping[str, InstructionRef]
    prefixes: Mapping[IPNetwork, InstructionRef]


def diff_between(current: State, wanted: State) -> Diff:
    """What turns ``current`` into ``wanted`` (used by enforcers to reconcile)."""
    if not current.domains and not current.prefixes:
        # An empty enforcer (every start-up): everything is added, nothing to scan.
        # Shared, not copied: neither a State nor a Diff is ever changed.
        return Diff(domains_added=wanted.domains, prefixes_added=wanted.prefixes)
    return Diff(
        domains_added={d: r for d, r in wanted.domains.items() if d not in current.domains},
        domains_removed=frozenset(d for d in current.domains if d not in wanted.domains),
        domains_relabelled={
            d: r
            for d, r in wanted.domains.items()
            if d in current.domains and current.domains[d] != r
        },
        prefixes_added={p: r for p, r in wanted.prefixes.items() if p not in current.prefixes},
        prefixes_removed=frozenset(p for p in current.prefixes if p not in wanted.prefixes),
    )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A register target that a probe round may sample, with how its instruction stands
    (read by register/reads.py, used by probes/).

    ``resumed_at`` is when the resume was applied (its task's ``applied_at``);
    None while the instruction is active.
    """

    target: Target  # kind "domain", "ip" or "cidr" (url and app are not probed)
    instruction: InstructionRef
    resumed_at: dt.datetime | None = None
