"""Per-client token buckets; time is passed in, so the logic is tested without clocks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows ``burst`` requests at once and ``per_second`` sustained, per client key."""

    def __init__(self, per_second: float, burst: int, max_clients: int = 10_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, client: str, now: float) -> bool:
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second
        )
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: drop those, so
        # memory stays bounded however many clients come and go.
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.per_second >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_clients:
            oldest = min(self._buckets, key=lambda k: self._buckets[k].updated)
            del self._buckets[oldest]
