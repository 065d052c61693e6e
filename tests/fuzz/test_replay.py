"""The fuzz corpus as regression tests: every committed input through its harness, no atheris.

Each harness's ``target`` catches only its parser's documented errors and checks invariants,
so an input that once crashed a parser (kept in tests/fuzz/corpus/<name>/) fails here if the
bug comes back. The inputs at the largest sizes the transports allow, which the fuzzers reach
only rarely within their time, are built and fed here explicitly.
"""

from __future__ import annotations

import importlib
import json
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
PY = HERE / "py"
CORPUS = HERE / "corpus"
sys.path.insert(0, str(PY))

HARNESSES = sorted(p.stem for p in PY.glob("[!_]*.py"))
MAX_BODY = 16 * 1024 * 1024  # api.max_body_bytes default (kzgate/config/model.py)
TCP_MAX = 65535


def harness(name: str) -> ModuleType:
    return importlib.import_module(name)


def target(name: str) -> Callable[[bytes], None]:
    fn: Callable[[bytes], None] = harness(name).target
    return fn


def test_every_harness_has_a_seed_corpus() -> None:
    assert len(HARNESSES) >= 9
    for name in HARNESSES:
        files = list((CORPUS / name).glob("*"))
        assert len(files) >= 15, f"tests/fuzz/corpus/{name} holds {len(files)} inputs"
        module = harness(name)
        assert all(p.stat().st_size <= module.MAX_LEN for p in files), name


@pytest.mark.parametrize("name", HARNESSES)
def test_corpus_replays_clean(name: str) -> None:
    run = target(name)
    files = sorted((CORPUS / name).iterdir())
    for path in files:
        try:
            run(path.read_bytes())
        except BaseException as exc:
            raise AssertionError(f"{path.relative_to(HERE.parent.parent)}: {exc!r}") from exc


# --- inputs at the transports' limits --------------------------------------------------------

HEADER = struct.Struct("!6H")
QUESTION = b"\x03www\x07example\x02kz\x00\x00\x01\x00\x01"


def _pad_to(data: bytes, size: int) -> bytes:
    return data + bytes(size - len(data))


def _pointer_chain_reply() -> bytes:
    """A reply whose CNAME target is the last of a chain of names, each one label and a
    pointer to the name before it: read_name must stop it (128 jumps, 255 octets)."""
    head = HEADER.pack(1, 0x8180, 1, 2, 0, 0) + QUESTION
    start = len(head) + 12  # the TXT record's RDATA: after its owner pointer and fixed part
    names = bytearray()
    previous = 12
    for _ in range(4000):
        here = start + len(names)
        names += b"\x01a" + struct.pack("!H", 0xC000 | previous)
        previous = here
    txt = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, len(names)) + names
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + struct.pack("!H", 0xC000 | previous)
    return _pad_to(head + txt + cname, TCP_MAX)


def _dns_inputs() -> dict[str, bytes]:
    rng = random.Random(10)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"  # 16 octets
    n_rr = (TCP_MAX - 12 - len(QUESTION)) // len(rr)
    records = HEADER.pack(1, 0x8180, 1, n_rr, 0, 0) + QUESTION + rr * n_rr
    rest = TCP_MAX - 12 - len(QUESTION)
    return {
        "random": bytes(rng.getrandbits(8) for _ in range(TCP_MAX)),
        "zeros": bytes(TCP_MAX),
        "query-then-padding": _pad_to(HEADER.pack(1, 0x0100, 1, 0, 0, 0) + QUESTION, TCP_MAX),
        "ar-65535-roots": HEADER.pack(1, 0x0100, 1, 0, 0, 0xFFFF) + QUESTION + bytes(rest),
        "an-records-to-the-end": _pad_to(records, TCP_MAX),
        "pointer-chain": _pointer_chain_reply(),
        "opt-with-65k-rdata": HEADER.pack(1, 0x0100, 1, 0, 0, 1)
        + QUESTION
        + b"\x00"
        + struct.pack("!HHIH", 41, 65535, 0, rest - 11)
        + bytes(rest - 11),
    }


@pytest.mark.parametrize("name", ["dns_wire_query", "dns_engine_query", "rpz_xfr_query"])
@pytest.mark.parametrize("kind", sorted(_dns_inputs()))
def test_dns_messages_of_65535_octets(name: str, kind: str) -> None:
    data = _dns_inputs()[kind]
    assert len(data) == TCP_MAX
    target(name)(data)


