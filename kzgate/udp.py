"""A UDP socket on the event loop whose datagrams go to one function.

The DNS listener, the RPZ transfer listener and the RPZ NOTIFY sender each
only need "this datagram came from there; here is how to answer it": the
asyncio protocol class around that is this one. An ICMP error reported for
an earlier datagram (a client gone away, a secondary down) changes nothing
for any of them, UDP having no connection to fail: it is logged at debug level.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger(__name__)

Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6
Reply = Callable[[bytes], None]  # sends one datagram back to where this one came from
Receive = Callable[[bytes, Address, Reply], None]


async def open_udp(
    receive: Receive,
    name: str,
    *,
    sock: socket.socket | None = None,
    remote: tuple[str, int] | None = None,
) -> asyncio.DatagramTransport:
    """Serve ``sock`` (bound already), or a new socket connected to ``remote``.

    ``receive`` is called with every datagram; ``name`` says in the log whose
    socket an ICMP error came to. Closing the transport closes the socket.
    """
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Datagrams(receive, name), sock=sock, remote_addr=remote
    )
    return transport


class _Datagrams(asyncio.DatagramProtocol):
    __slots__ = ("_name", "_receive", "_sendto")

    def __init__(self, receive: Receive, name: str) -> None:
        self._receive = receive
        self._name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sendto = cast(asyncio.DatagramTransport, transport).sendto

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._receive(data, addr, functools.partial(self._sendto, addr=addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: %s", self._name, exc)
