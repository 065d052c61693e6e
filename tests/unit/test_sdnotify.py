"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kzgate import sdnotify


class FakeSystemd:
    """A bound SOCK_DGRAM socket and the NOTIFY_SOCKET value that reaches it."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": address}

    def received(self) -> list[str]:
        """Every datagram waiting on the socket, decoded."""
        out: list[str] = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def one(self) -> dict[str, str]:
        (datagram,) = self.received()
        return dict(line.split("=", 1) for line in datagram.split("\n"))


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = tmp_path / "notify.sock"
        assert len(os.fsencode(path)) < 108, "sun_path too long for this tmp dir"
        sock.bind(str(path))
        address = str(path)
    else:
        name = f"kzgate-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.setblocking(False)
    with sock:
        yield FakeSystemd(sock, address)


def test_notify_sends_the_state(systemd: FakeSystemd) -> None:
    assert sdnotify.notify("READY=1", systemd.env) is True
    assert systemd.received() == ["READY=1"]


def test_notify_reads_os_environ_by_default(
    systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env["NOTIFY_SOCKET"])
    assert sdnotify.stopping() is True
    assert systemd.received() == ["STOPPING=1"]


def test_ready_with_status(systemd: FakeSystemd) -> None:
    assert sdnotify.ready("serving: api on 127.0.0.1:8443\nsecond line", systemd.env)
    assert systemd.one() == {
        "READY": "1",
        "STATUS": "serving: api on 127.0.0.1:8443 second line",  # one line, no injection
    }


def test_ready_without_status(systemd: FakeSystemd) -> None:
    assert sdnotify.ready(environ=systemd.env)
    assert systemd.received() == ["READY=1"]


def test_reloading_carries_monotonic_usec(systemd: FakeSystemd) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(systemd.env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = systemd.one()
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_stopping(systemd: FakeSystemd) -> None:
    assert sdnotify.stopping(systemd.env)
    assert systemd.received() == ["STOPPING=1"]


def test_status(systemd: FakeSystemd) -> None:
    assert sdnotify.status("draining", systemd.env)
    assert systemd.received() == ["STATUS=draining"]


async def test_watchdog_pings_every_half_interval(systemd: FakeSystemd) -> None:
    task = asyncio.create_task(sdnotify.watchdog(0.02, systemd.env))
    await asyncio.sleep(0.105)  # pings at 0, 10, 20, … ms: about ten
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pings = systemd.received()
    assert set(pings) == {"WATCHDOG=1"}
    assert 4 <= len(pings) <= 12


async def test_a_stalled_loop_stops_the_pings(systemd: FakeSystemd) -> None:
    task = asyncio.create_task(sdnotify.watchdog(0.02, systemd.env))
    await asyncio.sleep(0)  # the first ping
    systemd.received()
    time.sleep(0.1)  # the loop is blocked: nothing may be sent meanwhile
    assert systemd.received() == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_survives_a_missing_socket(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}
    task = asyncio.create_task(sdnotify.watchdog(0.02, env))
    await asyncio.sleep(0.05)
    assert not task.done()  # a failed ping is logged, not fatal
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        await sdnotify.watchdog(0)


def test_watchdog_interval_from_usec() -> None:
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": pid}) == 0.5


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"},
    ],
)
def test_watchdog_interval_off(env: dict[str, str]) -> None:
    assert sdnotify.watchdog_interval(env) is None


def test_watchdog_interval_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None


def test_no_notify_socket_is_a_quiet_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready("x") is False
    assert sdnotify.reloading() is False
    assert sdnotify.stopping() is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


async def test_watchdog_without_notify_socket_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    task = asyncio.create_task(sdnotify.watchdog(0.02))
    await asyncio.sleep(0.03)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
