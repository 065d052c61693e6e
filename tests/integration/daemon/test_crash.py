"""No acknowledged task is ever lost: SIGKILL the daemon at random points while tasks stream in."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support.daemon_proc import DaemonProcess
from tests.support.kzfixtures import Regulator, client_ssl, write_config

TRIALS = 50
CLIENTS = 4


async def test_sigkill_never_loses_an_acknowledged_task(tmp_path: Path, pki: Path) -> None:
    config = write_config(tmp_path, pki, api={"rate_limit": {"per_second": 1e6, "burst": 10**6}})
    mci = Regulator(pki)
    rng = random.Random(20261123)
    acked_restricts: set[str] = set()  # instruction numbers acknowledged as restricted
    acked_resumes: set[str] = set()  # instruction numbers acknowledged as resumed
    sent_resumes: set[str] = set()  # resumes sent, acknowledged or not
    counter = iter(range(1, 10**9))

    for trial in range(TRIALS):
        daemon = DaemonProcess(config)
        await daemon.start()
        base = f"https://127.0.0.1:{daemon.ports['api']}"
        connector = aiohttp.TCPConnector(ssl=client_ssl(pki), limit=CLIENTS)
        async with aiohttp.ClientSession(connector=connector) as session:
            await check_in_force(session, base, acked_restricts, acked_resumes, sent_resumes, trial)

            async def stream(base: str = base) -> None:
                while True:
                    n = next(counter)
                    resumable = sorted(acked_restricts - sent_resumes)
                    if n % 3 == 0 and resumable:
                        number = rng.choice(resumable)
                        sent_resumes.add(number)
                        task = mci.resume(number)
                    else:
                        number = str(n)
                        task = mci.restrict(number, f"domain:n{n}.crash.kz")
                    async with session.post(
                        base + "/v1/tasks",
                        data=mci.sign(task),
                        headers={"Content-Type": "application/jose"},
                    ) as resp:
                        body = await resp.json()
                    assert resp.status in (200, 202), body
                    (acked_resumes if task["type"] == "resume" else acked_restricts).add(number)

            workers = [asyncio.create_task(stream()) for _ in range(CLIENTS)]
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            daemon.kill()
            await daemon.wait()
            results = await asyncio.gather(*workers, return_exceptions=True)
            for result in results:
                # Only the kill itself may break a request in flight.
                assert isinstance(result, aiohttp.ClientError | asyncio.TimeoutError), result

    daemon = DaemonProcess(config)
    await daemon.start()
    base = f"https://127.0.0.1:{daemon.ports['api']}"
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    async with aiohttp.ClientSession(connector=connector) as session:
        await check_in_force(session, base, acked_restricts, acked_resumes, sent_resumes, TRIALS)
    daemon.kill()
    await daemon.wait()
    assert len(acked_restricts) > TRIALS, "the stream should have acknowledged tasks"
    verify = subprocess.run(
        [sys.executable, "-m", "kzgate", "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert "audit chain ok" in verify.stdout


async def check_in_force(
    session: aiohttp.ClientSession,
    base: str,
    restricted: set[str],
    resumed: set[str],
    resume_sent: set[str],
    trial: int,
) -> None:
    """Acknowledged restricts not since resumed are blocked; acknowledged resumes lifted."""
    for number in sorted(restricted):
        async with session.get(base + f"/v1/lookup?name=x.n{number}.crash.kz") as resp:
            verdict = (await resp.json())["verdict"]
        if number in resumed:
            assert verdict == "allowed", (trial, number)
        elif number not in resume_sent:
            assert verdict == "blocked", (trial, number)