@pytest.mark.parametrize("kind", sorted(_dns_inputs()))
def test_upstream_replies_of_65535_octets(kind: str) -> None:
    reply = _dns_inputs()[kind]
    for control in (0, 1 | 8, 16):  # UDP; EDNS over TCP; 0x20 case
        target("dns_upstream_reply")(bytes([control]) + reply)


def _task_world() -> ModuleType:
    return harness("_taskworld")


def _restrict_of_size(size: int) -> bytes:
    """A valid restrict payload with 100,000 URL targets (the most allowed) whose signed
    body is ``size`` octets, less at most 3 (base64 makes 4 octets of every 3)."""
    seeds = harness("_seeds")
    head = len(_task_world().sign(b"").split(b".")[0])
    room = (size - head - 2 - 86) * 3 // 4  # the header, two dots, a 64-octet signature

    def build(per: int, longer: int) -> bytes:  # the first ``longer`` URLs get one more octet
        targets = [
            {"type": "url", "value": f"https://example.kz/{i:06d}/" + "p" * (per + (i < longer))}
            for i in range(100_000)
        ]
        return json.dumps(seeds._task(targets=targets), separators=(",", ":")).encode()

    per = (room - len(build(0, 0))) // 100_000
    return build(per, room - len(build(per, 0)))


def test_largest_valid_task_body_is_accepted() -> None:
    body = _task_world().sign(_restrict_of_size(MAX_BODY))
    assert MAX_BODY - 3 <= len(body) <= MAX_BODY
    task = harness("kzgate.protocol.intake").verify_task(
        body, _task_world().TRUST, "op-kz-1", _task_world().NOW
    )
    assert len(task.targets) == 100_000


N = MAX_BODY * 3 // 4 - 200  # a payload whose signed body is just under 16 MiB
HOSTILE_PAYLOADS: dict[str, Callable[[], bytes]] = {
    "deep-arrays": lambda: b'{"a":' + b"[" * (N - 6) + b"}",
    "huge-string": lambda: b'{"ground":"' + b"x" * (N - 14) + b'"}',
    "huge-number": lambda: b'{"seq":' + b"9" * (N - 8) + b"}",
    "huge-float": lambda: b'{"seq":1.' + b"9" * (N - 10) + b"}",
    "many-duplicate-keys": lambda: b"{" + b'"a":1,' * ((N - 8) // 6) + b'"a":1}',
    # the most costly object: a million keys (about 3 s of json.loads on a loaded CI core)
    "many-keys": lambda: b"{" + b",".join(b'"k%07d":0' % i for i in range((N - 2) // 13)) + b"}",
    "surrogate-escapes": lambda: b'{"a":"' + b"\\ud800" * ((N - 8) // 6) + b'"}',
    "invalid-utf8": lambda: b'{"a":"' + b"\xff" * (N - 8) + b'"}',
    "too-many-targets": lambda: json.dumps(
        harness("_seeds")._task(targets=[{"type": "ip", "value": "1.2.3.4"}] * (N // 40))
    ).encode(),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_PAYLOADS))
def test_hostile_payloads_at_the_body_limit(kind: str) -> None:
    payload = HOSTILE_PAYLOADS[kind]()
    assert len(_task_world().sign(payload)) <= MAX_BODY
    # signed, so the payload reaches the strict JSON reader and the schema
    target("task_signed")(payload)


@pytest.mark.parametrize(
    "body",
    [
        b"A" * MAX_BODY,
        b"." * MAX_BODY,
        b"e30." + b"A" * (MAX_BODY - 5) + b".",
        b"A" * (MAX_BODY // 2) + b".." + b"A" * (MAX_BODY // 2 - 2),
        b"=" * MAX_BODY,
    ],
    ids=["one-part", "all-dots", "huge-payload", "huge-header", "padding"],
)
def test_hostile_bodies_at_the_body_limit(body: bytes) -> None:
    assert len(body) == MAX_BODY
    target("jws_compact")(body)
    target("task_jws")(body)


@pytest.mark.parametrize("kind", sorted(_dns_inputs()))
def test_probe_replies_of_65535_octets(kind: str) -> None:
    reply = _dns_inputs()[kind]
    for control in range(16):  # either expectation, each block answer, with and without EDE
        target("probe_dns_reply")(bytes([control]) + reply)
