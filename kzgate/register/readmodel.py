"""What the API routes, the status and the scrape read from the register.

They never touch the store: they ask this object, which runs each question on
the register's thread (register/thread.py), where every write runs too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kzgate.metrics import (
    INSTRUCTIONS_ACTIVE,
    SEQ_GAPS,
    TARGETS_ACTIVE,
    Collector,
    Reading,
    by_label,
)
from kzgate.model import TARGET_KINDS, InstructionRef
from kzgate.names import IPNetwork
from kzgate.register.store import Register
from kzgate.register.thread import RegisterThread


@dataclass(frozen=True)
class StoredState:
    """What the register holds, as the scrape-time gauges report it."""

    instructions_active: int
    targets_active: Mapping[str, int]  # kind -> count
    seq_gaps: Mapping[str, int]  # issuer -> missing sequence numbers


class RegisterReader:
    """The register's read side, answered on its own thread."""

    def __init__(self, register: Register, thread: RegisterThread) -> None:
        self._register = register
        self._thread = thread
        self._stored = StoredState(0, {}, {})

    async def instructions(
        self, *, status: str | None, limit: int, offset: int, targets_limit: int
    ) -> list[dict[str, Any]]:
        return await self._thread.run(
            self._register.instructions,
            status=status,
            limit=limit,
            offset=offset,
            targets_limit=targets_limit,
        )

    async def covering_name(self, name: str) -> list[tuple[str, InstructionRef]]:
        """The restricted domains that ``name`` (normalized) is or lies under."""
        return await self._thread.run(self._register.state.covering_domain, name)

    async def covering_ip(self, addr: str) -> list[tuple[IPNetwork, InstructionRef]]:
        """The restricted prefixes that hold ``addr`` (normalized)."""
        return await self._thread.run(self._register.state.covering_ip, addr)

    # -- the stored-state gauges -------------------------------------------------

    async def refresh(self, issuers: Iterable[str]) -> None:
        """Re-read the stored-state gauges; the metrics endpoint calls this per scrape.

        Every issuer of ``issuers`` (the configured ones) has a seq-gap series,
        at 0 until it is missing something.
        """
        self._stored = await self._thread.run(self._read, tuple(issuers))

    def _read(self, issuers: tuple[str, ...]) -> StoredState:
        counts = self._register.state.counts()
        return StoredState(
            instructions_active=self._register.active_instruction_count(),
            targets_active={k: counts[k] for k in TARGET_KINDS},
            seq_gaps={**dict.fromkeys(issuers, 0), **self._register.seq_gap_counts()},
        )

    def collectors(self) -> list[Collector]:
        return [
            Reading(INSTRUCTIONS_ACTIVE, lambda: {(): self._stored.instructions_active}),
            Reading(TARGETS_ACTIVE, lambda: by_label(self._stored.targets_active)),
            Reading(SEQ_GAPS, lambda: by_label(self._stored.seq_gaps)),
        ]
