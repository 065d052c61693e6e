"""Which upstream reply answers which query (RFC 5452), without sockets.

The failover, TCP and spoofing behaviour on real sockets is in
tests/integration/dns/test_upstream.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from dnslib import DNSRecord

from kzgate.dns.upstream import Upstreams, _Channel, _key, _question
from tests.support.dnsmsg import query

NAME = "Example.KZ"  # mixed case: the question keeps it, the key folds it


def reply_to(message: bytes, *, qid: int | None = None, name: str | None = None) -> bytes:
    record = DNSRecord.parse(message).reply()
    if qid is not None:
        record.header.id = qid
    if name is not None:
        record.q.qname = name  # type: ignore[assignment]
    return bytes(record.pack())


def test_the_question_is_the_name_lower_cased_with_type_and_class_as_sent() -> None:
    assert _question(query("WwW.Example.KZ", "AAAA")) == (
        b"\x03www\x07example\x02kz\x00" + b"\x00\x1c\x00\x01"
    )
    assert _question(query("www.example.kz", "AAAA")) == _question(query("WWW.EXAMPLE.KZ", "AAAA"))
    assert _question(query(NAME, qtype="A")) != _question(query(NAME, qtype="AAAA"))


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x00" * 12,  # a header and nothing after it
        b"\x00" * 12 + b"\x03www",  # the name runs off the end
        b"\x00" * 12 + b"\x03www\x00\x00\x01\x00",  # QCLASS cut short
        b"\x00" * 12 + b"\xc0\x0c\x00\x01\x00\x01",  # a compression pointer in a question
        b"\x00" * 12 + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # a reserved label type
    ],
    ids=["empty", "header-only", "name-cut", "class-cut", "pointer", "reserved-label"],
)
def test_no_question_in_a_broken_message(message: bytes) -> None:
    assert _question(message) is None
    assert _key(message) is None


def test_the_key_is_the_id_and_the_question() -> None:
    q = query(NAME, qid=0xBEEF)
    assert _key(q) == (0xBEEF, _question(q))


async def waiting(chan: _Channel, message: bytes) -> asyncio.Future[bytes]:
    key = _key(message)
    assert key is not None
    fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    chan.pending[key] = fut
    return fut


async def test_a_reply_resolves_the_query_with_its_id_and_question() -> None:
    chan = _Channel()
    q = query("example.kz", qid=7)
    fut = await waiting(chan, q)
    other = await waiting(chan, query("other.kz", qid=7))
    answer = reply_to(q, name="EXAMPLE.kz")  # the case may differ (0x20)
    chan.datagram_received(answer, ("192.0.2.53", 53))
    assert fut.done() and fut.result() == answer
    assert not other.done()


@pytest.mark.parametrize(
    "spoof",
    [
        lambda q: reply_to(q, qid=8),  # a guessed wrong ID
        lambda q: reply_to(q, name="other.kz"),  # another question
        lambda q: q,  # a query, not a reply (QR clear)
        lambda q: reply_to(q)[:11],  # shorter than a header
        lambda q: reply_to(q)[:20],  # the question cut off
    ],
    ids=["id", "question", "not-a-reply", "short", "cut"],
)
async def test_anything_else_is_ignored(spoof: Callable[[bytes], bytes]) -> None:
    chan = _Channel()
    q = query("example.kz", qid=7)
    fut = await waiting(chan, q)
    chan.datagram_received(spoof(q), ("192.0.2.53", 53))
    assert not fut.done()
    chan.datagram_received(reply_to(q), ("192.0.2.53", 53))  # the real one still gets through
    assert fut.done()


async def test_a_second_reply_to_an_answered_query_changes_nothing() -> None:
    chan = _Channel()
    q = query(NAME, qid=7)
    fut = await waiting(chan, q)
    first = reply_to(q)
    chan.datagram_received(first, ("192.0.2.53", 53))
    chan.datagram_received(first + b"\x00", ("192.0.2.53", 53))
    assert fut.result() == first


async def test_an_icmp_error_fails_every_waiting_query_at_once() -> None:
    chan = _Channel()
    futs = [await waiting(chan, query(NAME, qid=i)) for i in range(3)]
    chan.error_received(ConnectionRefusedError())
    for fut in futs:
        with pytest.raises(ConnectionRefusedError):
            fut.result()


async def test_a_closed_socket_fails_the_waiting_queries_and_is_forgotten() -> None:
    chan = _Channel()
    chan.connection_made(asyncio.DatagramTransport())
    fut = await waiting(chan, query(NAME))
    chan.connection_lost(None)
    assert chan.transport is None
    with pytest.raises(ConnectionError):
        fut.result()


async def test_a_message_without_a_question_is_not_sent_anywhere() -> None:
    upstreams = Upstreams([("192.0.2.53", 53)])  # never started: no socket to send on
    assert await upstreams.query(b"\x00" * 12) is None
    assert upstreams._channels == [None]


async def test_once_closed_no_socket_is_opened() -> None:
    upstreams = Upstreams([("127.0.0.1", 9)])
    await upstreams.close()
    assert await upstreams.query(query(NAME)) is None
    assert upstreams._channels == [None]
