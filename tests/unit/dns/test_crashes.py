"""A crashed DNS worker's next fork: each crash waits longer, and too many move it to Python."""

from __future__ import annotations

from kzgate.dns.crashes import MAX_BACKOFF_SECONDS, WorkerHealth


def health(limit: int = 5, window: float = 60.0) -> WorkerHealth:
    return WorkerHealth(limit=limit, window=window, engine="c")


def test_the_first_crash_is_forked_again_at_once_and_each_next_waits_twice_as_long() -> None:
    h = health(limit=100)
    delays = [h.crashed(now=t, started=t - 0.5).delay for t in range(1, 7)]
    assert delays == [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]
    assert h.crashes == 6 and h.engine == "c"


def test_a_crash_of_a_worker_that_was_serving_does_not_reset_the_wait() -> None:
    # The old pool reset its back-off when the dead worker had been ready: a
    # packet that crashes a serving worker then got a re-fork at once, every time.
    h = health(limit=100)
    h.crashed(now=10.0, started=0.0)  # served for 10 s, then crashed
    h.crashed(now=10.2, started=10.0)  # its replacement served for 0.2 s
    assert h.crashed(now=10.5, started=10.3).delay == 0.1


def test_only_a_whole_crash_free_window_ends_the_streak() -> None:
    h = health(limit=100, window=60.0)
    for t in range(4):
        h.crashed(now=float(t), started=float(t) - 0.1)
    assert h.streak == 4
    # The replacement ran 59 s: not long enough.
    assert h.crashed(now=63.0, started=4.0).delay == 0.4
    # This one ran 60 s: the earlier crashes are forgiven, and it is forked at once.
    assert h.crashed(now=123.5, started=63.5).delay == 0.0
    assert h.streak == 1 and h.crashes == 6


def test_the_wait_is_capped_by_30_s_and_by_half_the_window() -> None:
    h = health(limit=1000, window=600.0)
    for i in range(100):
        last = h.crashed(now=float(i), started=float(i))
    assert last.delay == MAX_BACKOFF_SECONDS
    short = health(limit=1000, window=4.0)
    for i in range(20):
        last = short.crashed(now=i * 0.01, started=i * 0.01)
    assert last.delay == 2.0


def test_crash_limit_crashes_within_the_window_switch_to_python_once_and_for_good() -> None:
    h = health(limit=3, window=60.0)
    first, second = h.crashed(now=0.0, started=0.0), h.crashed(now=1.0, started=0.5)
    assert (first.engine, second.engine) == ("c", "c") and not second.switched
    third = h.crashed(now=2.0, started=1.5)
    assert (third.engine, third.switched, third.recent, third.number) == ("python", True, 3, 3)
    fourth = h.crashed(now=3.0, started=2.5)
    assert (fourth.engine, fourth.switched) == ("python", False)  # said once
    # Not moved back, however long it then runs without crashing.
    assert h.crashed(now=10_000.0, started=3.0).engine == "python"


def test_crashes_spread_wider_than_the_window_do_not_switch() -> None:
    h = health(limit=3, window=60.0)
    for t in (0.0, 40.0, 80.0, 120.0, 160.0):
        out = h.crashed(now=t, started=t - 1.0)
        assert out.engine == "c" and out.recent <= 2, (t, out)


def test_a_worker_without_the_c_module_starts_and_stays_on_python() -> None:
    h = WorkerHealth(limit=1, window=60.0, engine="python")
    out = h.crashed(now=1.0, started=0.0)
    assert (out.engine, out.switched) == ("python", False)
