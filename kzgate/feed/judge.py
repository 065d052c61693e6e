"""What a head and a round of pulling mean (task-protocol.md §6): pure decisions.

Values in, values out, time passed in; the puller (feed/puller.py) does the I/O
and asks here what to make of it.

The head (``judge``), checked in this order:

- ``rollback``: same session as the stored head, lower seq. Refused (not stored),
  alarmed, nothing pulled this round: the feed is serving an older view of a log
  it already showed us further along. Checked before staleness, because a
  replayed old head is usually both, and the rollback is the more precise alarm.
- ``stale``: now is past its ``expires`` (a freeze). Alarmed, not stored as the
  accepted head, enforcement unchanged. Its tasks are still pulled: each task is
  signed on its own and goes through the same verification as a pushed one, so
  taking them is as safe as taking a push, and a frozen head must not also freeze
  delivery. No consistency check is made against a stale head.
- ``new_session``: the session differs from the stored head's. Accepted, alarmed,
  and the log is read again from seq 1 (what is held comes back as duplicates,
  or conflicts).
- ``accept``: the first head, or the same session with seq >= the stored one.

The state of an issuer's feed (``FeedState``) is one of §6's list; a head that
does not verify and a feed that cannot be read are both ``unreachable`` (no usable
head can be had), told apart by the pull outcome and the error text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from kzgate.feed.head import Head

DecisionKind = Literal["accept", "rollback", "new_session", "stale"]
Consistency = Literal["in_sync", "behind", "diverged"]
FeedState = Literal["in_sync", "behind", "diverged", "stale", "rollback", "unreachable"]

# The values of kzgate_feed_state's label; exactly one is 1 per issuer.
FEED_STATES: tuple[FeedState, ...] = (
    "in_sync",
    "behind",
    "diverged",
    "stale",
    "rollback",
    "unreachable",
)

# The values of kzgate_feed_pulls_total's outcome label: one per round, and one per
# long-poll request between rounds.
PULL_OUTCOMES: tuple[str, ...] = (
    "ok",  # the round (or long poll) completed; the feed served what it should
    "unreachable",  # connect, TLS or timeout (FeedError "unreachable")
    "garbage",  # wrong status, content type or shape (FeedError "garbage")
    "oversize",  # a body over api.max_body_bytes (FeedError "oversize")
    "bad_head",  # a head that does not verify: signature, key, issuer, fields
    "rollback",  # a head of the same session with a lower seq (refused)
    "stale",  # a head past its expires (tasks still pulled)
    "fault",  # the feed skipped, reordered or repeated a seq, served a task that was
    #           refused (bad signature, conflict, another issuer's ...), or the
    #           round failed on our side (logged); what was applied is kept
)


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    head: Head
    previous: Head | None  # the stored head it was judged against

    @property
    def accepted(self) -> bool:
        """The head is the new accepted head (to be stored)."""
        return self.kind in ("accept", "new_session")

    @property
    def pull(self) -> bool:
        """Tasks are pulled this round."""
        return self.kind != "rollback"

    @property
    def after(self) -> int | None:
        """Where to start reading the log: 0 on a new session, else None (from what is held)."""
        return 0 if self.kind == "new_session" else None


def judge(stored: Head | None, head: Head, now: dt.datetime) -> Decision:
    """What to make of ``head`` (verified) given the last accepted ``stored`` head."""
    if stored is not None and head.session == stored.session and head.seq < stored.seq:
        return Decision("rollback", head, stored)
    if head.stale(now):
        return Decision("stale", head, stored)
    if stored is not None and head.session != stored.session:
        return Decision("new_session", head, stored)
    return Decision("accept", head, stored)


def consistency(
    held: int, head_seq: int, our_chain: bytes | None, head_chain: bytes
) -> Consistency:
    """Do we hold what the head commits to?

    ``held``: the highest seq held without a gap; ``our_chain``: c(head_seq) over our
    stored payloads, or None when not computed. Holding more than the head says
    (a push that arrived before the feed published it) is in sync when the first
    ``head_seq`` agree.
    """
    if held < head_seq or our_chain is None:
        return "behind"
    return "in_sync" if our_chain == head_chain else "diverged"


def backoff_delay(failures: int, interval: float, rand: float, base: float = 1.0) -> float:
    """Seconds to wait after ``failures`` consecutive failed pulls (>= 1): exponential
    from ``base``, capped at ``interval``, with jitter (``rand`` in [0, 1)) taking off
    up to half, so that many operators do not retry a recovering feed in step."""
    ceiling = min(interval, base * 2.0 ** min(max(failures, 1) - 1, 30))
    return ceiling * (1.0 - 0.5 * rand)


def interval_delay(interval: float, rand: float) -> float:
    """The pause between rounds: ``interval`` ± 10 % (``rand`` in [0, 1))."""
    return interval * (0.9 + 0.2 * rand)


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """One issuer's feed as /status, `kzgate status` and the metrics show it."""

    state: FeedState = "behind"  # until a round says otherwise: nothing is proven yet
    head_seq: int | None = None  # the last accepted head's seq
    held_seq: int = 0  # the highest seq held without a gap
    last_pull: dt.datetime | None = None  # the last pull that the feed answered
    diverged_at: int | None = None  # when diverged: the first seq whose payload differs
    error: str = ""  # what went wrong last, or why the state is what it is

    @property
    def gaps(self) -> int:
        """Tasks the head says exist past the gapless prefix (head seq - held seq, >= 0);
        some may be held out of order: the register's seq gaps list the exact ones."""
        return max(0, (self.head_seq or 0) - self.held_seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "head_seq": self.head_seq,
            "held_seq": self.held_seq,
            "gaps": self.gaps,
            "last_pull": self.last_pull.isoformat() if self.last_pull else None,
            "diverged_at": self.diverged_at,
            "error": self.error,
        }
