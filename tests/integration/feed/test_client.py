"""FeedClient against feeds that answer well, badly, too much, or not at all.

Whatever the feed does, the client returns what §6 says it should, or raises
FeedError of the right kind, within a bounded time; never anything else.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kzgate.devpki import ensure_dev_material
from kzgate.feed.client import FeedClient
from kzgate.feed.ports import FeedError
from tests.integration.feed.helpers import feed_config, read_head, tasks
from tests.support.feedpeer import Endless, FeedPeer, Hang, Reply

CAP = 64 * 1024


@pytest.fixture
async def peer(pki: Path) -> AsyncIterator[FeedPeer]:
    peer = await FeedPeer.start_tls(pki, mutual=True)
    for body in tasks(pki, 1, 3):
        peer.publish(body)
    yield peer
    await peer.close()


@pytest.fixture
async def client(peer: FeedPeer) -> AsyncIterator[FeedClient]:
    client = FeedClient(peer.feed_config(), CAP, margin=1.0)
    yield client
    await client.close()


async def fails(call: object, kind: str, within: float = 10.0) -> str:
    """The FeedError kind ``call`` raised (nothing else may escape), within ``within`` s."""
    started = time.monotonic()
    with pytest.raises(FeedError) as caught:
        await call  # type: ignore[misc]
    assert time.monotonic() - started < within
    assert caught.value.kind == kind, caught.value
    return caught.value.detail


async def test_head_and_tasks_from_an_honest_feed(pki: Path, client: FeedClient) -> None:
    head = read_head(pki, await client.get_head())
    assert (head.iss, head.seq) == ("mci", 3)
    assert await client.get_tasks(0, 100, 0) == tasks(pki, 1, 3)
    assert await client.get_tasks(1, 1, 0) == tasks(pki, 2, 2)
    assert await client.get_tasks(3, 100, 0) == []


async def test_the_query_carries_after_limit_and_wait(peer: FeedPeer, client: FeedClient) -> None:
    assert await client.get_tasks(2, 7, 0.25) == [peer.log.after(2, 1)[0]]
    assert peer.requests[-1] == ("tasks", {"after": "2", "limit": "7", "wait": "0.25"})


async def test_a_long_poll_is_not_cut_short_by_the_timeout(
    pki: Path, peer: FeedPeer, client: FeedClient
) -> None:
    # wait (3 s) is longer than the margin (1 s): the total timeout must cover both.
    poll = asyncio.create_task(client.get_tasks(3, 10, 3.0))
    await asyncio.sleep(1.5)
    [fourth] = tasks(pki, 4, 4)
    peer.publish(fourth)
    assert await asyncio.wait_for(poll, 10) == [fourth]


async def test_a_server_certificate_from_another_ca_is_unreachable(
    pki: Path, peer: FeedPeer, tmp_path: Path
) -> None:
    ensure_dev_material(tmp_path)  # another development CA
    client = FeedClient(feed_config(peer.url, pki, ca=tmp_path / "tls/ca.crt"), CAP)
    assert "TLS" in await fails(client.get_head(), "unreachable")
    await client.close()


async def test_a_host_name_the_certificate_does_not_name_is_unreachable(
    pki: Path, peer: FeedPeer
) -> None:
    # The development server certificate names localhost, 127.0.0.1 and ::1, not this.
    url = peer.url.replace("127.0.0.1", "127.0.0.2")
    client = FeedClient(feed_config(url, pki), CAP)
    try:
        await fails(client.get_head(), "unreachable")
    finally:
        await client.close()


async def test_without_the_client_certificate_a_mutual_tls_feed_is_unreachable(
    peer: FeedPeer,
) -> None:
    client = FeedClient(peer.feed_config(client_cert=False), CAP)
    await fails(client.get_head(), "unreachable")
    await fails(client.get_tasks(0, 10, 0), "unreachable")
    await client.close()


async def test_a_closed_port_and_a_missing_ca_file_are_unreachable(pki: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = FeedClient(feed_config(f"https://127.0.0.1:{port}/mci", pki), CAP)
    await fails(client.get_head(), "unreachable")
    await client.close()
    client = FeedClient(feed_config("https://127.0.0.1:1/mci", pki, ca=pki / "nope.crt"), CAP)
    assert "TLS setup" in await fails(client.get_head(), "unreachable")
    await client.close()


@pytest.mark.parametrize("name", ["head", "tasks"])
async def test_a_feed_that_hangs_times_out(peer: FeedPeer, client: FeedClient, name: str) -> None:
    peer.script.answers[name] = Hang()
    call = client.get_head() if name == "head" else client.get_tasks(0, 10, 0.5)
    assert "timed out" in await fails(call, "unreachable", within=6.0)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_cap_is_oversize_and_one_at_the_cap_is_read(
    peer: FeedPeer, client: FeedClient, chunked: bool
) -> None:
    peer.oversize("tasks", CAP, chunked=chunked)
    [task] = await client.get_tasks(0, 10, 0)
    assert len(task) == CAP - len(b'{"tasks":[""]}')
    peer.oversize("tasks", CAP + 1, chunked=chunked)
    await fails(client.get_tasks(0, 10, 0), "oversize")
    peer.oversize("head", CAP + 1, chunked=chunked)
    await fails(client.get_head(), "oversize")


async def test_a_body_that_never_ends_is_oversize_and_not_buffered(
    peer: FeedPeer, client: FeedClient
) -> None:
    peer.script.answers["tasks"] = Endless()
    await fails(client.get_tasks(0, 10, 0), "oversize", within=6.0)
    await fails(client.get_tasks(0, 10, 0), "oversize", within=6.0)  # and again, same client
    # The client hung up rather than read on (or leave the stream open to drain).
    for _ in range(100):
        if peer.hung_up == 2:
            break
        await asyncio.sleep(0.05)
    assert peer.hung_up == 2


JSON = "application/json"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(b"<html><body>Login</body></html>", content_type="text/html"),
        Reply(b'{"tasks": []}', content_type="text/plain"),
        Reply(b'{"tasks": []}', status=404),
        Reply(b'{"tasks": []}', status=500),
        Reply(b'{"tasks": []}', status=204),
        Reply(b"[]"),
        Reply(b"{}"),
        Reply(b'{"tasks": {}}'),
        Reply(b'{"tasks": "eyJ.x.y"}'),
        Reply(b'{"tasks": [1]}'),
        Reply(b'{"tasks": [null]}'),
        Reply(b'{"tasks": [["a.b.c"]]}'),
        Reply(b'{"tasks": [], "next": 4}'),
        Reply(b'{"tasks": [], "tasks": ["a.b.c"]}'),  # duplicate keys
        Reply(b'{"tasks": [NaN]}'),
        Reply(b'{"tasks": ["\\ud800"]}'),  # a lone surrogate
        Reply(b'\xef\xbb\xbf{"tasks": []}'),  # a byte order mark
        Reply(b'{"tasks": ["\xff"]}'),  # not UTF-8
        Reply(b'{"tasks": []'),  # truncated
        Reply(b""),
    ],
)
async def test_tasks_that_are_not_exactly_a_list_of_strings_are_garbage(
    peer: FeedPeer, client: FeedClient, reply: Reply
) -> None:
    peer.script.answers["tasks"] = reply
    await fails(client.get_tasks(0, 10, 0), "garbage")


@pytest.mark.parametrize(
    "reply",
    [
        Reply(b"<html>maintenance</html>", content_type="text/html", status=503),
        Reply(b"a.b.c", content_type=JSON),  # a JWS, but not said to be one
        Reply(b"a.b.c", content_type="application/jose", status=404),
        Reply(b"a.b.c", content_type="application/jose", status=302),
    ],
)
async def test_a_head_with_the_wrong_status_or_type_is_garbage(
    peer: FeedPeer, client: FeedClient, reply: Reply
) -> None:
    peer.script.answers["head"] = reply
    await fails(client.get_head(), "garbage")


async def test_what_the_client_does_not_judge_it_passes_on(
    peer: FeedPeer, client: FeedClient
) -> None:
    # Its job is the transport: a head's bytes and a task's, however wrong, are the puller's.
    peer.script.head_bytes = b"not-a-jws"
    assert await client.get_head() == b"not-a-jws"
    peer.script.answers["tasks"] = Reply(
        b'{"tasks": ["x", "\xd1\x8f"]}', content_type="application/json; charset=utf-8"
    )
    assert await client.get_tasks(0, 10, 0) == [b"x", "я".encode()]


async def test_a_client_recovers_after_a_failure(
    pki: Path, peer: FeedPeer, client: FeedClient
) -> None:
    peer.script.answers["tasks"] = Reply(b"oops", status=500)
    await fails(client.get_tasks(0, 10, 0), "garbage")
    del peer.script.answers["tasks"]
    assert await client.get_tasks(0, 10, 0) == tasks(pki, 1, 3)
