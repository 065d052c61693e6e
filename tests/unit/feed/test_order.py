"""A page's order checked before the sink sees it (feed/order.py): pure, on untrusted bytes."""

from __future__ import annotations

import os
import random

import pytest

import kzgate.feed.order as order
from kzgate.feed.chain import ZERO, chain_of, extend, payload_hash
from kzgate.feed.order import check_page, feed_hash, in_order, peek_seq
from tests.support.feedfakes import payload_of, signed_task

LOG = [signed_task(seq) for seq in range(1, 8)]


def test_peek_seq_reads_a_tasks_seq() -> None:
    assert peek_seq(LOG[4]) == 5
    assert peek_seq(LOG[4] + b"\n") == 5


@pytest.mark.parametrize(
    ("seqs", "first", "want"),
    [
        ([1, 2, 3], 1, (3, None)),
        ([], 1, (0, None)),
        ([5, 6], 5, (2, None)),
        ([5, 7], 5, (1, "skip")),
        ([5, 7, 6], 5, (1, "reorder")),
        ([5, 5], 5, (1, "repeat")),
        ([4], 5, (0, "repeat")),
        ([None], 5, (0, "no readable seq")),
    ],
)
def test_in_order(seqs: list[int | None], first: int, want: tuple[int, str | None]) -> None:
    count, fault = in_order(seqs, first)
    assert count == want[0]
    assert (fault is None) if want[1] is None else (fault is not None and want[1] in fault)


def test_check_page_is_in_order_over_the_claimed_seqs() -> None:
    rng = random.Random(12)
    for _ in range(300):
        page = [rng.choice([*LOG, b"", b"x.y.z"]) for _ in range(rng.randrange(0, 9))]
        first = rng.randrange(1, 4)
        assert check_page(page, first) == in_order([peek_seq(b) for b in page], first)


def test_check_page_stops_reading_at_the_first_deviation(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,000,000 items that are no task: one peek, not a million (found at the daemon
    # level: peeking them all stalled the event loop for seconds).
    peeked: list[bytes] = []

    def counting(body: bytes) -> int | None:
        peeked.append(body)
        return peek_seq(body)

    monkeypatch.setattr(order, "peek_seq", counting)
    count, fault = check_page([LOG[0]] + [b""] * 1_000_000, 1)
    assert count == 1 and fault is not None and "no readable seq" in fault
    assert len(peeked) == 2
    peeked.clear()
    count, fault = check_page([LOG[1]] + [b""] * 1_000_000, 1)  # 2 where 1 was due
    assert (count, fault) == (0, "seq 2 served where 1 was due (skip)")
    assert len(peeked) == 1 + order.LOOKAHEAD


def test_peek_seq_never_raises_on_any_bytes_of_any_length() -> None:
    rng = random.Random(12)
    body = LOG[0]
    samples = [os.urandom(n) for n in range(0, 300)]
    samples += [body[:n] for n in range(len(body) + 1)]  # every truncation of a real task
    for _ in range(2000):  # real tasks with bytes flipped
        b = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        samples.append(bytes(b))
    samples += [b"a.b.c", b"..", b"e30.e30.", b"e30.W10.", b"e30.eyJzZXEiOnRydWV9."]
    for sample in samples:
        got = peek_seq(sample)
        assert got is None or isinstance(got, int)
    assert peek_seq(b"e30.eyJzZXEiOnRydWV9.") is None  # {"seq": true} is not a seq


def test_extend_continues_the_chain_and_feed_hash_hashes_the_payload() -> None:
    hashes = [payload_hash(payload_of(b)) for b in LOG]
    assert extend(extend(ZERO, hashes[:3]), hashes[3:]) == chain_of(hashes)
    assert feed_hash(LOG[0]) == hashes[0]
    assert feed_hash(b"garbage") is None
