"""The log's hash chain (task-protocol.md §6), against the definition written out."""

from __future__ import annotations

import hashlib

from kzgate.feed.chain import ZERO, chain_of, first_difference, payload_hash, step

PAYLOADS = [b'{"seq":1}', b'{"seq":2}', b'{"seq":3}']


def test_the_chain_is_the_definition() -> None:
    c = bytes(32)
    for payload in PAYLOADS:
        c = hashlib.sha256(c + hashlib.sha256(payload).digest()).digest()
    assert chain_of(payload_hash(p) for p in PAYLOADS) == c
    assert step(ZERO, payload_hash(PAYLOADS[0])) == chain_of([payload_hash(PAYLOADS[0])])


def test_an_empty_log_is_zero_and_order_matters() -> None:
    assert chain_of([]) == ZERO == bytes(32)
    hashes = [payload_hash(p) for p in PAYLOADS]
    assert chain_of(hashes) != chain_of(reversed(hashes))


def test_first_difference_names_the_first_differing_seq() -> None:
    ours = [payload_hash(p) for p in PAYLOADS]
    assert first_difference(ours, ours) is None
    assert first_difference(ours, ours[:2]) is None  # what both hold is equal
    theirs = [*ours[:1], payload_hash(b"other"), payload_hash(b"other too")]
    assert first_difference(ours, theirs) == 2
