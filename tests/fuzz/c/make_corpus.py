"""Writes the seed corpora of the C harnesses (tests/fuzz/corpus/<harness>/): small files,
each a case the harness should start from. Run from the checkout after changing it:

    .venv/bin/python tests/fuzz/c/make_corpus.py

Files a fuzzer found (crashes, or inputs kept by -merge) are added next to them by hand
and are not rewritten here; tests/unit/test_native_corpus.py replays every file.
"""

from __future__ import annotations

import struct
from pathlib import Path

from fast_pair import question

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!6H", 0x1234, flags, qd, an, ns, ar)


def name(*labels: int, suffix: bytes = b"") -> bytes:
    return b"".join(bytes([n]) + b"a" * n for n in labels) + suffix + b"\x00"


QUESTION = b"\x03bad\x02kz\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
A_RR = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"


def dns_seeds() -> dict[str, bytes]:
    seeds = {}
    for qname in ("bad.kz", "www.Bad.KZ", "other-bad.kz", "ok.kz", "Mixed.KZ", "alias.kz",
                  "big.kz", "neg.kz", "nowhere.kz", "kz"):  # fmt: skip
        slug = qname.lower().replace(".", "_")
        seeds[f"{slug}-a"] = question(qname, "A", edns=False, do=False)
        seeds[f"{slug}-a-edns-do"] = question(qname, "A", edns=True, do=True)
    seeds["ok_kz-txt-edns"] = question("ok.kz", "TXT", edns=True, do=False)
    seeds["big_kz-txt"] = question("big.kz", "TXT", edns=False, do=False)
    seeds["bad_kz-aaaa"] = question("bad.kz", "AAAA", edns=False, do=False)
    seeds["bad_kz-any-edns"] = question("bad.kz", "ANY", edns=True, do=False)
    seeds["bad_kz-mx"] = question("bad.kz", "MX", edns=False, do=False)
    seeds["name-255"] = header() + name(63, 63, 63, 61) + b"\x00\x01\x00\x01"
    seeds["name-256"] = header() + name(63, 63, 63, 62) + b"\x00\x01\x00\x01"
    seeds["issue10-crash-335"] = header() + name(63, 63, 63, 61, 63) + b"\x00\x01\x00\x01"
    seeds["name-255-blocked"] = (
        header() + name(63, 63, 63, 54, suffix=b"\x03bad\x02kz") + b"\x00\x01\x00\x01"
    )
    seeds["pointer-self"] = header() + b"\xc0\x0c\x00\x01\x00\x01"
    seeds["pointer-forward"] = header() + b"\x03www\xc0\x16\x00\x01\x00\x01" + QUESTION[:8]
    seeds["opt-owner-loop"] = header(ar=1) + QUESTION + b"\xc0\x1b" + OPT[1:]
    seeds["answer-pointer-loop"] = header(an=1) + QUESTION + b"\xc0\x1b" + A_RR[2:]
    seeds["qdcount-2"] = header(qd=2) + QUESTION + QUESTION
    seeds["qdcount-0"] = header(qd=0) + QUESTION
    seeds["arcount-2-one-opt"] = header(ar=2) + QUESTION + OPT
    seeds["arcount-0-opt-behind"] = header() + QUESTION + OPT
    seeds["opt-version-1"] = header(ar=1) + QUESTION + OPT[:6] + b"\x01" + OPT[7:]
    seeds["opt-rdlength-past-end"] = header(ar=1) + QUESTION + OPT[:9] + b"\x00\x05"
    seeds["notify-opcode"] = header(flags=0x2000) + QUESTION
    seeds["qr-set"] = header(flags=0x8000) + QUESTION
    seeds["short-header"] = header()[:11]
    base = question("bad.kz", "A", edns=True, do=False)  # ends in the OPT's RDLENGTH, 0
    extra = 1500 - len(base)  # an unknown option fills the OPT up to 1,500 octets
    seeds["edns-1500"] = (
        base[:-2] + struct.pack("!HHH", extra, 65001, extra - 4) + b"\xab" * (extra - 4)
    )
    seeds["padded-4100"] = question("ok.kz", "A", edns=False, do=False).ljust(4100, b"\x00")
    return seeds


def program(*ops: bytes) -> bytes:
    return b"\x2a" + b"".join(ops)  # octet 0: the seed


def nt_set(wire: bytes, value: int = 1) -> bytes:
    return b"\x00" + bytes([len(wire)]) + wire + bytes([value])


def nt_op(kind: int, wire: bytes) -> bytes:
    if kind == 5:
        return b"\x05" + struct.pack("!H", len(wire)) + wire
    return bytes([kind, len(wire)]) + wire


def nametable_seeds() -> dict[str, bytes]:
    kz, bad = b"\x02kz\x00", b"\x03bad\x02kz\x00"
    www = b"\x03www" + bad
    many = [
        b"\x01" + bytes([97 + i % 26]) + b"\x02n" + bytes([48 + i // 26]) + kz for i in range(40)
    ]
    return {
        "set-get-match": program(nt_set(bad, 7), nt_op(3, bad), nt_op(4, www), nt_op(4, kz)),
        "parent-and-child": program(nt_set(kz, 1), nt_set(bad, 2), nt_op(4, www), nt_op(6, b"")),
        "discard-then-match": program(nt_set(bad), nt_op(2, bad), nt_op(4, www), nt_op(2, bad)),
        "overwrite": program(nt_set(bad, 1), nt_set(bad, 200), nt_op(3, bad), nt_op(6, b"")),
        "growth": program(*(nt_set(w, i) for i, w in enumerate(many)), nt_op(6, b"")),
        "growth-and-compaction": program(
            *(nt_set(w, i) for i, w in enumerate(many)),
            *(nt_op(2, w) for w in many[::2]),
            *(nt_op(3, w) for w in many),
            nt_op(6, b""),
        ),
        "clear": program(nt_set(bad), b"\xff", nt_op(3, bad), nt_set(kz), nt_op(6, b"")),
        "bad-lengths": program(b"\x00\x00\x05", nt_op(2, b""), nt_op(3, b"")),
        "name-255": program(nt_set(name(63, 63, 63, 61)), nt_op(4, name(63, 63, 63, 61))),
        "match-long-qname": program(
            nt_set(bad), nt_op(5, name(63, 63, 63, 63, 63, suffix=bad[:-1]))
        ),
        "match-odd-octets": program(
            nt_set(kz), nt_op(4, b"\x05kz\x00"), nt_op(4, b"\x3f"), nt_op(4, b"")
        ),
        "cut-short": program(nt_set(bad))[:-3],
    }


def main() -> None:
    for harness, seeds in (
        ("dns_query_parse", dns_seeds()),
        ("dns_fast_answer", dns_seeds()),
        ("nametable", nametable_seeds()),
    ):
        folder = CORPUS / harness
        folder.mkdir(parents=True, exist_ok=True)
        for slug, data in seeds.items():
            (folder / f"seed-{slug}").write_bytes(data)


if __name__ == "__main__":
    main()
