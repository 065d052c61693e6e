"""Every file of the C harnesses' corpora (tests/fuzz/corpus/<harness>/), replayed without
libFuzzer: the seeds, and whatever a fuzzer found and was kept there.

DNS datagrams go through the installed C fast path against the engine
(tests/fuzz/c/fast_pair.py, the dns_fast_answer harness's own oracle). NameTable
programs (the nametable harness's input format, decoded here the same way) run on
the compiled table and on the dict one, against a dict.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kzgate.dns.fastpath import FAST
from kzgate.nametable import CompiledNameTable, DictNameTable, NameTable
from tests.support.namemodel import model_match

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests/fuzz/corpus"
HARNESSES = ROOT / "tests/fuzz/c"
sys.path.insert(0, str(HARNESSES))

needs_fast = pytest.mark.skipif(FAST is None, reason="the C fast path was not built")


def files(*harnesses: str) -> list[Path]:
    return sorted(p for h in harnesses for p in (CORPUS / h).iterdir() if p.is_file())


DNS_FILES = files("dns_query_parse", "dns_fast_answer")
TABLE_FILES = files("nametable")


def test_every_harness_has_a_seed_corpus() -> None:
    harnesses = sorted(p.stem for p in HARNESSES.glob("*.c"))
    assert harnesses == ["dns_fast_answer", "dns_query_parse", "nametable"]
    for name in harnesses:
        assert len(files(name)) >= 10, name


@pytest.fixture(scope="module")
def checker() -> object:
    import fast_pair

    return fast_pair.Checker()


@needs_fast
@pytest.mark.parametrize("path", DNS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dns_corpus_matches_the_engine(checker: object, path: Path) -> None:
    checker.check(path.read_bytes())  # type: ignore[attr-defined]


def program(data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    """The nametable harness's operations: (op octet, kind, name, value); see nametable.c."""
    pos = 1  # octet 0 seeds the C table's hash

    def octet() -> int:
        nonlocal pos
        if pos >= len(data):
            return 0
        pos += 1
        return data[pos - 1]

    while pos < len(data):
        op = octet()
        kind = op % 8
        if (kind == 7 and op == 0xFF) or kind == 6:
            yield op, kind, b"", 0
            continue
        n = octet()
        if kind == 5:
            n = n << 8 | octet()
        name = data[pos : pos + n]
        pos += len(name)
        value = octet() * 0x01010101 if kind in (0, 1, 7) else 0
        yield op, kind, name, value


def run(table: NameTable, data: bytes) -> None:
    model: dict[bytes, int] = {}
    for op, kind, name, value in program(data):
        bad = not 1 <= len(name) <= 255
        if kind == 7 and op == 0xFF:
            table.clear()
            model.clear()
        elif kind == 6:
            assert sorted(table.items()) == sorted(model.items())
        elif kind in (4, 5):
            assert table.match(name) == model_match(model, name)
        elif bad:  # both tables refuse a name of 0 or more than 255 octets
            with pytest.raises(ValueError):
                if kind == 2:
                    table.discard(name)
                elif kind == 3:
                    table.get(name)
                else:
                    table.set(name, value)
        elif kind == 2:
            assert table.discard(name) == (model.pop(name, None) is not None)
        elif kind == 3:
            assert table.get(name) == model.get(name)
        else:
            table.set(name, value)
            model[name] = value
        assert len(table) == len(model)


@pytest.mark.parametrize("kind", [pytest.param("c", marks=needs_fast), "python"])
@pytest.mark.parametrize("path", TABLE_FILES, ids=lambda p: p.name)
def test_nametable_corpus_behaves_as_a_dict(kind: str, path: Path) -> None:
    compiled = CompiledNameTable if kind == "c" else None
    table = compiled() if compiled is not None else DictNameTable()
    run(table, path.read_bytes())
