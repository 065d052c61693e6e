"""The whole path as a subscriber sees it: a signed restrict, then `dig` through kzgate."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kzgate.config import load_config
from kzgate.daemon import Daemon
from tests.support.dnsfake import FakeDns
from tests.support.kzfixtures import Regulator, push_task, write_config

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")

ZONE = """
www.example.kz. 300 IN A 198.51.100.10
alias.other.kz. 300 IN CNAME www.example.kz.
"""


@pytest.fixture
async def running(tmp_path: Path, pki: Path) -> AsyncIterator[tuple[Daemon, FakeDns]]:
    upstream = FakeDns(ZONE)
    host, port = await upstream.start()
    cfg = load_config(
        write_config(
            tmp_path, pki, dns={"listen": ["127.0.0.1:0"], "upstreams": [f"{host}:{port}"]}
        )
    )
    daemon = Daemon(cfg)
    await daemon.start()
    yield daemon, upstream
    await daemon.stop()
    await upstream.close()


async def dig(daemon: Daemon, *args: str) -> str:
    port = daemon.bound["dns"][1]
    proc = await asyncio.create_subprocess_exec(
        "dig",
        "@127.0.0.1",
        "-p",
        str(port),
        "+tries=1",
        "+time=3",
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return out.decode()


async def push(daemon: Daemon, pki: Path, body: bytes) -> None:
    status, answer = await push_task(daemon.bound["api"][1], pki, body)
    assert status == 200, answer


async def test_restrict_and_resume_change_dig_answers_at_once(
    running: tuple[Daemon, FakeDns], pki: Path
) -> None:
    daemon, _ = running
    mci = Regulator(pki)
    out = await dig(daemon, "www.example.kz", "A")
    assert "status: NOERROR" in out and "198.51.100.10" in out

    await push(daemon, pki, mci.sign(mci.restrict("77-1", "domain:example.kz")))
    out = await dig(daemon, "WwW.ExAmple.kz", "A")  # from the cache if it were allowed
    assert "status: NXDOMAIN" in out
    assert "EDE: 16 (Censored)" in out and "77-1" in out and "2026-11-01" in out
    assert "WwW.ExAmple.kz" in out  # the client's case, echoed
    out = await dig(daemon, "www.example.kz", "A", "+tcp")
    assert "status: NXDOMAIN" in out
    # A CNAME into the restricted name is blocked too, even when the alias is not.
    out = await dig(daemon, "alias.other.kz", "A")
    assert "status: NXDOMAIN" in out and "198.51.100.10" not in out

    await push(daemon, pki, mci.sign(mci.resume("77-1")))
    out = await dig(daemon, "www.example.kz", "A")
    assert "status: NOERROR" in out and "198.51.100.10" in out


async def test_dns_metrics_count_verdicts(running: tuple[Daemon, FakeDns], pki: Path) -> None:
    daemon, _ = running
    mci = Regulator(pki)
    await push(daemon, pki, mci.sign(mci.restrict("1", "domain:example.kz")))
    await dig(daemon, "www.example.kz", "A")
    await dig(daemon, "nowhere.kz", "A")
    host, port = daemon.bound["metrics"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/metrics") as resp,
    ):
        text = await resp.text()
    assert 'kzgate_dns_queries_total{verdict="blocked"} 1.0' in text
    assert 'kzgate_dns_queries_total{verdict="forwarded"} 1.0' in text
    assert "kzgate_dns_upstream_seconds_count 1.0" in text
