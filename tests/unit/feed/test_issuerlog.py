"""The issuer's side of the feed: the log a feed server publishes, its chain, head and session."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from kzgate.feed.chain import ZERO, chain_of
from kzgate.feed.head import verify_head
from kzgate.feed.issuerlog import (
    SESSION_FILE,
    IssuerLog,
    NotInLog,
    Signer,
    load_directory,
    read_task,
    save_session,
    session_of,
)
from kzgate.protocol.build import sign_task
from kzgate.protocol.jws import parse_compact
from tests.support.protocol_fixtures import MCI_KEY, NOW, STS_KEY, TRUST, restrict

SIGNER = Signer("mci", MCI_KEY, "mci-1", dt.timedelta(minutes=10))


def task(
    seq: int, iss: str = "mci", kid: str = "mci-1", key: object = MCI_KEY, **extra: object
) -> bytes:
    body = restrict(**{"seq": seq, "id": f"t-{seq}", "iss": iss, **extra})
    return sign_task(body, key, kid).encode()  # type: ignore[arg-type]


def payload_hashes(bodies: list[bytes]) -> list[bytes]:
    return [hashlib.sha256(parse_compact(b).payload).digest() for b in bodies]


def test_the_log_serves_tasks_in_order_and_its_head_commits_to_them() -> None:
    log = IssuerLog(SIGNER)
    bodies = [task(n) for n in range(1, 6)]
    assert [log.append(b + b"\n") for b in bodies] == [1, 2, 3, 4, 5]
    assert log.after(0, 100) == bodies  # as signed: the newline is not part of a task
    assert log.after(2, 2) == bodies[2:4]
    assert log.after(5, 10) == [] and log.after(9, 10) == []
    assert log.chain_at(0) == ZERO
    for n in range(6):
        assert log.chain_at(n) == chain_of(payload_hashes(bodies[:n]))
    head = verify_head(log.head("3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10", NOW), "mci", TRUST, NOW)
    assert (head.seq, head.chain) == (5, chain_of(payload_hashes(bodies)))
    assert head.issued_at == NOW and head.expires == NOW + dt.timedelta(minutes=10)


def test_an_empty_log_has_a_head_of_seq_zero() -> None:
    head = verify_head(
        IssuerLog(SIGNER).head("3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10", NOW), "mci", TRUST, NOW
    )
    assert (head.seq, head.chain) == (0, ZERO)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (lambda: task(2), "the next is 1"),
        (lambda: task(1, iss="sts", kid="sts-1", key=STS_KEY), "not of 'mci'"),
        (lambda: task(1, key=STS_KEY), "does not verify"),  # the head key's kid, another key
        (lambda: SIGNER.head("3f0c1c2e-8d3a-4a53-9d2f-0d6b3c1a9e10", 0, ZERO, NOW), "typ"),
        (lambda: b"<html>hello</html>", "JWS"),
        (lambda: sign_task({"v": 1, "iss": "mci"}, MCI_KEY, "mci-1").encode(), "required"),
    ],
)  # fmt: skip
def test_what_cannot_join_the_log_is_refused_and_changes_nothing(body: object, why: str) -> None:
    log = IssuerLog(SIGNER)
    with pytest.raises(NotInLog, match=why):
        log.append(body())  # type: ignore[operator]
    assert log.seq == 0 and log.chain_at(0) == ZERO


def test_a_task_signed_by_another_key_of_the_issuer_is_read_without_its_signature() -> None:
    # The server holds the head key only; kzgate verifies every task it takes anyway.
    seq, payload = read_task(task(7, kid="mci-old", key=STS_KEY), SIGNER)
    assert seq == 7 and payload == parse_compact(task(7, kid="mci-old", key=STS_KEY)).payload


def write(directory: Path, bodies: dict[str, bytes]) -> None:
    for name, body in bodies.items():
        (directory / name).write_bytes(body)


def test_a_directory_is_read_in_seq_order_whatever_the_file_names(tmp_path: Path) -> None:
    write(tmp_path, {"c.jws": task(1), "a.jws": task(3), "b.jws": task(2), "notes.txt": b"x"})
    log, names = load_directory(tmp_path, SIGNER)
    assert log.after(0, 10) == [task(1), task(2), task(3)]
    assert names == {"a.jws", "b.jws", "c.jws"}


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"1.jws": task(1), "3.jws": task(3)}, "no task with seq 2"),
        ({"2.jws": task(2)}, "no task with seq 1"),
        ({"1.jws": task(1), "1b.jws": task(1)}, "seq 1 again"),
        ({"1.jws": task(1), "2.jws": task(2, iss="sts", kid="sts-1", key=STS_KEY)}, "2.jws"),
        ({"1.jws": b"garbage"}, "1.jws"),
    ],
)
def test_a_directory_that_is_not_tasks_1_to_n_is_refused(
    tmp_path: Path, files: dict[str, bytes], why: str
) -> None:
    write(tmp_path, files)
    with pytest.raises(NotInLog, match=why):
        load_directory(tmp_path, SIGNER)


def test_the_session_stays_while_the_log_grows_and_changes_when_it_starts_over(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"1.jws": task(1), "2.jws": task(2)})
    first = session_of(tmp_path, load_directory(tmp_path, SIGNER)[0])
    assert (tmp_path / SESSION_FILE).exists()
    assert session_of(tmp_path, load_directory(tmp_path, SIGNER)[0]) == first
    write(tmp_path, {"3.jws": task(3)})
    grown = load_directory(tmp_path, SIGNER)[0]
    assert session_of(tmp_path, grown) == first  # grew: the same log
    # The session file records seq 2 still; record seq 3 as served under this session.
    save_session(tmp_path, first, grown)
    (tmp_path / "3.jws").unlink()  # the log went back: it started over
    second = session_of(tmp_path, load_directory(tmp_path, SIGNER)[0])
    assert second != first
    (tmp_path / "2.jws").write_bytes(task(2, id="t-2-other"))  # same length, other bytes
    third = session_of(tmp_path, load_directory(tmp_path, SIGNER)[0])
    assert third not in (first, second)
    (tmp_path / SESSION_FILE).write_text("{not json")
    assert session_of(tmp_path, load_directory(tmp_path, SIGNER)[0]) not in (first, second, third)
