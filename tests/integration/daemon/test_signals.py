"""Signals as systemd sends them: SIGHUP reloads, SIGTERM drains, a second SIGTERM exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import yaml
from dnslib import DNSRecord

from tests.support.daemon_proc import DaemonProcess
from tests.support.kzfixtures import Regulator, push_task, write_config


def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def dns_rcode(port: int, name: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", port))
        return int(DNSRecord.parse(sock.recv(4096)).header.rcode)


async def post(port: int, pki: Path, body: bytes) -> tuple[int, dict[str, object]]:
    return await push_task(port, pki, body)


async def test_sighup_reloads_live_settings_and_refuses_a_bad_config(
    tmp_path: Path, pki: Path
) -> None:
    config = write_config(tmp_path, pki, dns={"listen": ["127.0.0.1:0"], "upstreams": []})
    sock = notify_socket(tmp_path)
    daemon = DaemonProcess(
        config, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    )
    await daemon.start()
    mci = Regulator(pki)
    loop = asyncio.get_running_loop()
    try:
        api, dns = daemon.ports["api"], daemon.ports["dns"]
        assert (await post(api, pki, mci.sign(mci.restrict("1", "domain:hup.kz"))))[0] == 200
        assert await loop.run_in_executor(None, dns_rcode, dns, "hup.kz") == 3  # NXDOMAIN

        # Live: block mode and a revoked key. Needs a restart: the API address.
        data = yaml.safe_load(config.read_text())
        data["dns"]["block_mode"] = "refused"
        data["issuers"][0]["keys"][0]["revoked"] = True
        data["api"]["listen"] = "127.0.0.1:1"
        config.write_text(yaml.safe_dump(data))
        daemon.signal(signal.SIGHUP)
        line = await daemon.wait_log("reloaded")
        assert "dns.block_mode" in line and "issuers" in line
        assert "needs a restart: api.listen" in line
        assert await loop.run_in_executor(None, dns_rcode, dns, "hup.kz") == 5  # REFUSED
        status, answer = await post(api, pki, mci.sign(mci.restrict("2", "domain:x.kz")))
        assert (status, answer["error"]) == (401, "unknown_key")  # still on the old port

        # A config that does not validate is refused whole; the running one stays.
        config.write_text("operator: {id: [not, a, string]}\n")
        daemon.signal(signal.SIGHUP)
        line = await daemon.wait_log("reload refused")
        assert "operator.id" in line
        assert await loop.run_in_executor(None, dns_rcode, dns, "hup.kz") == 5
        messages = received(sock)
        assert messages[0].startswith("READY=1")
        assert sum(m.startswith("RELOADING=1") for m in messages) == 2
        assert "MONOTONIC_USEC=" in next(m for m in messages if m.startswith("RELOADING=1"))
        assert messages[-1].startswith("READY=1")

        daemon.signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 15) == 0
        assert any(m.startswith("STOPPING=1") for m in received(sock))
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            daemon.kill()
            await daemon.wait()
        sock.close()


async def test_second_sigterm_exits_at_once(tmp_path: Path, pki: Path) -> None:
    config = write_config(tmp_path, pki, api={"drain_seconds": 30})
    daemon = DaemonProcess(config)
    await daemon.start()
    mci = Regulator(pki)
    try:
        # A request in flight keeps a graceful stop waiting (up to drain_seconds).
        big = mci.sign(mci.restrict("1", *[f"domain:d{i}.term.kz" for i in range(60_000)]))
        request = asyncio.create_task(post(daemon.ports["api"], pki, big))
        await asyncio.sleep(0.3)
        daemon.signal(signal.SIGTERM)
        await daemon.wait_log("draining")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.wait(), 10)
        assert code == 1
        assert time.monotonic() - started < 2
        await asyncio.gather(request, return_exceptions=True)
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            daemon.kill()
            await daemon.wait()
