"""The hash chain that commits to an issuer's whole log (task-protocol.md §6), pure.

c(0) is 32 zero octets; c(n) = SHA-256(c(n-1) || SHA-256(payload(n))), where
payload(n) is the exact payload bytes of the task with seq n. Two parties that
hold the same tasks 1..n compute the same c(n), so the issuer's signed head
proves what an operator holds without listing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

ZERO = bytes(32)


def payload_hash(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def step(previous: bytes, payload_sha256: bytes) -> bytes:
    """c(n) from c(n-1) and SHA-256(payload(n))."""
    return hashlib.sha256(previous + payload_sha256).digest()


def extend(chain: bytes, payload_hashes: Iterable[bytes]) -> bytes:
    """c(n + k) from c(n) and the SHA-256 of payloads n+1..n+k, in seq order."""
    for digest in payload_hashes:
        chain = step(chain, digest)
    return chain


def chain_of(payload_hashes: Iterable[bytes]) -> bytes:
    """c(n) over the SHA-256 of payloads 1..n, in seq order."""
    return extend(ZERO, payload_hashes)


def first_difference(ours: Sequence[bytes], theirs: Sequence[bytes]) -> int | None:
    """The first seq (1-based) whose payload hash differs, or None when every seq both
    hold is equal (one may still hold more than the other)."""
    for seq, (a, b) in enumerate(zip(ours, theirs, strict=False), start=1):
        if a != b:
            return seq
    return None
