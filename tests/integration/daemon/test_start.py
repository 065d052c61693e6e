"""A start that fails part-way: one clear line, and nothing it started is left running."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kzgate.config import load_config
from kzgate.daemon import Daemon, StartupError
from kzgate.dns.workers import WorkerPool
from tests.support.kzfixtures import write_config


async def test_an_rpz_port_taken_stops_the_start_and_the_dns_workers_with_it(
    tmp_path: Path, pki: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        rpz = {"enabled": True, "listen": [f"127.0.0.1:{port}"], "notify": []}
        daemon = Daemon(load_config(write_config(tmp_path, pki, rpz=rpz)))
        with pytest.raises(StartupError, match=r"^cannot listen for rpz: "):
            await daemon.start()
    assert daemon.enforcers is not None
    pool = daemon.enforcers["dns-workers"]
    assert isinstance(pool, WorkerPool)
    # The workers were forked (the RPZ listener comes after them) and are gone again.
    pids = [w.pid for w in pool.workers.values()]
    assert pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already
    assert daemon.pipeline is None and "api" not in daemon.bound
    await daemon.stop()  # the caller's stop after a failed start is harmless
