"""NOTIFY: the message and what acknowledges it (pure), the retries on a real loopback socket."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from kzgate.config import HostPort
from kzgate.rpz.notify import ATTEMPTS, MAX_REPLIES, Notifier, is_ack, notify_message, queue_replies

ORIGIN = "rpz.kzgate."
KEYNAME = dns.name.from_text("kzgate-xfr.")
KEY = dns.tsig.Key(KEYNAME, base64.b64encode(bytes(range(32))).decode(), "hmac-sha256")
OTHER_KEY = dns.tsig.Key(KEYNAME, base64.b64encode(bytes(32)).decode(), "hmac-sha256")


def soa(serial: int) -> dns.rrset.RRset:
    text = f"localhost. hostmaster.{ORIGIN} {serial} 3600 600 86400 60"
    return dns.rrset.from_text(ORIGIN, 60, "IN", "SOA", text)


def ack_of(
    query: dns.message.Message, key: dns.tsig.Key | None = None, rcode: int = dns.rcode.NOERROR
) -> bytes:
    reply = dns.message.make_response(query)  # signed with the query's key, if it had one
    reply.set_rcode(dns.rcode.Rcode(rcode))
    if key is None:
        reply.tsig, reply.keyring = None, None
    else:
        reply.use_tsig(key)
    return reply.to_wire()


def test_the_message_is_an_authoritative_notify_carrying_the_soa() -> None:
    msg = notify_message(soa(7), None)
    assert msg.opcode() == dns.opcode.NOTIFY
    assert msg.flags & dns.flags.AA
    assert not msg.flags & (dns.flags.RD | dns.flags.QR)
    (question,) = msg.question
    assert (question.name.to_text(), question.rdtype) == (ORIGIN, dns.rdatatype.SOA)
    (answer,) = msg.answer
    assert answer[0].serial == 7  # RFC 1996 3.7: the secondary may skip its SOA query
    assert not msg.had_tsig


def test_with_a_key_the_message_is_signed() -> None:
    msg = notify_message(soa(7), KEY)
    wire = msg.to_wire()
    parsed = dns.message.from_wire(wire, keyring={KEYNAME: KEY})
    assert parsed.had_tsig and parsed.opcode() == dns.opcode.NOTIFY


def test_a_matching_noerror_response_acknowledges() -> None:
    query = notify_message(soa(7), None)
    query.to_wire()
    assert is_ack(ack_of(query), query, None)


def test_a_signed_ack_must_carry_a_valid_signature() -> None:
    query = notify_message(soa(7), KEY)
    query.to_wire()  # signs; the reply's MAC covers this query's
    assert is_ack(ack_of(query, KEY), query, KEY)
    assert not is_ack(ack_of(query, OTHER_KEY), query, KEY)
    assert not is_ack(ack_of(query), query, KEY)  # unsigned, while the query was signed


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: setattr(r, "id", (r.id + 1) % 65536),  # another query's answer
        lambda r: setattr(r, "flags", r.flags & ~dns.flags.QR),  # a query, not a response
        lambda r: r.set_opcode(dns.opcode.QUERY),  # not a NOTIFY response
        lambda r: r.set_rcode(dns.rcode.REFUSED),  # the secondary said no
    ],
    ids=["id", "qr", "opcode", "rcode"],
)
def test_anything_else_is_not_an_ack(spoil: Callable[[dns.message.Message], None]) -> None:
    query = notify_message(soa(7), None)
    query.to_wire()
    reply = dns.message.make_response(query)
    spoil(reply)
    assert not is_ack(reply.to_wire(), query, None)


@pytest.mark.parametrize("junk", [b"", b"\x00" * 11, b"\xff" * 64])
def test_garbage_is_not_an_ack(junk: bytes) -> None:
    query = notify_message(soa(7), None)
    query.to_wire()
    assert not is_ack(junk, query, None)


def test_replies_beyond_the_bound_are_dropped() -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_REPLIES)
    receive = queue_replies(queue)
    for i in range(MAX_REPLIES + 5):
        receive(bytes([i]), ("127.0.0.1", 53), lambda answer: None)
    assert queue.qsize() == MAX_REPLIES
    assert queue.get_nowait() == b"\x00"  # the first ones kept, the latest dropped


class Secondary(asyncio.DatagramProtocol):
    """A secondary on 127.0.0.1 that acknowledges a NOTIFY on its ``ack_on``-th copy.

    It checks the NOTIFY's signature with ``key`` and signs its answer with
    ``sign_with`` (``key`` unless told).
    """

    def __init__(
        self,
        ack_on: int = 1,
        key: dns.tsig.Key | None = None,
        sign_with: dns.tsig.Key | None = None,
    ) -> None:
        self.ack_on = ack_on
        self.key = key
        self.sign_with = sign_with or key
        self.serials: list[int] = []  # of every NOTIFY received, in order
        self.times: list[float] = []  # when each arrived, on the loop's clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.times.append(asyncio.get_running_loop().time())
        keyring = {KEYNAME: self.key} if self.key else None
        query = dns.message.from_wire(data, keyring=keyring)
        serial = query.answer[0][0].serial
        self.serials.append(serial)
        if self.serials.count(serial) >= self.ack_on and self.transport is not None:
            reply = dns.message.make_response(query)
            if self.sign_with is not None:
                reply.use_tsig(self.sign_with)
            self.transport.sendto(reply.to_wire(), addr)


Start = Callable[[Secondary], Awaitable[HostPort]]


@pytest.fixture
async def secondaries() -> AsyncIterator[Start]:
    opened: list[asyncio.DatagramTransport] = []
    loop = asyncio.get_running_loop()

    async def start(protocol: Secondary) -> HostPort:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: protocol, local_addr=("127.0.0.1", 0)
        )
        opened.append(transport)
        return HostPort("127.0.0.1", transport.get_extra_info("sockname")[1])

    yield start
    for transport in opened:
        transport.close()


async def settle(counts: list[str], last: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not counts or counts[-1] != last:
            await asyncio.sleep(0.005)


async def received(peer: Secondary, n: int) -> None:
    async with asyncio.timeout(5.0):
        while len(peer.serials) < n:
            await asyncio.sleep(0.005)


async def test_an_acknowledged_notify_is_counted_once_sent_once_acked(secondaries: Start) -> None:
    peer = Secondary(key=KEY)
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], KEY, counts.append, first_wait=0.5)
    notifier.notify(soa(5))
    await settle(counts, "acked")
    assert counts == ["sent", "acked"] and peer.serials == [5]
    await notifier.close()


async def test_a_lost_notify_is_sent_again_until_acknowledged(secondaries: Start) -> None:
    peer = Secondary(ack_on=3)
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], None, counts.append, first_wait=0.02)
    notifier.notify(soa(5))
    await settle(counts, "acked")
    assert counts == ["sent", "sent", "sent", "acked"] and peer.serials == [5, 5, 5]
    await notifier.close()


async def test_no_answer_at_all_fails_after_the_last_attempt(secondaries: Start) -> None:
    peer = Secondary(ack_on=ATTEMPTS + 1)
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], None, counts.append, first_wait=0.01)
    notifier.notify(soa(5))
    await settle(counts, "failed")
    assert counts == ["sent"] * ATTEMPTS + ["failed"] and len(peer.serials) == ATTEMPTS
    await notifier.close()


async def test_each_retransmission_waits_twice_as_long(secondaries: Start) -> None:
    peer = Secondary(ack_on=ATTEMPTS + 1)
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], None, counts.append, first_wait=0.02)
    notifier.notify(soa(5))
    await settle(counts, "failed")
    gaps = [b - a for a, b in itertools.pairwise(peer.times)]
    # the i-th wait is first_wait * 2**i; a busy machine can only make it longer
    assert len(gaps) == ATTEMPTS - 1
    assert all(gap >= 0.9 * 0.02 * 2**i for i, gap in enumerate(gaps)), gaps
    await notifier.close()


async def test_an_ack_with_a_bad_signature_does_not_count(secondaries: Start) -> None:
    peer = Secondary(key=KEY, sign_with=OTHER_KEY)  # every "ack" is forged
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], KEY, counts.append, first_wait=0.01)
    notifier.notify(soa(5))
    await settle(counts, "failed")
    assert counts == ["sent"] * ATTEMPTS + ["failed"] and len(peer.serials) == ATTEMPTS
    await notifier.close()


async def test_a_newer_serial_cancels_the_retries_of_the_older(secondaries: Start) -> None:
    peer = Secondary(ack_on=ATTEMPTS + 1)  # never acknowledges
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], None, counts.append, first_wait=0.3)
    notifier.notify(soa(5))
    await received(peer, 1)
    peer.ack_on = 1
    notifier.notify(soa(6))
    await settle(counts, "acked")
    await asyncio.sleep(0.5)  # serial 5 would have been sent again by now
    assert peer.serials == [5, 6]
    assert counts == ["sent", "sent", "acked"]
    await notifier.close()


async def test_every_target_is_notified(secondaries: Start) -> None:
    peers = [Secondary(), Secondary()]
    counts: list[str] = []
    notifier = Notifier([await secondaries(p) for p in peers], None, counts.append)
    notifier.notify(soa(9))
    async with asyncio.timeout(5):
        while counts.count("acked") < 2:
            await asyncio.sleep(0.005)
    assert [p.serials for p in peers] == [[9], [9]]
    await notifier.close()


async def test_close_stops_the_retries(secondaries: Start) -> None:
    peer = Secondary(ack_on=ATTEMPTS + 1)
    counts: list[str] = []
    notifier = Notifier([await secondaries(peer)], None, counts.append, first_wait=0.3)
    notifier.notify(soa(5))
    await received(peer, 1)
    await notifier.close()
    await asyncio.sleep(0.5)  # it would have been sent again by now
    assert counts == ["sent"] and peer.serials == [5]


async def test_a_target_that_cannot_be_reached_counts_as_failed() -> None:
    counts: list[str] = []
    # a broadcast address without SO_BROADCAST: the socket cannot even be connected
    notifier = Notifier([HostPort("255.255.255.255", 53)], None, counts.append)
    notifier.notify(soa(5))
    await settle(counts, "failed")
    assert counts == ["failed"]
    await notifier.close()
