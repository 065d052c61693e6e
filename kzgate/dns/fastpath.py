"""The compiled UDP hot path (kzgate/dns/fast_*.c, in kzgate._native), when it is built.

The C code answers blocked names and cache hits straight from the engine's own
structures, which the engine hands it as a ``FastView`` (``Engine.fast_view``),
and hands every other query back, so the engine stays the one reference for
what an answer is. Without a compiler the install still succeeds, ``FAST`` is
None and the engine answers everything.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, cast

from kzgate.dns.cache import CacheKey, Entry
from kzgate.dns.types import DnsStats
from kzgate.model import InstructionRef
from kzgate.nametable import NameTable
from kzgate.native import NATIVE, NativeModule

Address = tuple[Any, ...]
# The block answers' pieces (engine.py BlockAnswers): per qtype (None: every other
# type) rcode, answer RRs, ANCOUNT, SOA in authority?; and id(ref) -> (ref, its OPT
# RR with the EDE, the same with DO).
BlockPlans = dict[int | None, tuple[int, bytes, int, bool]]
OptMemo = dict[int, tuple[InstructionRef, bytes, bytes]]


class FastView(Protocol):
    """kzgate._native.FastView (kzgate/dns/fast_view.c): the engine's live structures by name.

    Built with keywords only; the C code checks every field when it is built (its type,
    the slots of ``entry_type``, the counters' keys, each plan's shape) and raises a
    TypeError naming the field that does not fit. The fields are read-only after.
    """

    @property
    def names(self) -> NameTable: ...  # the policy's names -> numbers in refs

    @property
    def refs(self) -> list[InstructionRef]: ...

    @property
    def entries(self) -> dict[CacheKey, Entry]: ...  # the cache, read in place

    @property
    def entry_type(self) -> type[Entry]: ...  # C reads entries of exactly this class

    @property
    def plans(self) -> BlockPlans: ...

    @property
    def soa_tail(self) -> bytes: ...  # the block answers' SOA RR after its owner

    @property
    def opts(self) -> OptMemo: ...

    @property
    def verdicts(self) -> dict[str, int]: ...

    @property
    def stats(self) -> DnsStats: ...


class FastViewType(Protocol):
    def __call__(
        self,
        *,
        names: NameTable,
        refs: list[InstructionRef],
        entries: dict[CacheKey, Entry],
        entry_type: type[Entry],
        plans: BlockPlans,
        soa_tail: bytes,
        opts: OptMemo,
        verdicts: dict[str, int],
        stats: DnsStats,
    ) -> FastView: ...


_View: TypeAlias = FastView  # FastModule's own FastView is the class


class FastModule(NativeModule, Protocol):
    FastView: FastViewType

    def serve(self, fd: int, now: float, view: _View) -> list[tuple[bytes, Address]] | None:
        """Answer what waits on the non-blocking UDP socket ``fd``; the rest, with senders."""

    def answer(self, data: bytes, now: float, view: _View) -> bytes | None:
        """What serve() would send for ``data``; None: the engine's to answer."""


FAST = cast(FastModule | None, NATIVE)
