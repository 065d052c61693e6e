"""Every issuer's puller from the config: start, reload live, stop; status and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from kzgate.config import FeedConfig, IssuerConfig
from kzgate.enforce.base import StartError
from kzgate.feed.judge import FEED_STATES, PULL_OUTCOMES
from kzgate.feed.pullers import FeedPullers
from kzgate.metrics import Metrics
from tests.support.feedfakes import FakeSink, ScriptedSource, signed_task
from tests.support.protocol_fixtures import NOW, TRUST

LOG = [signed_task(seq) for seq in range(1, 4)]


def feed(url: str = "https://feed.example.kz/mci", interval: float = 60.0) -> FeedConfig:
    return FeedConfig(url=url, ca=Path("/etc/ca.pem"), interval=interval)


def issuer(iss: str, with_feed: FeedConfig | None) -> IssuerConfig:
    return IssuerConfig(iss, iss, (), with_feed)


class Sources:
    """make_source for the group: a ScriptedSource per URL; a URL in ``broken`` cannot be set up."""

    def __init__(self) -> None:
        self.made: dict[str, ScriptedSource] = {}
        self.broken: set[str] = set()

    def __call__(self, cfg: FeedConfig) -> ScriptedSource:
        if cfg.url in self.broken:
            raise FileNotFoundError(2, "No such file or directory", str(cfg.ca))
        self.made[cfg.url] = source = ScriptedSource(LOG)
        return source


def group(sink: FakeSink, sources: Callable[[FeedConfig], ScriptedSource]) -> FeedPullers:
    return FeedPullers(sink, lambda: TRUST, sources, clock=lambda: NOW, rand=lambda: 0.5)


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_puller_per_issuer_with_a_feed_and_its_status_and_metrics() -> None:
    sink, sources = FakeSink(), Sources()
    feeds = group(sink, sources)
    metrics = Metrics()
    metrics.register(*feeds.collectors())
    await feeds.start([issuer("mci", feed()), issuer("sts", None)])
    try:
        await until(lambda: feeds.status()["mci"]["state"] == "in_sync")
        assert list(feeds.status()) == ["mci"] and len(sink.callbacks) == 1
        status = feeds.status()["mci"]
        assert (status["head_seq"], status["held_seq"], status["gaps"]) == (3, 3, 0)
        text = metrics.exposition()[0].decode()
    finally:
        await feeds.close()
    assert sources.made["https://feed.example.kz/mci"].closed
    assert 'kzgate_feed_head_seq{issuer="mci"} 3.0' in text
    assert 'kzgate_feed_held_seq{issuer="mci"} 3.0' in text
    assert 'kzgate_feed_state{issuer="mci",state="in_sync"} 1.0' in text
    for state in FEED_STATES:
        if state != "in_sync":
            assert f'kzgate_feed_state{{issuer="mci",state="{state}"}} 0.0' in text
    assert 'kzgate_feed_pulls_total{issuer="mci",outcome="ok"} 1.0' in text
    for outcome in PULL_OUTCOMES:  # every outcome exported from the start
        assert f'kzgate_feed_pulls_total{{issuer="mci",outcome="{outcome}"}}' in text
    assert 'issuer="sts"' not in text


async def test_no_feed_asks_nothing_of_the_sink_and_exports_no_series() -> None:
    sink = FakeSink()
    feeds = group(sink, Sources())
    metrics = Metrics()
    metrics.register(*feeds.collectors())
    await feeds.start([issuer("mci", None)])
    assert feeds.status() == {} and sink.callbacks == []
    text = metrics.exposition()[0].decode()
    assert "# TYPE kzgate_feed_state gauge" in text and "kzgate_feed_state{" not in text
    assert "kzgate_feed_head_seq{" not in text
    await feeds.close()


async def test_no_head_seq_sample_before_a_head_is_accepted() -> None:
    sink, sources = FakeSink(), Sources()
    feeds = group(sink, sources)
    metrics = Metrics()
    metrics.register(*feeds.collectors())

    def dead(cfg: FeedConfig) -> ScriptedSource:
        source = sources(cfg)
        source.hang = True
        return source

    feeds.make_source = dead
    await feeds.start([issuer("mci", feed())])
    text = metrics.exposition()[0].decode()
    await feeds.close()
    assert "kzgate_feed_head_seq{" not in text
    assert 'kzgate_feed_held_seq{issuer="mci"} 0.0' in text
    assert 'kzgate_feed_state{issuer="mci",state="behind"} 1.0' in text  # nothing proven yet


async def test_a_feed_that_cannot_be_set_up_fails_the_start_naming_the_issuer() -> None:
    sources = Sources()
    sources.broken.add("https://b.kz/sts")
    feeds = group(FakeSink(), sources)
    with pytest.raises(StartError, match=r"issuer sts: feed https://b\.kz/sts: cannot set up"):
        await feeds.start([issuer("mci", feed()), issuer("sts", feed("https://b.kz/sts"))])
    assert feeds.status() == {}
    assert sources.made["https://feed.example.kz/mci"].closed  # the one started is stopped


async def test_reload_starts_replaces_and_stops_only_what_changed() -> None:
    sink, sources = FakeSink(), Sources()
    feeds = group(sink, sources)
    await feeds.start([issuer("mci", feed()), issuer("sts", feed("https://f.kz/sts"))])
    first_sts = sources.made["https://f.kz/sts"]
    await feeds.reload(
        [
            issuer("mci", feed("https://new.kz/mci")),  # changed: replaced
            issuer("sts", feed("https://f.kz/sts")),  # unchanged: left running
            issuer("gov", feed("https://f.kz/gov")),  # added
        ]
    )
    assert sources.made["https://feed.example.kz/mci"].closed and not first_sts.closed
    assert sorted(feeds.status()) == ["gov", "mci", "sts"]
    await feeds.reload([issuer("mci", feed("https://new.kz/mci")), issuer("sts", None)])
    assert first_sts.closed and sorted(feeds.status()) == ["mci"]
    sources.broken.add("https://broken.kz/mci")
    await feeds.reload([issuer("mci", feed("https://broken.kz/mci"))])
    running = sources.made["https://new.kz/mci"]
    assert not running.closed and list(feeds.status()) == ["mci"]  # kept: the new one failed
    assert len(sink.callbacks) == 1  # hooked once, whatever the reloads
    await feeds.close()
    assert running.closed


async def test_a_push_reaches_the_puller_of_its_issuer_only() -> None:
    sink, sources = FakeSink(), Sources()
    feeds = group(sink, sources)
    await feeds.start([issuer("mci", feed())])
    try:
        source = sources.made["https://feed.example.kz/mci"]
        await until(lambda: feeds.status()["mci"]["state"] == "in_sync")
        heads = source.calls.count(("head",))
        sink.callbacks[0]("sts", 99)  # another issuer's gap: not this feed's business
        await asyncio.sleep(0.05)
        assert source.calls.count(("head",)) == heads
        sink.callbacks[0]("mci", 9)  # a gap in mci's log: pull now
        await until(lambda: source.calls.count(("head",)) == heads + 1, timeout=1.0)
    finally:
        await feeds.close()
