"""Our side of the §6 consistency check: the chain over what we hold, and where the
feed's log differs from it.

The chain over an issuer's stored payloads is extended from the last value
computed, never rehashed from seq 1 each round; a large stretch is hashed off
the event loop. When the chains differ, the feed's log is read again to name
the first seq whose payload differs (kzgate stores every payload, so it can).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kzgate.feed.chain import ZERO, extend, first_difference
from kzgate.feed.head import Head
from kzgate.feed.order import feed_hash
from kzgate.feed.ports import FeedError, FeedSink

log = logging.getLogger("kzgate.feed")

HASH_CHUNK = 10_000  # stored payload hashes read from the register at a time
INLINE_HASHES = 2000  # more than this are hashed off the event loop

# (after, upto) -> the feed's tasks after ``after`` through at most ``upto``, in
# order, and the order fault that cut the page short, if any.
ReadPage = Callable[[int, int], Awaitable[tuple[list[bytes], str | None]]]


class OurChain:
    """c(n) over one issuer's stored payloads, and the first seq that differs from the feed."""

    def __init__(self, iss: str, sink: FeedSink) -> None:
        self.iss = iss
        self.sink = sink
        self._chain: tuple[int, bytes] = (0, ZERO)  # (n, c(n))
        self._divergence: tuple[str, int] | None = None  # (session, first differing seq)

    def forget_divergence(self) -> None:
        """A new session, or the chains agree again: the differing seq found is void."""
        self._divergence = None

    async def chain_at(self, n: int) -> bytes | None:
        """c(n) over our stored payloads, extended from the last one computed; None when
        the register does not hold every payload 1..n."""
        done, chain = self._chain
        if done > n:  # only after a new session with a shorter log: start over
            done, chain = 0, ZERO
        while done < n:
            last = min(n, done + HASH_CHUNK)
            hashes = await self.sink.payload_hashes(self.iss, done + 1, last)
            if len(hashes) != last - done:
                log.error(
                    "feed %s: register gave %d hashes for seq %d..%d",
                    self.iss,
                    len(hashes),
                    done + 1,
                    last,
                )
                return None
            if len(hashes) > INLINE_HASHES:
                chain = await asyncio.to_thread(extend, chain, hashes)
            else:
                chain = extend(chain, hashes)
            done = last
            self._chain = (done, chain)
        return chain

    async def first_difference(self, head: Head, read_page: ReadPage) -> tuple[int | None, str]:
        """Read the feed's tasks 1..head.seq again and compare them with ours: the first
        differing seq (or None) and a sentence for the status."""
        if self._divergence is not None and self._divergence[0] == head.session:
            known = self._divergence[1]
            if known <= head.seq:
                return known, f"seq {known}: the feed's payload differs from the one held"
        after = 0
        try:
            while after < head.seq:
                page, fault = await read_page(after, head.seq)
                if page:
                    theirs = [feed_hash(b) or b"" for b in page]
                    ours = await self.sink.payload_hashes(self.iss, after + 1, after + len(page))
                    differs = first_difference(ours, theirs)
                    if differs is not None:
                        at = after + differs
                        self._divergence = (head.session, at)
                        return at, f"seq {at}: the feed's payload differs from the one held"
                    after += len(page)
                if fault is not None or not page:
                    why = fault or f"the feed served nothing after seq {after}"
                    return None, f"chains differ; the first differing seq not found: {why}"
        except FeedError as exc:
            return None, f"chains differ; the first differing seq not found: {exc}"
        return None, (
            f"the feed's tasks 1..{head.seq} equal ours, but its head's chain does not: "
            "the head itself is inconsistent"
        )
