"""The answer cache: upstream replies stored as bytes, their TTLs aged on every hit.

Bounded in entries; the oldest insertion goes first (a dict keeps insertion
order, and with TTL-bound entries this is close to LRU without a reorder on
every hit). Time is passed in, like everywhere in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from kzgate.dns.wire import U32

CacheKey = tuple[bytes, int, int, bool, bool]  # lower-case qname, qtype, qclass, DO, EDNS


@dataclass(slots=True)
class Entry:
    reply: bytes  # the upstream's bytes, ID and question as they came
    ttl_offsets: tuple[int, ...]  # where each RR's TTL sits (OPT excluded)
    ttls: tuple[int, ...]  # their values at insertion, capped at max_ttl
    inserted: float
    expires: float
    targets: tuple[bytes, ...]  # CNAME/DNAME targets, re-checked against the policy on each hit

    def aged(self, now: float) -> bytearray:
        """The reply with every TTL lowered by the whole seconds spent in the cache."""
        buf = bytearray(self.reply)
        elapsed = int(now - self.inserted)
        pack = U32.pack_into
        for off, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
            pack(buf, off, ttl - elapsed if ttl > elapsed else 0)
        return buf


class Cache:
    def __init__(self, max_entries: int = 100_000, max_ttl: int = 86400) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._entries: dict[CacheKey, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> dict[CacheKey, Entry]:
        """The live mapping, read in place by the C fast path; never replaced."""
        return self._entries

    def get(self, key: CacheKey, now: float) -> Entry | None:
        """The live entry for ``key``; an expired one is dropped and is a miss."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            return None
        return entry

    def put(
        self,
        key: CacheKey,
        reply: bytes,
        ttl: int,
        ttl_offsets: list[int],
        ttls: list[int],
        targets: list[bytes],
        now: float,
    ) -> None:
        """Store ``reply`` for ``ttl`` seconds (capped at max_ttl); TTL 0 is not stored."""
        ttl = min(ttl, self.max_ttl)
        if ttl <= 0 or self.max_entries <= 0:
            return
        entries = self._entries
        entries.pop(key, None)  # re-insert at the young end
        while len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        cap = self.max_ttl
        entries[key] = Entry(
            reply,
            tuple(ttl_offsets),
            tuple(t if t < cap else cap for t in ttls),
            now,
            now + ttl,
            tuple(targets),
        )

    def clear(self) -> None:
        self._entries.clear()
