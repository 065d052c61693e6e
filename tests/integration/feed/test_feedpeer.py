"""The hostile feed of tests/support/feedpeer.py really does each thing it is told to.

Read with a plain aiohttp client (not FeedClient), so that a fault in the
client cannot hide a fault of the peer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kzgate.errors import Forbidden
from kzgate.feed.chain import chain_of
from kzgate.feed.issuerlog import Signer
from kzgate.keys import load_private_key
from tests.integration.feed.helpers import get, payload_hash, read_head, seq_of, tasks
from tests.support.feedpeer import Endless, FeedPeer, Hang, Reply
from tests.support.kzfixtures import Regulator, client_ssl

OTHER_SESSION = "3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10"


@pytest.fixture
async def peer(pki: Path) -> AsyncIterator[FeedPeer]:
    peer = await FeedPeer.start_tls(pki)
    for body in tasks(pki, 1, 5):
        peer.publish(body)
    yield peer
    await peer.close()


async def head_of(pki: Path, peer: FeedPeer) -> bytes:
    status, ctype, body = await get(pki, peer.url + "/head")
    assert (status, ctype) == (200, "application/jose")
    return body


async def page(pki: Path, peer: FeedPeer, after: int = 0, limit: int = 100) -> list[bytes]:
    status, ctype, body = await get(pki, peer.url + "/tasks", after=after, limit=limit, wait=0)
    assert (status, ctype) == (200, "application/json")
    return [t.encode() for t in json.loads(body)["tasks"]]


async def test_by_default_it_is_an_honest_feed(pki: Path, peer: FeedPeer) -> None:
    head = read_head(pki, await head_of(pki, peer))
    assert head.seq == 5 and head.chain == chain_of(payload_hash(t) for t in tasks(pki, 1, 5))
    assert head.session == peer.session
    assert await page(pki, peer) == tasks(pki, 1, 5)
    assert await page(pki, peer, after=3, limit=1) == tasks(pki, 4, 4)
    assert [name for name, _ in peer.requests] == ["head", "tasks", "tasks"]
    assert peer.requests[-1][1] == {"after": "3", "limit": "1", "wait": "0"}


async def test_it_serves_exact_head_bytes(pki: Path, peer: FeedPeer) -> None:
    peer.script.head_bytes = b"anything at all"
    assert await head_of(pki, peer) == b"anything at all"


async def test_it_signs_heads_that_lie_about_seq_session_or_time(pki: Path, peer: FeedPeer) -> None:
    peer.script.head_seq = 2  # a rollback
    head = read_head(pki, await head_of(pki, peer))
    assert head.seq == 2 and head.chain == chain_of(payload_hash(t) for t in tasks(pki, 1, 2))
    peer.script.head_seq = 9  # more than it serves
    head = read_head(pki, await head_of(pki, peer))
    assert head.seq == 9 and head.chain != chain_of(payload_hash(t) for t in tasks(pki, 1, 5))
    peer.script.head_seq, peer.script.head_chain = None, bytes(32)
    assert read_head(pki, await head_of(pki, peer)).chain == bytes(32)
    peer.script.head_chain, peer.script.head_session = None, OTHER_SESSION
    assert read_head(pki, await head_of(pki, peer)).session == OTHER_SESSION
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    peer.script.head_issued_at = long_ago
    head = read_head(pki, await head_of(pki, peer))
    assert head.issued_at == long_ago and head.stale(dt.datetime.now(dt.UTC))


async def test_it_signs_heads_with_another_key(pki: Path, peer: FeedPeer) -> None:
    peer.script.head_signer = Signer("mci", load_private_key(pki / "keys/sts-dev.key"), "sts-dev")
    with pytest.raises(Forbidden):
        read_head(pki, await head_of(pki, peer))


async def test_it_skips_repeats_replaces_and_reorders_seqs(pki: Path, peer: FeedPeer) -> None:
    peer.script.skipped = {2}
    assert [seq_of(t) for t in await page(pki, peer)] == [1, 3, 4, 5]
    peer.script.skipped, peer.script.repeated = set(), {3}
    assert [seq_of(t) for t in await page(pki, peer)] == [1, 2, 3, 3, 4, 5]
    peer.script.repeated, peer.script.swap_first_two = set(), True
    assert [seq_of(t) for t in await page(pki, peer, after=2)] == [4, 3, 5]
    peer.script.swap_first_two = False
    regulator = Regulator(pki)
    other = regulator.sign(regulator.restrict("other", "domain:other.kz", seq=4))
    peer.script.replaced = {4: other}
    served = await page(pki, peer)
    assert served[3] == other and served[3] != tasks(pki, 4, 4)[0]
    assert [seq_of(t) for t in served] == [1, 2, 3, 4, 5]
    # the head still commits to the honest log: the lie is in the tasks only
    assert read_head(pki, await head_of(pki, peer)).chain == chain_of(
        payload_hash(t) for t in tasks(pki, 1, 5)
    )


async def test_it_answers_with_any_status_type_and_bytes(pki: Path, peer: FeedPeer) -> None:
    peer.script.answers["tasks"] = Reply(b"<html/>", status=502, content_type="text/html")
    assert await get(pki, peer.url + "/tasks", after=0) == (502, "text/html", b"<html/>")
    peer.script.answers["head"] = Reply(b"{}", content_type="application/json", chunked=True)
    assert await get(pki, peer.url + "/head") == (200, "application/json", b"{}")


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_is_a_well_formed_body_of_exactly_that_size(
    pki: Path, peer: FeedPeer, chunked: bool
) -> None:
    peer.oversize("tasks", 100_001, chunked=chunked)
    _, _, body = await get(pki, peer.url + "/tasks", after=0)
    assert len(body) == 100_001 and len(json.loads(body)["tasks"][0]) == 100_001 - 14
    peer.oversize("head", 5000)
    _, ctype, body = await get(pki, peer.url + "/head")
    assert (ctype, len(body)) == ("application/jose", 5000)


async def test_it_hangs(pki: Path, peer: FeedPeer) -> None:
    peer.script.answers["head"] = Hang()
    with pytest.raises(TimeoutError):
        await get(pki, peer.url + "/head", timeout=0.5)
    assert peer.requests[-1][0] == "head"  # it was asked, and did not answer


async def test_its_endless_body_does_not_end(pki: Path, peer: FeedPeer) -> None:
    peer.script.answers["tasks"] = Endless()
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(peer.url + "/tasks", params={"after": "0"}) as resp,
    ):
        assert resp.status == 200
        read = 0
        while read < 4 * 1024 * 1024:
            chunk = await asyncio.wait_for(resp.content.read(1 << 16), 5)
            assert chunk
            read += len(chunk)


async def test_long_poll_is_the_reference_servers(pki: Path, peer: FeedPeer) -> None:
    poll = asyncio.create_task(get(pki, peer.url + "/tasks", after=5, wait=10))
    await asyncio.sleep(0.2)
    peer.publish(tasks(pki, 6, 6)[0])
    _, _, body = await asyncio.wait_for(poll, 5)
    assert json.loads(body)["tasks"] == [tasks(pki, 6, 6)[0].decode()]
