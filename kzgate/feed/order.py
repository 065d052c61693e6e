"""A page of the feed checked before the sink sees it, and the hash of what it served; pure.

The feed must serve seq after+1, after+2, … in order (task-protocol.md §6); the
puller reads each task's claimed seq, unverified, to check that before handing
the page over (the sink verifies every task in full, as a pushed one).
"""

from __future__ import annotations

from collections.abc import Sequence

from kzgate.errors import TaskError
from kzgate.feed.chain import payload_hash
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import parse_compact
from kzgate.protocol.schema import MAX_SEQ


def peek_seq(body: bytes) -> int | None:
    """The seq a task's payload claims, or None when it has none that can be read.

    Unverified, on purpose: it only orders the page before the sink verifies
    each task in full; a lie here is caught there (or as a conflict).
    """
    try:
        obj = loads_object(parse_compact(body).payload, "payload")
    except (TaskError, ValueError, RecursionError):
        return None
    seq = obj.get("seq")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        return None
    return seq


def in_order(seqs: Sequence[int | None], first: int) -> tuple[int, str | None]:
    """How many of ``seqs`` are exactly first, first+1, …, and what the first
    deviation is (a skip, a reorder, a repeat, an unreadable seq), or None."""
    for i, seq in enumerate(seqs):
        due = first + i
        if seq == due:
            continue
        if seq is None:
            return i, f"the task served where seq {due} was due has no readable seq"
        if seq < due:
            return i, f"seq {seq} served again where {due} was due (repeat)"
        kind = "reorder" if due in seqs[i + 1 :] else "skip"
        return i, f"seq {seq} served where {due} was due ({kind})"
    return len(seqs), None


# How far past a deviation a page is read to tell a reorder (the due seq comes later)
# from a skip: only the error's wording depends on it.
LOOKAHEAD = 1000


def check_page(bodies: Sequence[bytes], first: int) -> tuple[int, str | None]:
    """``in_order`` over the seqs the bodies claim, read only up to the first deviation
    (and ``LOOKAHEAD`` past it): a page of millions of items that are no task costs one
    peek, not millions."""
    seqs: list[int | None] = []
    for body in bodies:
        seqs.append(peek_seq(body))
        if seqs[-1] != first + len(seqs) - 1:
            stop = len(seqs)
            if seqs[-1] is not None:
                seqs += [peek_seq(b) for b in bodies[stop : stop + LOOKAHEAD]]
            break
    return in_order(seqs, first)


def feed_hash(body: bytes) -> bytes | None:
    """SHA-256 of a served task's payload, unverified (compared with what is held), or None."""
    try:
        return payload_hash(parse_compact(body).payload)
    except TaskError:
        return None
