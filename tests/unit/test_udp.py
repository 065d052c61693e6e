"""kzgate/udp.py on real loopback sockets: each datagram reaches ``receive``, a reply goes back."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from kzgate.udp import Address, Reply, open_udp


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def test_each_datagram_reaches_receive_and_reply_answers_its_sender() -> None:
    seen: list[tuple[bytes, Address]] = []

    def echo(data: bytes, addr: Address, reply: Reply) -> None:
        seen.append((data, addr))
        reply(data.upper())

    sock = bound_socket()
    port = sock.getsockname()[1]
    transport = await open_udp(echo, "test listener", sock=sock)
    loop = asyncio.get_running_loop()
    clients = [bound_socket(), bound_socket()]
    try:
        for i, client in enumerate(clients):
            await loop.sock_sendto(client, b"hello %d" % i, ("127.0.0.1", port))
        answers = [await asyncio.wait_for(loop.sock_recv(c, 100), 5) for c in clients]
        assert answers == [b"HELLO 0", b"HELLO 1"]  # each to its own sender
        assert seen == [(b"hello %d" % i, c.getsockname()) for i, c in enumerate(clients)]
    finally:
        transport.close()
        for client in clients:
            client.close()


async def test_an_icmp_error_is_logged_and_the_socket_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    closed = bound_socket()
    gone = closed.getsockname()
    closed.close()  # nobody listens there now: the kernel answers with port unreachable
    transport = await open_udp(
        lambda data, addr, reply: got.put_nowait(data), "NOTIFY to nowhere", remote=gone
    )
    try:
        with caplog.at_level(logging.DEBUG, logger="kzgate.udp"):
            transport.sendto(b"anyone?")
            async with asyncio.timeout(5):
                while not any("NOTIFY to nowhere" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.01)
        assert not transport.is_closing()
    finally:
        transport.close()


async def test_closing_the_transport_closes_the_socket() -> None:
    sock = bound_socket()
    transport = await open_udp(lambda data, addr, reply: None, "test", sock=sock)
    transport.close()
    await asyncio.sleep(0)  # the loop closes it on its next turn
    await asyncio.sleep(0)
    assert sock.fileno() == -1
