"""The issuer's side of the feed (task-protocol.md §6): its append-only log and signed head.

What the reference feed server (feed/server.py) publishes, and what the test
feeds build their lies from: the log of one issuer's signed tasks in seq
order with the chain c(n) at every n, the session that names this log, and
the head that commits to it. Files in, answers out; no sockets here.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.errors import TaskError
from kzgate.feed.chain import ZERO, payload_hash, step
from kzgate.feed.head import build_head, sign_head
from kzgate.keys import PUBLIC_MODE, atomic_write
from kzgate.protocol.intake import TASK_TYP
from kzgate.protocol.jsonstrict import loads_object
from kzgate.protocol.jws import parse_compact
from kzgate.protocol.schema import parse_task
from kzgate.protocol.verifier import VERIFIERS

TASK_SUFFIX = ".jws"
SESSION_FILE = ".feed-session"  # a dotfile: never taken for a task


class NotInLog(ValueError):
    """A task that cannot join this log: not a task of its issuer, or not the next seq."""


@dataclass(frozen=True, slots=True)
class Signer:
    """The issuer's key that signs heads; tasks signed by the same kid are verified with it."""

    iss: str
    key: Ed25519PrivateKey
    kid: str
    ttl: dt.timedelta = dt.timedelta(seconds=600)

    def head(self, session: str, seq: int, chain: bytes, now: dt.datetime) -> bytes:
        now = now.replace(microsecond=0)
        payload = build_head(
            iss=self.iss,
            session=session,
            seq=seq,
            chain=chain,
            issued_at=now,
            expires=now + self.ttl,
        )
        return sign_head(payload, self.key, self.kid).encode("ascii")


def read_task(body: bytes, signer: Signer) -> tuple[int, bytes]:
    """(seq, payload) of a signed task of ``signer.iss``, or NotInLog saying why not.

    The shape is checked as kzgate checks it (§2-§3 schema); the signature only when
    the task names the head key's kid: older tasks may be signed with keys this
    server does not hold, and the operator verifies every task anyway.
    """
    try:
        jws = parse_compact(body)
        if jws.header.get("typ") != TASK_TYP:
            raise NotInLog(f"header.typ is not {TASK_TYP!r}")
        kid = jws.header.get("kid")
        if not isinstance(kid, str):
            raise NotInLog("header.kid is not a string")
        if kid == signer.kid:
            verifier = VERIFIERS.get(str(jws.header.get("alg")))
            public = signer.key.public_key()
            if verifier is None or not verifier.verify(public, jws.signing_input, jws.signature):
                raise NotInLog(f"signature does not verify with key {kid!r}")
        task = parse_task(loads_object(jws.payload, "payload"), jws.payload, kid)
    except TaskError as exc:
        raise NotInLog(exc.detail) from None
    if task.iss != signer.iss:
        raise NotInLog(f"a task of {task.iss!r}, not of {signer.iss!r}")
    return task.seq, jws.payload


class IssuerLog:
    """Tasks 1..seq of one issuer, as served, with c(n) for every n."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self._tasks: list[bytes] = []
        self._chains: list[bytes] = [ZERO]

    @property
    def seq(self) -> int:
        return len(self._tasks)

    def chain_at(self, seq: int) -> bytes:
        return self._chains[seq]

    def append(self, body: bytes) -> int:
        """Add the next task; its seq must be exactly ``self.seq + 1``."""
        seq, payload = read_task(body, self.signer)
        if seq != self.seq + 1:
            raise NotInLog(f"seq {seq}: the log holds 1..{self.seq}, the next is {self.seq + 1}")
        self._tasks.append(body.strip(b" \t\r\n"))
        self._chains.append(step(self._chains[-1], payload_hash(payload)))
        return seq

    def after(self, seq: int, limit: int) -> list[bytes]:
        """Tasks seq+1 .. seq+limit (fewer at the end of the log)."""
        return self._tasks[max(seq, 0) : max(seq, 0) + max(limit, 0)]

    def head(self, session: str, now: dt.datetime) -> bytes:
        return self.signer.head(session, self.seq, self._chains[-1], now)


def load_directory(directory: Path, signer: Signer) -> tuple[IssuerLog, set[str]]:
    """The log of the ``*.jws`` files in ``directory`` (ordered by the seq inside), and
    their names; NotInLog when one is not a task of the issuer or seqs are not 1..n."""
    by_seq: dict[int, tuple[str, bytes]] = {}
    for path in sorted(directory.glob("*" + TASK_SUFFIX)):
        body = path.read_bytes()
        try:
            seq, _ = read_task(body, signer)
        except NotInLog as exc:
            raise NotInLog(f"{path}: {exc}") from None
        if seq in by_seq:
            raise NotInLog(f"{path}: seq {seq} again (also in {by_seq[seq][0]})")
        by_seq[seq] = (path.name, body)
    log = IssuerLog(signer)
    for seq in sorted(by_seq):
        if seq != log.seq + 1:
            raise NotInLog(f"{directory}: no task with seq {log.seq + 1} (next is {seq})")
        log.append(by_seq[seq][1])
    return log, {name for name, _ in by_seq.values()}


def session_of(directory: Path, log: IssuerLog) -> str:
    """The session UUID of this log: the one stored in ``directory`` while the log still
    extends what was published under it, a new one when it has started over."""
    path = directory / SESSION_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        session, seq, chain = str(uuid.UUID(saved["session"])), saved["seq"], saved["chain"]
        if type(seq) is int and 0 <= seq <= log.seq and log.chain_at(seq).hex() == chain:
            return session
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: start a session
    session = str(uuid.uuid4())
    save_session(directory, session, log)
    return session


def save_session(directory: Path, session: str, log: IssuerLog) -> None:
    """Record how far this session's log reached, so that a restart can tell it grew
    (same session) from it starting over (a new one)."""
    record = {"session": session, "seq": log.seq, "chain": log.chain_at(log.seq).hex()}
    atomic_write(directory / SESSION_FILE, json.dumps(record).encode() + b"\n", PUBLIC_MODE)
