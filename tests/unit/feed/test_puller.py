"""The feed puller against a scripted feed and an in-memory sink (no sockets).

Each hostile feed ends in the documented state, outcome and alarm, and nothing is
stored that should not be (task-protocol.md §6).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence

import pytest

import kzgate.feed.puller as puller_module
from kzgate.feed.head import Head
from kzgate.feed.ports import FeedError, Taken
from kzgate.feed.puller import FeedPuller
from tests.support.feedfakes import (
    OTHER_SESSION,
    FakeSink,
    ScriptedSource,
    payload_of,
    signed_head,
    signed_task,
    unreachable,
)
from tests.support.protocol_fixtures import NOW, STS_KEY, TRUST

LOG = [signed_task(seq) for seq in range(1, 8)]


def make(
    source: ScriptedSource,
    sink: FakeSink | None = None,
    *,
    clock: Callable[[], dt.datetime] = lambda: NOW,
    interval: float = 60.0,
    wait: float = 0.0,
    limit: int = 3,
) -> tuple[FeedPuller, FakeSink]:
    sink = sink if sink is not None else FakeSink()
    puller = FeedPuller(
        "mci",
        source,
        sink,
        lambda: TRUST,
        interval=interval,
        wait=wait,
        limit=limit,
        clock=clock,
        rand=lambda: 0.5,
    )
    return puller, sink


def held(sink: FakeSink) -> list[int]:
    return sorted(sink.payloads.get("mci", {}))


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- catching up --------------------------------------------------------------------


async def test_catch_up_in_pages_in_order_and_the_head_goes_with_the_page_completing_it() -> None:
    source = ScriptedSource(LOG)
    puller, sink = make(source)
    assert await puller.pull()
    assert held(sink) == [1, 2, 3, 4, 5, 6, 7]
    pages = [(seqs, head is not None) for _, seqs, head in sink.takes]
    assert pages == [([1, 2, 3], False), ([4, 5, 6], False), ([7], True)]
    assert sink.heads["mci"].seq == 7 and not sink.stored_alone
    s = puller.status
    assert (s.state, s.head_seq, s.held_seq, s.gaps, s.error) == ("in_sync", 7, 7, 0, "")
    assert s.last_pull == NOW
    assert puller.pulls.value("mci", "ok") == 1
    assert ("tasks", 0, 3, 0) in source.calls  # from what is held, with no wait


async def test_a_head_that_brings_nothing_is_stored_alone_once() -> None:
    sink = FakeSink()
    for body in LOG:
        sink.push("mci", body)
    source = ScriptedSource(LOG)
    puller, _ = make(source, sink)
    assert await puller.pull()
    assert [h.seq for h in sink.stored_alone] == [7] and not [t for t in sink.takes if t[1]]
    assert source.calls[1] == ("tasks", 7, 3, 0)
    assert await puller.pull()  # the same head again: nothing to store
    assert len(sink.stored_alone) == 1
    assert puller.status.state == "in_sync"


async def test_tasks_pushed_beyond_the_head_are_in_sync_when_the_head_agrees() -> None:
    sink = FakeSink()
    for body in LOG:
        sink.push("mci", body)
    puller, _ = make(ScriptedSource(LOG, head=signed_head(LOG, seq=5)), sink)
    assert await puller.pull()
    assert (puller.status.state, puller.status.head_seq, puller.status.held_seq) == (
        "in_sync",
        5,
        7,
    )


async def test_behind_when_the_feed_does_not_serve_what_its_head_says() -> None:
    source = ScriptedSource(LOG[:4], head=signed_head(LOG))
    puller, sink = make(source)
    assert await puller.pull()
    s = puller.status
    assert (s.state, s.head_seq, s.held_seq, s.gaps) == ("behind", 7, 4, 3)
    assert sink.stored_alone[-1].seq == 7  # accepted all the same: a lower seq is now a rollback


async def test_the_running_chain_is_extended_not_recomputed() -> None:
    asked: list[tuple[int, int]] = []
    sink = FakeSink()
    real = sink.payload_hashes

    async def spy(iss: str, first: int, last: int) -> list[bytes]:
        asked.append((first, last))
        return await real(iss, first, last)

    sink.payload_hashes = spy  # type: ignore[method-assign]
    source = ScriptedSource(LOG[:5])
    puller, _ = make(source, sink)
    assert await puller.pull()
    source.log, source.head = LOG, signed_head(LOG)
    assert await puller.pull()
    assert asked == [(1, 5), (6, 7)] and puller.status.state == "in_sync"


# -- the head -------------------------------------------------------------------------


async def test_a_head_with_a_bad_signature_is_refused_and_backs_off() -> None:
    forged = signed_head(LOG, key=STS_KEY, kid="mci-1")  # mci's kid, another key
    puller, sink = make(ScriptedSource(LOG, head=forged))
    assert not await puller.pull()  # a failure: the loop backs off
    s = puller.status
    assert s.state == "unreachable" and "bad_signature" in s.error
    assert puller.pulls.value("mci", "bad_head") == 1
    assert not sink.takes and not sink.heads and s.last_pull is None


async def test_a_head_signed_with_another_issuers_key_is_refused() -> None:
    other = signed_head(LOG, key=STS_KEY, kid="sts-1")
    puller, sink = make(ScriptedSource(LOG, head=other))
    assert not await puller.pull()
    assert puller.status.state == "unreachable" and "forbidden" in puller.status.error
    assert puller.pulls.value("mci", "bad_head") == 1 and not sink.takes


async def test_a_rollback_is_refused_alarmed_once_and_nothing_is_pulled() -> None:
    source = ScriptedSource(LOG)
    puller, sink = make(source)
    assert await puller.pull()
    source.head = signed_head(LOG, seq=5)
    calls = len(source.calls)
    assert await puller.pull() and await puller.pull()  # not a failure: no backoff
    assert source.calls[calls:] == [("head",), ("head",)]
    assert sink.heads["mci"].seq == 7  # the accepted head stays
    s = puller.status
    assert s.state == "rollback" and s.head_seq == 7 and "below the accepted 7" in s.error
    assert sink.event_kinds() == ["feed_rollback"]
    assert sink.events[0][2] == {
        "iss": "mci",
        "session": sink.heads["mci"].session,
        "stored_seq": 7,
        "head_seq": 5,
    }
    assert puller.pulls.value("mci", "rollback") == 2


async def test_a_stale_head_is_alarmed_not_stored_and_its_tasks_are_still_taken() -> None:
    late = NOW + dt.timedelta(hours=1)
    puller, sink = make(ScriptedSource(LOG), FakeSink(lambda: late), clock=lambda: late)
    assert await puller.pull()
    assert held(sink) == [1, 2, 3, 4, 5, 6, 7]  # each task signed on its own: safe to take
    assert not sink.heads and all(head is None for _, _, head in sink.takes)
    s = puller.status
    assert s.state == "stale" and "expired" in s.error and s.head_seq is None
    assert puller.pulls.value("mci", "stale") == 1


async def test_a_new_session_is_alarmed_and_the_log_read_again_from_seq_1() -> None:
    source = ScriptedSource(LOG)
    puller, sink = make(source)
    assert await puller.pull()
    source.head = signed_head(LOG, session=OTHER_SESSION)
    assert await puller.pull()
    assert ("tasks", 0, 3, 0) in source.calls[source.calls.index(("head",), 1) :]
    assert sink.event_kinds() == ["feed_new_session"]
    assert sink.events[0][2]["new_session"] == OTHER_SESSION
    assert sink.heads["mci"].session == OTHER_SESSION
    assert puller.status.state == "in_sync" and puller.status.head_seq == 7
    assert await puller.pull()  # the same session now: no alarm again
    assert sink.event_kinds() == ["feed_new_session"]


async def test_a_new_session_whose_log_differs_conflicts_and_diverges() -> None:
    source = ScriptedSource(LOG[:3])
    puller, sink = make(source)
    assert await puller.pull()
    other = [signed_task(seq, variant="b") for seq in (1, 2, 3)]
    source.log, source.head = other, signed_head(other, session=OTHER_SESSION)
    assert await puller.pull()
    assert held(sink) == [1, 2, 3]  # nothing replaced
    assert sink.event_kinds().count("feed_conflict") == 3
    assert "feed_new_session" in sink.event_kinds() and "feed_diverged" in sink.event_kinds()
    assert (puller.status.state, puller.status.diverged_at) == ("diverged", 1)


# -- the feed's order -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "taken", "kind"),
    [
        ([1, 2, 4, 5], [1, 2], "skip"),
        ([1, 3, 2], [1], "reorder"),
        ([1, 2, 2, 3], [1, 2], "repeat"),
    ],
)
async def test_a_feed_out_of_order_is_a_fault_and_what_was_in_order_is_kept(
    served: list[int], taken: list[int], kind: str
) -> None:
    source = ScriptedSource(LOG)
    source.serve = lambda after, limit: [LOG[s - 1] for s in served] if after == 0 else []  # type: ignore[method-assign]
    puller, sink = make(source, limit=10)
    assert await puller.pull()
    assert held(sink) == taken
    assert [seqs for _, seqs, _ in sink.takes] == [taken]
    s = puller.status
    assert s.state == "behind" and kind in s.error
    assert puller.pulls.value("mci", "fault") == 1 and puller.pulls.value("mci", "ok") == 0


async def test_a_feed_that_ignores_after_repeats_across_pages() -> None:
    source = ScriptedSource(LOG)
    source.serve = lambda after, limit: LOG[:limit]  # type: ignore[method-assign]
    puller, sink = make(source)
    assert await puller.pull()
    assert held(sink) == [1, 2, 3] and "repeat" in puller.status.error


async def test_a_task_without_a_readable_seq_stops_the_page() -> None:
    source = ScriptedSource(LOG)
    source.serve = lambda after, limit: [LOG[0], b"not a jws", LOG[1]] if after == 0 else []  # type: ignore[method-assign]
    puller, sink = make(source)
    assert await puller.pull()
    assert held(sink) == [1] and "no readable seq" in puller.status.error


async def test_a_task_of_another_issuer_on_this_feed_is_refused_and_a_fault() -> None:
    foreign = signed_task(2, iss="sts", key=STS_KEY, kid="sts-1")
    source = ScriptedSource([LOG[0], foreign, LOG[2]], head=signed_head(LOG, seq=3))
    puller, sink = make(source)
    assert await puller.pull()
    assert held(sink) == [1, 3] and "sts" not in sink.payloads
    assert "wrong_issuer" in puller.status.error and puller.status.state == "behind"
    assert puller.pulls.value("mci", "fault") == 1


def forged_page(after: int, limit: int) -> list[bytes]:
    """Tasks that claim the next seqs, with a signature of other bytes: all refused."""
    return [signed_task(after + i, variant="x")[:-4] + b"AAAA" for i in range(1, limit + 1)]


async def test_a_page_of_which_nothing_is_stored_ends_the_round() -> None:
    # A hostile feed answering every page with forged tasks for the next seqs must not
    # keep the round going (found at the daemon level: it walked the seq space).
    source = ScriptedSource(LOG[:2])
    # (forged pages up to seq 300 only, so that without the fix this fails, not hangs)
    source.serve = lambda after, limit: (
        LOG[:2][after:] or forged_page(after, min(limit, 300 - after))
    )  # type: ignore[method-assign]
    puller, sink = make(source)
    assert await puller.pull()
    assert held(sink) == [1, 2] and "bad_signature" in puller.status.error
    assert [c[1] for c in source.calls if c[0] == "tasks"] == [0, 2]
    assert puller.pulls.value("mci", "fault") == 1


async def test_a_page_of_forged_tasks_is_logged_in_a_few_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = ScriptedSource(LOG[:2])
    source.serve = lambda after, limit: forged_page(after, limit) if after == 0 else []  # type: ignore[method-assign]
    puller, sink = make(source, limit=200)
    with caplog.at_level("WARNING", logger="kzgate.feed"):
        assert await puller.pull()
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == puller_module.LOGGED_REFUSALS + 1, len(refused)
    assert "195 more tasks of this page refused" in refused[-1].getMessage()
    assert held(sink) == []


async def test_a_long_poll_of_which_nothing_is_stored_is_no_progress() -> None:
    source = ScriptedSource(LOG[:2])
    puller, sink = make(source, interval=60, wait=0.2)
    puller.start()
    try:
        await until(lambda: puller.status.state == "in_sync")
        source.serve = forged_page  # type: ignore[method-assign]
        await asyncio.sleep(0.5)
    finally:
        await puller.close()
    polls = [c for c in source.calls if c[0] == "tasks" and c[3] > 0]
    assert 2 <= len(polls) <= 4, polls  # paced as an empty answer, not back to back
    assert {c[1] for c in polls} == {2}  # each from where the feed really was
    assert held(sink) == [1, 2]


# -- conflicts and divergence -------------------------------------------------------


async def test_a_conflict_is_alarmed_once_per_seq_and_bytes_and_diverged_names_the_seq() -> None:
    sink = FakeSink()
    sink.push("mci", signed_task(3, variant="x"))  # a push with other bytes for seq 3
    source = ScriptedSource(LOG)
    puller, _ = make(source, sink)
    for _ in range(3):
        assert await puller.pull()
    assert sink.event_kinds().count("feed_conflict") == 1
    conflict = next(data for _, kind, data in sink.events if kind == "feed_conflict")
    assert conflict["seq"] == 3 and len(conflict["sha256"]) == 64
    assert held(sink) == [1, 2, 3, 4, 5, 6, 7]
    assert payload_of(LOG[2]) != sink.payloads["mci"][3]  # nothing replaced
    s = puller.status
    assert (s.state, s.diverged_at) == ("diverged", 3) and "seq 3" in s.error
    assert sink.event_kinds().count("feed_diverged") == 1
    # the first difference is looked up once, not by re-reading the log every round
    rereads = [c for c in source.calls if c[:2] == ("tasks", 0)]
    assert len(rereads) == 2  # the first catch-up, and the one re-read


async def test_a_head_whose_chain_matches_no_log_is_diverged_with_no_seq() -> None:
    source = ScriptedSource(LOG, head=signed_head(LOG, chain=bytes(32)))
    puller, sink = make(source)
    assert await puller.pull()
    s = puller.status
    assert (s.state, s.diverged_at) == ("diverged", None)
    assert "head itself is inconsistent" in s.error
    assert sink.event_kinds() == ["feed_diverged"]


async def test_diverged_found_on_a_later_page() -> None:
    log = [signed_task(seq) for seq in range(1, 11)]
    sink = FakeSink()
    for seq, body in enumerate(log, start=1):
        sink.push("mci", signed_task(seq, variant="y") if seq == 8 else body)
    puller, _ = make(ScriptedSource(log), sink)
    assert await puller.pull()
    assert (puller.status.state, puller.status.diverged_at) == ("diverged", 8)


# -- failures and the loop ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unreachable", "garbage", "oversize"])
async def test_a_feed_that_cannot_be_read_is_unreachable_counted_by_kind(kind: str) -> None:
    source = ScriptedSource(LOG)
    source.errors = [FeedError(kind, "because")]  # type: ignore[arg-type]
    puller, sink = make(source)
    assert not await puller.pull()
    assert puller.status.state == "unreachable" and puller.status.error == f"{kind}: because"
    assert puller.pulls.value("mci", kind) == 1 and not sink.takes


async def test_a_feed_failing_mid_catch_up_keeps_what_was_taken() -> None:
    source = ScriptedSource(LOG)
    source.errors = []
    pages = 0
    real = source.get_tasks

    async def flaky(after: int, limit: int, wait: float) -> list[bytes]:
        nonlocal pages
        pages += 1
        if pages == 2:
            raise unreachable("reset")
        return await real(after, limit, wait)

    source.get_tasks = flaky  # type: ignore[method-assign]
    puller, sink = make(source)
    assert not await puller.pull()
    assert held(sink) == [1, 2, 3] and puller.status.state == "unreachable"
    assert not sink.heads  # the head goes only with what completes it


async def test_a_hung_feed_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(puller_module, "CALL_MARGIN", 0.05)
    source = ScriptedSource(LOG)
    source.hang = True
    puller, _ = make(source)
    assert not await puller.pull()
    assert puller.status.state == "unreachable" and "no answer" in puller.status.error


async def test_an_error_on_our_side_is_logged_and_never_leaves_the_loop() -> None:
    puller, sink = make(ScriptedSource(LOG))

    async def broken(*args: object) -> None:
        raise RuntimeError("disk full")

    sink.take = broken  # type: ignore[assignment,method-assign]
    assert not await puller.pull()
    assert "internal: RuntimeError: disk full" in puller.status.error
    assert puller.pulls.value("mci", "fault") == 1


async def test_the_loop_backs_off_then_recovers_and_closes_the_source() -> None:
    source = ScriptedSource(LOG)
    source.errors = [unreachable(), unreachable(), unreachable()]
    puller, sink = make(source, interval=0.1)
    puller.start()
    try:
        await until(lambda: puller.status.state == "in_sync")
    finally:
        await puller.close()
    assert puller.pulls.value("mci", "unreachable") == 3 and held(sink) == list(range(1, 8))
    assert source.closed


async def test_close_is_prompt_whatever_the_loop_is_doing() -> None:
    bad_head = signed_head(LOG, key=STS_KEY, kid="mci-1")  # fails at once, every round
    for i in range(30):
        source = ScriptedSource(LOG, head=bad_head if i % 2 else None)
        puller, _ = make(source, interval=0.01, wait=0.01 if i % 3 else 0)
        puller.start()
        await asyncio.sleep(i * 0.001)
        async with asyncio.timeout(1.0):
            await puller.close()
        assert source.closed


async def test_a_pushed_task_revealing_a_gap_wakes_the_puller_at_once() -> None:
    source = ScriptedSource(LOG[:3])
    puller, sink = make(source, interval=60)
    sink.on_pushed(lambda iss, seq: puller.pushed(seq))
    puller.start()
    try:
        await until(lambda: puller.status.state == "in_sync")
        heads = source.calls.count(("head",))
        await source.publish(LOG[3])
        sink.push("mci", LOG[4])  # seq 5 while 3 is held: seq 4 is missing
        await until(lambda: held(sink) == [1, 2, 3, 4, 5], timeout=1.0)
        assert source.calls.count(("head",)) == heads + 1
        sink.push("mci", LOG[5])  # seq 6 right after 5: no gap, no pull
        await asyncio.sleep(0.1)
        assert source.calls.count(("head",)) == heads + 1
    finally:
        await puller.close()


async def test_long_poll_takes_a_published_task_without_waiting_for_the_interval() -> None:
    source = ScriptedSource(LOG[:3])
    puller, sink = make(source, interval=60, wait=5)
    puller.start()
    try:
        await until(lambda: puller.status.state == "in_sync")
        await until(lambda: any(c[0] == "tasks" and c[3] == 5 for c in source.calls))
        await source.publish(LOG[3])
        await until(lambda: held(sink) == [1, 2, 3, 4], timeout=1.0)
        assert ("tasks", 3, 3, 5) in source.calls
        assert source.calls.count(("head",)) == 1  # no round was needed
        assert sink.takes[-1][2] is None  # the next round brings the head
    finally:
        await puller.close()


async def test_a_server_ignoring_wait_is_polled_no_faster_than_wait() -> None:
    source = ScriptedSource(LOG[:3])
    asked: list[float] = []

    async def at_once(after: int, limit: int, wait: float) -> list[bytes]:
        asked.append(wait)
        return []  # the hint ignored: an empty answer at once

    source.get_tasks = at_once  # type: ignore[method-assign]
    puller, _ = make(source, interval=60, wait=0.2)
    puller.start()
    try:
        await asyncio.sleep(0.5)
    finally:
        await puller.close()
    polls = [w for w in asked if w > 0]
    assert 2 <= len(polls) <= 4, polls  # about one per 0.2 s, not thousands


async def test_close_lets_a_page_being_taken_finish() -> None:
    source = ScriptedSource(LOG)
    puller, sink = make(source)
    real = sink.take
    started = asyncio.Event()

    async def slow(iss: str, bodies: Sequence[bytes], head: Head | None) -> list[Taken]:
        started.set()
        await asyncio.sleep(0.2)
        return await real(iss, bodies, head)

    sink.take = slow  # type: ignore[method-assign]
    puller.start()
    await started.wait()
    await puller.close()
    assert held(sink) == [1, 2, 3]  # the page in flight was taken whole; no other began


async def test_a_wake_cuts_a_long_poll_short_for_a_round() -> None:
    source = ScriptedSource(LOG[:3])
    puller, _ = make(source, interval=60, wait=30)
    puller.start()
    try:
        await until(lambda: any(c[0] == "tasks" and c[3] == 30 for c in source.calls))
        puller.wake()
        await until(lambda: source.calls.count(("head",)) == 2, timeout=1.0)
    finally:
        await puller.close()
