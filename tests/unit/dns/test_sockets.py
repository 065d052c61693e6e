"""Listeners (dns/sockets.py): every UDP+TCP pair a DNS-speaking server binds, and undoes.

Real sockets on 127.0.0.1: what is under test is which sockets are open after
each step, counted in /proc/self/fd.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from kzgate.config import HostPort
from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.server import DnsServer
from kzgate.dns.sockets import Closable, Listeners
from kzgate.dns.types import BlockSettings
from kzgate.dns.upstream import Upstreams
from kzgate.policy import PolicyIndex
from kzgate.udp import open_udp


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def port_is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            # as the listeners bind: a closed connection in TIME_WAIT does not hold the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


async def read_udp(sock: socket.socket) -> Closable:
    return await open_udp(lambda data, addr, reply: reply(b"udp:" + data), "test", sock=sock)


async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"tcp:" + await reader.read(100))
    await writer.drain()
    writer.close()


async def test_one_port_for_udp_and_tcp_both_served_and_freed_on_close() -> None:
    listeners = Listeners(read_udp, serve_tcp)
    host, port = await listeners.listen("127.0.0.1", 0)
    assert (host, port) == ("127.0.0.1", listeners.bound[0].udp.getsockname()[1])
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        await loop.sock_sendto(client, b"hi", (host, port))
        assert await asyncio.wait_for(loop.sock_recv(client, 100), 5) == b"udp:hi"
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"hi")
    assert await asyncio.wait_for(reader.read(100), 5) == b"tcp:hi"
    writer.close()
    await listeners.close()
    await asyncio.sleep(0.01)
    assert listeners.bound == [] and port_is_free(port)


async def test_close_ends_the_tcp_connections_still_being_served() -> None:
    ended: list[str] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            writer.close()
            raise

    listeners = Listeners(read_udp, hang)
    _, port = await listeners.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(5):
        while not listeners._clients:
            await asyncio.sleep(0.005)
    await listeners.close()
    assert ended == ["cancelled"] and not listeners._clients
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the client sees the end
    writer.close()


async def test_start_listens_on_every_address_or_on_none() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        before = open_fds()
        listeners = Listeners(read_udp, serve_tcp)
        busy = HostPort("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError) as caught:
            await listeners.start([HostPort("127.0.0.1", 0), busy])
        await asyncio.sleep(0.01)
        assert listeners.bound == [] and open_fds() == before
        del caught
        both = await listeners.start([HostPort("127.0.0.1", 0), HostPort("127.0.0.1", 0)])
        assert len(both) == 2 and both[0] != both[1]
        await listeners.close()
    finally:
        taken.close()


async def test_when_reading_udp_cannot_start_both_sockets_are_closed() -> None:
    async def broken(sock: socket.socket) -> Closable:
        raise OSError("no reader")

    before = open_fds()
    listeners = Listeners(broken, serve_tcp)
    # the traceback keeps the sockets referenced: closed now, not by the garbage collector
    with pytest.raises(OSError, match="no reader") as caught:
        await listeners.listen("127.0.0.1", 0)
    assert listeners.bound == [] and open_fds() == before
    del caught


async def test_when_tcp_cannot_start_the_udp_reader_is_closed_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readers: list[asyncio.BaseTransport] = []

    async def tracked(sock: socket.socket) -> Closable:
        transport = await read_udp(sock)
        readers.append(transport)  # type: ignore[arg-type]
        return transport

    async def no_server(*args: object, **kwargs: object) -> asyncio.Server:
        raise OSError("no server")

    monkeypatch.setattr(asyncio, "start_server", no_server)
    before = open_fds()
    listeners = Listeners(tracked, serve_tcp)
    with pytest.raises(OSError, match="no server") as caught:
        await listeners.listen("127.0.0.1", 0)
    await asyncio.sleep(0.01)
    assert readers[0].is_closing() and listeners.bound == [] and open_fds() == before
    del caught


UDP_PATHS = [
    pytest.param(FAST, id="udp-c", marks=pytest.mark.skipif(FAST is None, reason="not built")),
    pytest.param(None, id="udp-python"),
]


@pytest.mark.parametrize("fast", UDP_PATHS)
async def test_a_dns_server_closes_its_sockets_on_either_udp_path(fast: FastModule | None) -> None:
    server = DnsServer(
        Engine(PolicyIndex(), BlockSettings()), Upstreams([]), [HostPort("127.0.0.1", 0)], fast=fast
    )
    ((_, port),) = await server.start()
    (bound,) = server._listeners.bound
    await server.close()
    await asyncio.sleep(0.01)
    assert bound.udp.fileno() == -1 and port_is_free(port)


@pytest.mark.parametrize("fast", UDP_PATHS)
async def test_a_dns_server_that_cannot_bind_every_address_keeps_none(
    fast: FastModule | None,
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        before = open_fds()
        listen = [HostPort("127.0.0.1", 0), HostPort("127.0.0.1", taken.getsockname()[1])]
        engine = Engine(PolicyIndex(), BlockSettings())
        server = DnsServer(engine, Upstreams([]), listen, fast=fast)
        with pytest.raises(OSError):
            await server.start()
        await asyncio.sleep(0.01)
        assert open_fds() == before  # the first address, bound, was let go again
    finally:
        taken.close()
