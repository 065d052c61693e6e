"""NOTIFY (RFC 1996) to the secondaries, in the background, with retries.

Each secondary has at most one NOTIFY in flight: a newer serial cancels the
retries of the older one (the secondary will fetch the newest anyway). The
message carries the new SOA in its answer section (RFC 1996 section 3.7), so
a secondary may skip its SOA query. Retries back off 1, 2, 4, 8 s (section
3.6 asks for retransmission until acknowledged, within a bounded effort).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig

from kzgate.config import HostPort
from kzgate.udp import Address, Receive, Reply, open_udp

log = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_WAIT = 1.0  # seconds before the first retransmission; doubles each time
# Replies kept unread per NOTIFY: the socket is connected, so only the target's
# address gets here, but a forged flood from it must not grow memory; the
# acknowledgement is one of the first few datagrams.
MAX_REPLIES = 64

Count = Callable[[str], None]  # outcome: sent | acked | failed


def notify_message(soa: dns.rrset.RRset, key: dns.tsig.Key | None) -> dns.message.Message:
    msg = dns.message.make_query(soa.name, dns.rdatatype.SOA)
    msg.flags = dns.flags.AA  # no RD: NOTIFY is not recursive (opcode set after: it lives in flags)
    msg.set_opcode(dns.opcode.NOTIFY)
    msg.answer.append(soa)
    if key is not None:
        msg.use_tsig(key)
    return msg


def is_ack(data: bytes, query: dns.message.Message, key: dns.tsig.Key | None) -> bool:
    """``data`` acknowledges ``query``: same id, NOTIFY response, NOERROR, TSIG valid."""
    try:
        reply = dns.message.from_wire(
            data, keyring=key if key is not None else None, request_mac=query.mac or b""
        )
    except dns.exception.DNSException:
        return False
    return (
        reply.id == query.id
        and bool(reply.flags & dns.flags.QR)
        and reply.opcode() == dns.opcode.NOTIFY
        and reply.rcode() == dns.rcode.NOERROR
    )


class Notifier:
    def __init__(
        self,
        targets: Sequence[HostPort],
        key: dns.tsig.Key | None,
        count: Count,
        first_wait: float = FIRST_WAIT,
    ) -> None:
        self._targets = list(targets)
        self._key = key
        self._count = count
        self.first_wait = first_wait
        self._inflight: dict[HostPort, asyncio.Task[None]] = {}

    def notify(self, soa: dns.rrset.RRset) -> None:
        """Start (or restart) a NOTIFY of ``soa`` to every target; returns at once."""
        for target in self._targets:
            old = self._inflight.pop(target, None)
            if old is not None:
                old.cancel()
            task = asyncio.get_running_loop().create_task(self._send(target, soa))
            self._inflight[target] = task
            task.add_done_callback(functools.partial(self._forget, target))

    def _forget(self, target: HostPort, task: asyncio.Task[None]) -> None:
        if self._inflight.get(target) is task:
            del self._inflight[target]

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, target: HostPort, soa: dns.rrset.RRset) -> None:
        replies: asyncio.Queue[bytes] = asyncio.Queue(MAX_REPLIES)
        try:
            # an ICMP error (the secondary is down) is only logged: the retries cover it
            transport = await open_udp(
                queue_replies(replies), f"RPZ NOTIFY to {target}", remote=(target.host, target.port)
            )
        except OSError as exc:
            log.warning("RPZ NOTIFY to %s: %s", target, exc)
            self._count("failed")
            return
        try:
            query = notify_message(soa, self._key)
            wire = query.to_wire()  # signs, and sets query.mac for checking the reply
            wait = self.first_wait
            for _ in range(ATTEMPTS):
                transport.sendto(wire)
                self._count("sent")
                if await _acked(replies, query, self._key, wait):
                    self._count("acked")
                    return
                wait *= 2
            log.warning("RPZ NOTIFY to %s: no answer after %d attempts", target, ATTEMPTS)
            self._count("failed")
        finally:
            transport.close()


async def _acked(
    replies: asyncio.Queue[bytes],
    query: dns.message.Message,
    key: dns.tsig.Key | None,
    wait: float,
) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(replies.get(), left)
        except TimeoutError:
            return False
        if is_ack(data, query, key):
            return True
    return False


def queue_replies(queue: asyncio.Queue[bytes]) -> Receive:
    """Put each reply in ``queue``; when it is full, drop it, as a full socket would."""

    def receive(data: bytes, addr: Address, reply: Reply) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(data)

    return receive
