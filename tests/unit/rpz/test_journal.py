"""The IXFR history: its window, its bounds and the AXFR fallback (pure)."""

from __future__ import annotations

from kzgate.rpz.journal import Journal
from kzgate.rpz.zone import Change


def step(old: int, names: int = 1) -> Change:
    return Change(old, old + 1, (), tuple(f"n{old}-{i}.kz" for i in range(names)), (), ())


def test_window_from_any_kept_serial() -> None:
    j = Journal(history=3)
    for s in range(10, 15):
        j.record(step(s))
    assert len(j) == 3
    assert [c.old for c in j.since(12, 15) or []] == [12, 13, 14]
    assert [c.old for c in j.since(14, 15) or []] == [14]
    assert j.since(15, 15) == []  # current: the SOA alone
    assert j.since(11, 15) is None  # fell out of the window: AXFR
    assert j.since(999, 15) is None  # unknown (newer, or from another life): AXFR


def test_gap_restarts_the_window() -> None:
    j = Journal(history=10)
    j.record(step(1))
    j.record(step(5))  # does not follow 2: the history before it is useless
    assert j.since(1, 6) is None and j.since(5, 6) is not None


def test_window_must_reach_current() -> None:
    j = Journal(history=10)
    j.record(step(1))
    assert j.since(1, 3) is None


def test_names_bound_and_reset() -> None:
    j = Journal(history=100, max_names=10)
    for s in range(5):
        j.record(step(s, names=4))
    assert len(j) == 2  # 8 names kept, a third would pass 10
    j.record(step(5, names=11))  # bigger than the bound alone: nothing kept
    assert len(j) == 0
    j.record(step(6))
    j.reset()
    assert len(j) == 0 and j.since(6, 7) is None


def test_zero_history_keeps_nothing() -> None:
    j = Journal(history=0)
    j.record(step(1))
    assert j.since(1, 2) is None and j.since(2, 2) == []
