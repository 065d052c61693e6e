"""The policy's NameTable, compiled (kzgate/nametable.c) and in Python, against a dict model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzgate.names import domain_to_wire
from kzgate.nametable import CompiledNameTable, DictNameTable, NameTable
from tests.support.namemodel import model_match

KINDS = [
    pytest.param("c", marks=pytest.mark.skipif(CompiledNameTable is None, reason="not built")),
    pytest.param("python"),
]


def new(kind: str) -> NameTable:
    if kind == "c":
        assert CompiledNameTable is not None
        return CompiledNameTable()
    return DictNameTable()


labels = st.sampled_from(["a", "b", "kz", "xn--80ak6aa92e", "x" * 63, "ab-c", "0"])
wire_names = st.lists(labels, min_size=1, max_size=4).map(lambda ls: domain_to_wire(".".join(ls)))
ops = st.lists(
    st.tuples(st.sampled_from(["set", "discard"]), wire_names, st.integers(0, 2**32 - 1)),
    max_size=60,
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None)
@given(steps=ops, probes=st.lists(wire_names, max_size=10))
def test_behaves_as_a_dict(
    kind: str, steps: list[tuple[str, bytes, int]], probes: list[bytes]
) -> None:
    table, model = new(kind), {}
    for op, name, value in steps:
        if len(name) > 255:  # four 63-octet labels: no legal name; both twins refuse it
            with pytest.raises(ValueError):
                table.set(name, value) if op == "set" else table.discard(name)
            continue
        if op == "set":
            table.set(name, value)
            model[name] = value
        else:
            assert table.discard(name) == (model.pop(name, None) is not None)
        assert len(table) == len(model)
    assert sorted(table.items()) == sorted(model.items())
    for name in [*probes, *model]:
        if len(name) > 255:
            with pytest.raises(ValueError):
                table.get(name)
            continue
        assert table.get(name) == model.get(name)
        assert table.match(name) == model_match(model, name)


@pytest.mark.parametrize("kind", KINDS)
def test_growth_and_compaction_keep_every_name(kind: str) -> None:
    table = new(kind)
    names = [domain_to_wire(f"n{i}.example{i % 97}.kz") for i in range(60_000)]
    for i, name in enumerate(names):
        table.set(name, i)
    for name in names[::2]:  # enough removed octets to compact the C arena
        assert table.discard(name)
    for i, name in enumerate(names):
        assert table.get(name) == (None if i % 2 == 0 else i)
        assert table.match(b"\x03www" + name) == (None if i % 2 == 0 else (4, i))
    assert len(table) == 30_000
    table.clear()
    assert len(table) == 0 and table.match(names[1]) is None


@pytest.mark.parametrize("kind", KINDS)
def test_bad_names_are_refused_and_odd_qnames_are_safe(kind: str) -> None:
    table = new(kind)
    table.set(domain_to_wire("kz"), 1)
    if kind == "c":
        with pytest.raises(ValueError):
            table.set(b"", 1)
        with pytest.raises(ValueError):
            table.set(b"\x01" * 256, 1)
        with pytest.raises(TypeError):
            table.set("kz", 1)  # type: ignore[arg-type]
        assert CompiledNameTable is not None
        with pytest.raises(TypeError):
            CompiledNameTable(16)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            CompiledNameTable(size=16)  # type: ignore[call-arg]
    # Length octets that run past the end, or none at all: no match, no read past the end.
    for qname in (b"", b"\x00", b"\x3f", b"\x02kz", b"\x05kz\x00", b"\x01a\x02kz\x00\x00"):
        assert table.match(qname) == model_match({b"\x02kz\x00": 1}, qname)


@pytest.mark.skipif(CompiledNameTable is None, reason="not built")
def test_c_table_is_compact() -> None:
    assert CompiledNameTable is not None
    table = CompiledNameTable()
    for i in range(100_000):
        table.set(domain_to_wire(f"b{i}.blocked-{i % 1000}.kz"), i % 10)
    assert table.nbytes / len(table) < 60
