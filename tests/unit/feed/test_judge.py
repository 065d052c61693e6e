"""What a head and a round mean (feed/judge.py): every branch, values in and out."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from kzgate.feed.head import Head
from kzgate.feed.judge import (
    FEED_STATES,
    PULL_OUTCOMES,
    FeedStatus,
    backoff_delay,
    consistency,
    interval_delay,
    judge,
)
from tests.support.feedfakes import OTHER_SESSION, SESSION
from tests.support.protocol_fixtures import NOW

LATER = NOW + dt.timedelta(minutes=10)


def head(seq: int, session: str = SESSION, expires: dt.datetime = LATER) -> Head:
    return Head("mci", session, seq, bytes(32), NOW, expires, f"jws-{session}-{seq}")


def test_the_first_head_is_accepted() -> None:
    d = judge(None, head(5), NOW)
    assert (d.kind, d.accepted, d.pull, d.after, d.previous) == ("accept", True, True, None, None)


@pytest.mark.parametrize("seq", [7, 8, 100])
def test_same_session_same_or_higher_seq_is_accepted(seq: int) -> None:
    d = judge(head(7), head(seq), NOW)
    assert d.kind == "accept" and d.accepted and d.previous == head(7)


def test_same_session_lower_seq_is_a_rollback_refused_and_not_pulled() -> None:
    d = judge(head(7), head(6), NOW)
    assert (d.kind, d.accepted, d.pull) == ("rollback", False, False)


def test_another_session_is_accepted_and_read_again_from_seq_1() -> None:
    d = judge(head(7), head(3, OTHER_SESSION), NOW)
    assert (d.kind, d.accepted, d.pull, d.after) == ("new_session", True, True, 0)


def test_a_head_past_expires_is_stale_not_accepted_but_its_tasks_are_pulled() -> None:
    expired = head(9, expires=NOW - dt.timedelta(seconds=1))
    for stored in (None, head(7), head(7, OTHER_SESSION)):
        d = judge(stored, expired, NOW)
        assert (d.kind, d.accepted, d.pull, d.after) == ("stale", False, True, None)


def test_a_head_expiring_exactly_now_is_not_yet_stale() -> None:
    assert judge(None, head(1, expires=NOW), NOW).kind == "accept"


def test_a_replayed_old_head_is_a_rollback_before_it_is_stale() -> None:
    old = head(3, expires=NOW - dt.timedelta(days=1))
    assert judge(head(7), old, NOW).kind == "rollback"


@pytest.mark.parametrize(
    ("held", "head_seq", "ours", "theirs", "want"),
    [
        (4, 5, None, b"a", "behind"),
        (4, 5, b"a", b"a", "behind"),  # a chain not over 1..head_seq proves nothing
        (5, 5, b"a", b"a", "in_sync"),
        (5, 5, b"a", b"b", "diverged"),
        (9, 5, b"a", b"a", "in_sync"),  # holding more than the head says (a push came first)
        (9, 5, b"a", b"b", "diverged"),
        (9, 5, None, b"b", "behind"),  # not computed: nothing proven
        (0, 0, bytes(32), bytes(32), "in_sync"),  # an empty log
    ],
)
def test_consistency(
    held: int, head_seq: int, ours: bytes | None, theirs: bytes, want: str
) -> None:
    assert consistency(held, head_seq, ours, theirs) == want


def test_backoff_doubles_from_one_second_up_to_the_interval_with_jitter_below() -> None:
    assert [backoff_delay(n, 30, 0.0) for n in (1, 2, 3, 4, 5, 6, 7, 50)] == [
        1,
        2,
        4,
        8,
        16,
        30,
        30,
        30,
    ]
    assert backoff_delay(3, 30, 0.999) == pytest.approx(2.002)
    assert backoff_delay(0, 30, 0.0) == 1  # called only after a failure; 0 is read as 1
    assert backoff_delay(5, 0.5, 0.0) == 0.5


def test_interval_is_jittered_ten_percent_either_way() -> None:
    assert interval_delay(30, 0.0) == pytest.approx(27)
    assert interval_delay(30, 0.5) == pytest.approx(30)
    assert interval_delay(30, 0.9999) == pytest.approx(33, abs=0.01)


def test_status_gaps_and_dict() -> None:
    when = NOW
    s = FeedStatus(state="behind", head_seq=10, held_seq=7, last_pull=when, error="x")
    assert s.gaps == 3
    assert dataclasses.replace(s, held_seq=12).gaps == 0
    assert FeedStatus().gaps == 0 and FeedStatus().state == "behind"
    assert s.to_dict() == {
        "state": "behind",
        "head_seq": 10,
        "held_seq": 7,
        "gaps": 3,
        "last_pull": NOW.isoformat(),
        "diverged_at": None,
        "error": "x",
    }
    assert FeedStatus().to_dict()["last_pull"] is None


def test_states_are_task_protocol_6s_list_and_outcomes_are_bounded() -> None:
    assert set(FEED_STATES) == {"in_sync", "behind", "diverged", "stale", "rollback", "unreachable"}
    assert len(set(PULL_OUTCOMES)) == len(PULL_OUTCOMES) == 8
    assert {"unreachable", "garbage", "oversize"} <= set(PULL_OUTCOMES)  # FeedErrorKind
