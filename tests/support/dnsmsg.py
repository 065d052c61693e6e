"""DNS messages as the tests' clients send them: queries, TCP framing, one UDP exchange.

One builder for every test that needs a query's bytes, so that a query with EDNS,
DO or CD is built the same way wherever it is asked (dnslib does the encoding).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import dnslib


def query(
    name: str,
    qtype: str = "A",
    *,
    qid: int = 0x1234,
    rd: bool = True,
    cd: bool = False,
    edns: bool = False,
    do: bool = False,
    udp: int = 1232,
    version: int = 0,
    options: list[dnslib.EDNSOption] | None = None,
) -> bytes:
    """One question for ``name``; with ``edns`` an OPT record (``udp``, DO, version, options)."""
    record = dnslib.DNSRecord(
        dnslib.DNSHeader(id=qid, rd=int(rd), cd=int(cd)),
        q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)),
    )
    if edns:
        flags = "do" if do else ""
        record.add_ar(dnslib.EDNS0(udp_len=udp, flags=flags, version=version, opts=options or []))
    return bytes(record.pack())


def rcode(answer: bytes | None) -> int:
    assert answer is not None, "no answer"
    return answer[3] & 0x0F


def frame(message: bytes) -> bytes:
    """A message as DNS over TCP sends it: behind its two-octet length (RFC 1035 4.2.2)."""
    return struct.pack("!H", len(message)) + message


async def read_framed(reader: asyncio.StreamReader, wait: float = 3.0) -> bytes:
    """The next length-prefixed message; TimeoutError after ``wait`` seconds."""
    async with asyncio.timeout(wait):
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)


async def udp_exchange(
    port: int, data: bytes, *, source: str | None = None, wait: float = 2.0
) -> bytes | None:
    """Send one datagram to 127.0.0.1:``port`` (from ``source``, if given); the first answer,
    or None after ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.put_nowait(data)

    local = None if source is None else (source, 0)
    transport, _ = await loop.create_datagram_endpoint(
        Client, local_addr=local, remote_addr=("127.0.0.1", port)
    )
    try:
        transport.sendto(data)
        return await asyncio.wait_for(answers.get(), wait)
    except TimeoutError:
        return None
    finally:
        transport.close()
