"""The reference feed server answers exactly task-protocol.md §6, over TLS, from a directory."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kzgate.cli import main
from kzgate.feed import server as server_module
from kzgate.feed.chain import chain_of
from kzgate.feed.client import FeedClient
from kzgate.feed.issuerlog import SESSION_FILE, load_directory, session_of
from kzgate.feed.ports import FeedError
from kzgate.feed.server import MAX_LIMIT, FeedServer
from kzgate.tls import server_context
from tests.integration.feed.helpers import (
    feed_config,
    get,
    payload_hash,
    read_head,
    seq_of,
    signer,
    tasks,
)

TLS_NAMES = ("tls/server.crt", "tls/server.key")


async def start(pki: Path, directory: Path, *, mutual: bool = False) -> FeedServer:
    log, known = load_directory(directory, signer(pki))
    server = FeedServer(
        log, session_of(directory, log), base="/mci", directory=directory, known=known
    )
    tls = server_context(
        pki / TLS_NAMES[0], pki / TLS_NAMES[1], pki / "tls/ca.crt" if mutual else None
    )
    await server.start("127.0.0.1", 0, tls)
    return server


def write_tasks(directory: Path, bodies: list[bytes]) -> None:
    for body in bodies:
        # written aside and renamed in, as a regulator should (a half-written .jws is refused)
        tmp = directory / f".{seq_of(body)}.tmp"
        tmp.write_bytes(body + b"\n")
        os.replace(tmp, directory / f"task-{seq_of(body)}.jws")


@pytest.fixture
async def served(pki: Path, tmp_path: Path) -> AsyncIterator[FeedServer]:
    write_tasks(tmp_path, tasks(pki, 1, 3))
    server = await start(pki, tmp_path)
    yield server
    await server.close()


def served_directory(server: FeedServer) -> Path:
    assert server.directory is not None
    return server.directory


def url(server: FeedServer, path: str) -> str:
    return f"https://127.0.0.1:{server.port}/mci{path}"


async def test_head_and_tasks_are_exactly_what_section_6_says(
    pki: Path, served: FeedServer
) -> None:
    status, ctype, body = await get(pki, url(served, "/head"))
    assert (status, ctype) == (200, "application/jose")
    head = read_head(pki, body)
    three = tasks(pki, 1, 3)
    assert (head.iss, head.seq) == ("mci", 3)
    assert head.chain == chain_of(payload_hash(t) for t in three)
    saved = json.loads((served_directory(served) / SESSION_FILE).read_text())
    assert head.session == saved["session"]
    assert (head.expires - head.issued_at).total_seconds() == 600

    status, ctype, body = await get(pki, url(served, "/tasks"), after=0, limit=2, wait=0)
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"tasks": [t.decode() for t in three[:2]]}
    _, _, body = await get(pki, url(served, "/tasks"), after=2, limit=100)
    assert json.loads(body) == {"tasks": [three[2].decode()]}
    started = time.monotonic()
    _, _, body = await get(pki, url(served, "/tasks"), after=3, limit=100, wait=0)
    assert json.loads(body) == {"tasks": []}
    assert time.monotonic() - started < 2  # wait=0: answered at once, not held


@pytest.mark.parametrize(
    "query",
    [{}, {"after": "x"}, {"after": -1}, {"after": 0, "limit": -1}, {"after": 0, "wait": "nan"}],
)
async def test_a_query_that_is_not_after_limit_wait_is_400(
    pki: Path, served: FeedServer, query: dict[str, Any]
) -> None:
    status, _, _ = await get(pki, url(served, "/tasks"), **query)
    assert status == 400


async def test_a_long_poll_returns_as_soon_as_a_task_is_published(
    pki: Path, served: FeedServer
) -> None:
    [fourth] = tasks(pki, 4, 4)
    poll = asyncio.create_task(get(pki, url(served, "/tasks"), after=3, limit=10, wait=30))
    await asyncio.sleep(0.3)
    assert not poll.done()  # held: nothing after 3 yet
    started = time.monotonic()
    assert served.publish(fourth) == 4
    status, _, body = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - started < 5  # well before wait=30 elapsed
    assert status == 200 and json.loads(body) == {"tasks": [fourth.decode()]}
    # published for good: in the directory, and the session file knows seq 4
    directory = served_directory(served)
    republished = load_directory(directory, signer(pki))[0]
    assert [seq_of(t) for t in republished.after(0, 9)] == [1, 2, 3, 4]
    assert json.loads((directory / SESSION_FILE).read_text())["seq"] == 4


async def test_a_long_poll_that_nothing_answers_ends_after_wait(
    pki: Path, served: FeedServer
) -> None:
    started = time.monotonic()
    _, _, body = await get(pki, url(served, "/tasks"), after=3, limit=10, wait=0.5)
    assert json.loads(body) == {"tasks": []}
    assert 0.4 < time.monotonic() - started < 5


async def test_files_that_appear_in_the_directory_are_published_in_seq_order(
    pki: Path, tmp_path: Path, served: FeedServer
) -> None:
    four, five = tasks(pki, 4, 5)
    (tmp_path / "junk.jws").write_bytes(b"not a task")  # logged and skipped, nothing else
    write_tasks(tmp_path, [five])  # 5 before 4: it waits for 4
    poll = asyncio.create_task(get(pki, url(served, "/tasks"), after=3, limit=10, wait=30))
    await asyncio.sleep(0.5)
    assert not poll.done() and served.log.seq == 3
    write_tasks(tmp_path, [four])
    _, _, body = await asyncio.wait_for(poll, 10)
    assert json.loads(body)["tasks"] == [four.decode(), five.decode()]
    head = read_head(pki, (await get(pki, url(served, "/head")))[2])
    assert head.seq == 5 and head.chain == chain_of(payload_hash(t) for t in tasks(pki, 1, 5))


async def test_limit_is_capped_and_a_page_stays_under_its_byte_cap(
    pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FeedServer(
        load_directory(tmp_path, signer(pki))[0], "3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10", base="mci"
    )
    for body in tasks(pki, 1, MAX_LIMIT + 5):
        server.log.append(body)
    assert len(await server.tasks(0, 5000, 0)) == MAX_LIMIT
    monkeypatch.setattr(server_module, "MAX_PAGE_BYTES", 3 * len(server.log.after(0, 1)[0]))
    assert len(server.page(0, 100)) == 2
    monkeypatch.setattr(server_module, "MAX_PAGE_BYTES", 10)
    assert len(server.page(0, 100)) == 1  # never empty when a task is there


async def test_the_session_survives_a_restart_and_changes_when_the_log_starts_over(
    pki: Path, tmp_path: Path
) -> None:
    write_tasks(tmp_path, tasks(pki, 1, 2))
    server = await start(pki, tmp_path)
    first = read_head(pki, (await get(pki, url(server, "/head")))[2])
    server.publish(tasks(pki, 3, 3)[0])
    await server.close()
    server = await start(pki, tmp_path)
    again = read_head(pki, (await get(pki, url(server, "/head")))[2])
    await server.close()
    assert (again.session, again.seq) == (first.session, 3)
    for path in tmp_path.glob("*.jws"):
        if seq_of(path.read_bytes()) == 3:
            path.unlink()
    server = await start(pki, tmp_path)
    over = read_head(pki, (await get(pki, url(server, "/head")))[2])
    await server.close()
    assert over.seq == 2 and over.session != first.session


async def test_mutual_tls_needs_a_client_certificate(pki: Path, tmp_path: Path) -> None:
    write_tasks(tmp_path, tasks(pki, 1, 1))
    server = await start(pki, tmp_path, mutual=True)
    try:
        where = f"https://127.0.0.1:{server.port}/mci"
        without = FeedClient(feed_config(where, pki, client_cert=False), 1 << 20)
        with pytest.raises(FeedError) as caught:
            await without.get_head()
        assert caught.value.kind == "unreachable"
        await without.close()
        client = FeedClient(feed_config(where, pki), 1 << 20)
        assert read_head(pki, await client.get_head()).seq == 1
        assert await client.get_tasks(0, 10, 0) == tasks(pki, 1, 1)
        await client.close()
    finally:
        await server.close()


def test_serve_refuses_to_start_when_the_directory_is_not_tasks_1_to_n(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tasks(tmp_path, [tasks(pki, 1, 1)[0], tasks(pki, 3, 3)[0]])
    code = main(serve_args(pki, tmp_path))
    assert code == 2
    assert "no task with seq 2" in capsys.readouterr().err


def serve_args(pki: Path, directory: Path) -> list[str]:
    return [
        "feed", "serve", "--dir", str(directory), "--iss", "mci",
        "--key", str(pki / "keys/mci-dev.key"), "--kid", "mci-dev",
        "--cert", str(pki / TLS_NAMES[0]), "--key-file", str(pki / TLS_NAMES[1]),
        "--client-ca", str(pki / "tls/ca.crt"), "--listen", "127.0.0.1:0", "--ttl", "60",
    ]  # fmt: skip


async def test_kzgate_feed_serve_publishes_a_directory(pki: Path, tmp_path: Path) -> None:
    write_tasks(tmp_path, tasks(pki, 1, 2))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kzgate", *serve_args(pki, tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        match = re.search(r"(https://127\.0\.0\.1:\d+/mci)$", line.strip())
        assert match, line
        client = FeedClient(feed_config(match.group(1), pki), 1 << 20)
        head = read_head(pki, await client.get_head())
        assert head.seq == 2 and (head.expires - head.issued_at).total_seconds() == 60
        assert await client.get_tasks(0, 10, 0) == tasks(pki, 1, 2)
        write_tasks(tmp_path, tasks(pki, 3, 3))
        assert await client.get_tasks(2, 10, 10) == tasks(pki, 3, 3)  # the watcher found it
        await client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
