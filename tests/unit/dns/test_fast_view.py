"""The FastView (kzgate/dns/fast_view.c): the engine's structures handed to C by name, checked.

What C reads is named on both sides: the engine builds the view with keywords
only, and every field, the cache entries' slots, the counters and the block
plans are checked when it is built. A field renamed, dropped, moved or given a
structure of another shape on the Python side is refused there with an error
naming it, never misread per query; a class whose fields come in another order
is read by name, so it answers the same.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from typing import Any

import dnslib
import pytest

from kzgate.dns.cache import Entry
from kzgate.dns.engine import Engine
from kzgate.dns.fastpath import FAST, FastModule
from kzgate.dns.types import BlockSettings, DnsStats, Forward
from kzgate.model import InstructionRef
from kzgate.nametable import DictNameTable
from kzgate.policy import PolicyIndex
from tests.support.dnsmsg import query

REF = InstructionRef("mci", "42", "2026-11-01")
FIELDS = (
    "names",
    "refs",
    "entries",
    "entry_type",
    "plans",
    "soa_tail",
    "opts",
    "verdicts",
    "stats",
)

pytestmark = pytest.mark.skipif(FAST is None, reason="the C fast path was not built")


def fast() -> FastModule:
    assert FAST is not None
    return FAST


def engine() -> Engine:
    """bad.kz restricted, ok.kz cached, the EDE memo filled for bad.kz."""
    index = PolicyIndex()
    index.set_domain("bad.kz", REF)
    eng = Engine(index, BlockSettings(mode="sinkhole"))
    fwd = eng.on_query(query("ok.kz"), 0.0)
    assert isinstance(fwd, Forward)
    reply = dnslib.DNSRecord.parse(fwd.upstream_query).reply()
    reply.add_answer(*dnslib.RR.fromZone("ok.kz. 300 IN A 203.0.113.5"))
    eng.on_upstream(fwd, bytes(reply.pack()), 0.0)
    eng.on_query(query("bad.kz", edns=True), 0.0)
    return eng


def fields(eng: Engine) -> dict[str, Any]:
    """The view's fields as the engine fills them, read back from its view."""
    view = eng.fast_view
    return {name: getattr(view, name) for name in FIELDS}


def build(**kwargs: Any) -> object:
    return fast().FastView(**kwargs)


def answers(view: object) -> list[bytes | None]:
    data = [query("bad.kz"), query("bad.kz", edns=True), query("ok.kz"), query("nowhere.kz")]
    return [fast().answer(d, 1.0, view) for d in data]  # type: ignore[arg-type]


def test_the_engine_names_each_of_its_structures() -> None:
    eng = engine()
    view = eng.fast_view
    plans, soa_tail, opts = eng._block.fast_parts()
    assert view.names is eng.index.name_table and view.refs is eng.index.refs
    assert view.entries is eng.cache.entries and view.entry_type is Entry
    assert view.plans is plans and view.soa_tail is soa_tail and view.opts is opts
    assert view.verdicts is eng.stats.verdicts and view.stats is eng.stats
    got = answers(view)
    assert got[:3] == [
        engine().on_query(d, 1.0)
        for d in (query("bad.kz"), query("bad.kz", edns=True), query("ok.kz"))
    ]
    assert got[3] is None


@pytest.mark.parametrize("name", FIELDS)
def test_fields_are_read_only(name: str) -> None:
    view = engine().fast_view
    with pytest.raises(AttributeError):
        setattr(view, name, getattr(view, name))


def test_fields_in_another_order_make_the_same_view() -> None:
    eng = engine()
    given = fields(eng)
    expected = answers(eng.fast_view)
    for order in (reversed(FIELDS), sorted(FIELDS), FIELDS[3:] + FIELDS[:3]):
        assert answers(build(**{name: given[name] for name in order})) == expected


def test_positions_are_refused() -> None:
    given = fields(engine())
    with pytest.raises(TypeError, match="keyword arguments only"):
        fast().FastView(*given.values())  # type: ignore[call-arg]


@pytest.mark.parametrize("name", FIELDS)
def test_a_renamed_field_is_refused_by_name(name: str) -> None:
    given = fields(engine())
    given[name + "s"] = given.pop(name)
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}s'"):
        build(**given)


@pytest.mark.parametrize("name", FIELDS)
def test_a_missing_field_is_refused_by_name(name: str) -> None:
    given = fields(engine())
    del given[name]
    with pytest.raises(TypeError, match=f"missing keyword argument '{name}'"):
        build(**given)


# Each field's value moved into another field: what a reordered positional view would be.
MOVES = list(itertools.permutations(FIELDS, 2))


@pytest.mark.parametrize(("into", "taken_from"), MOVES, ids=[f"{a}<-{b}" for a, b in MOVES])
def test_a_field_holding_another_fields_value_is_refused_or_harmless(
    into: str, taken_from: str
) -> None:
    """Every field's check refuses the other fields' values, except where two fields have the
    same type (the dicts, or stats which takes any object with a cache_hits): such a mix-up
    is a plain bug in a keyword call, and C still reads nothing it did not check."""
    given = fields(engine())
    given[into] = given[taken_from]
    if into in ("entries", "opts") and taken_from in ("entries", "opts", "plans", "verdicts"):
        build(**given)  # a dict where a dict goes; read with the checks each lookup makes
        return
    with pytest.raises(TypeError, match=re.escape(f"FastView({into}=")) as raised:
        build(**given)
    assert into in str(raised.value)


def test_the_wrong_value_types_are_named() -> None:
    given = fields(engine())
    cases: dict[str, tuple[object, str]] = {
        "names": (DictNameTable(), "a kzgate._native.NameTable expected, not DictNameTable"),
        "refs": (tuple(given["refs"]), "a list expected, not tuple"),
        "entries": ([], "a dict expected, not list"),
        "entry_type": (Entry(b"", (), (), 0.0, 0.0, ()), "a class expected, not Entry"),
        "plans": (list(given["plans"].items()), "a dict expected, not list"),
        "soa_tail": (bytearray(given["soa_tail"]), "bytes expected, not bytearray"),
        "opts": (None, "a dict expected, not NoneType"),
        "verdicts": (dict(given["verdicts"]).items(), "a dict expected, not dict_items"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(TypeError, match=re.escape(f"FastView({name}=...): {message}")):
            build(**{**given, name: value})


def entry_class(names: list[str], *, slots: bool = True) -> type:
    """A dataclass like Entry; without slots its fields have defaults, so that the class has an
    attribute of each name (a plain value, which C must not take for a slot)."""
    if slots:
        return dataclasses.make_dataclass("Entry", [(n, object) for n in names], slots=True)
    return dataclasses.make_dataclass("Entry", [(n, object, None) for n in names])


ENTRY_FIELDS = [f.name for f in dataclasses.fields(Entry)]


@pytest.mark.parametrize("field", ENTRY_FIELDS)
def test_a_cache_entry_class_without_a_field_is_refused_by_name(field: str) -> None:
    renamed = [n + "_" if n == field else n for n in ENTRY_FIELDS]
    given = fields(engine())
    with pytest.raises(TypeError, match=re.escape(f"entry_type=Entry): no slot '{field}'")):
        build(**{**given, "entry_type": entry_class(renamed)})


def test_a_cache_entry_class_without_slots_is_refused() -> None:
    given = fields(engine())
    plain = entry_class(ENTRY_FIELDS, slots=False)
    assert plain.reply is None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="no slot 'reply'"):
        build(**{**given, "entry_type": plain})

    class Properties:
        reply = ttl_offsets = ttls = inserted = expires = targets = property(lambda self: b"")

    with pytest.raises(TypeError, match="no slot 'reply'"):
        build(**{**given, "entry_type": Properties})


def test_cache_entries_are_read_by_slot_name_in_any_order() -> None:
    eng = engine()
    given = fields(eng)
    reordered = entry_class(ENTRY_FIELDS[::-1])
    entries = {
        key: reordered(**{n: getattr(e, n) for n in ENTRY_FIELDS[::-1]})
        for key, e in eng.cache.entries.items()
    }
    view = build(**{**given, "entries": entries, "entry_type": reordered})
    assert fast().answer(query("ok.kz"), 1.0, view) == engine().on_query(query("ok.kz"), 1.0)  # type: ignore[arg-type]


def test_an_entry_of_another_class_is_left_to_the_engine() -> None:
    eng = engine()
    ((key, entry),) = eng.cache.entries.items()
    other = entry_class(ENTRY_FIELDS)
    eng.cache.entries[key] = other(**{n: getattr(entry, n) for n in ENTRY_FIELDS})  # type: ignore[assignment]
    before = dict(eng.stats.verdicts)
    assert fast().answer(query("ok.kz"), 1.0, eng.fast_view) is None
    assert eng.stats.verdicts == before


@pytest.mark.parametrize("verdict", ["blocked", "cached", "dropped"])
def test_counters_c_adds_to_must_be_there(verdict: str) -> None:
    given = fields(engine())
    verdicts = dict(given["verdicts"])
    del verdicts[verdict]
    with pytest.raises(TypeError, match=f"no count at '{verdict}'"):
        build(**{**given, "verdicts": verdicts})


def test_stats_without_cache_hits_are_refused() -> None:
    @dataclasses.dataclass(slots=True)
    class Renamed:
        cache_hit: int = 0

    given = fields(engine())
    with pytest.raises(TypeError, match="no int cache_hits"):
        build(**{**given, "stats": Renamed()})


def reorder_plans(
    plans: dict[Any, tuple[Any, ...]], perm: Callable[[tuple[Any, ...]], tuple[Any, ...]]
) -> dict[Any, tuple[Any, ...]]:
    return {qtype: perm(plan) for qtype, plan in plans.items()}


@pytest.mark.parametrize(
    "perm",
    [
        lambda p: (p[1], p[0], p[2], p[3]),  # answer RRs before the rcode
        lambda p: (p[0], p[2], p[1], p[3]),  # ANCOUNT before the answer RRs
        lambda p: (p[3], p[1], p[2], p[0]),  # SOA? first
        lambda p: p[:3],  # one dropped
        lambda p: (*p, b""),  # one added
        lambda p: (p[0] + 16, *p[1:]),  # no rcode
        lambda p: (p[0], p[1], 70000, p[3]),  # no ANCOUNT
        lambda p: (p[0], p[1], p[2], int(p[3])),  # SOA? as an int
    ],
    ids=[
        "rrs-rcode",
        "ancount-rrs",
        "soa-first",
        "three",
        "five",
        "rcode16",
        "ancount70000",
        "soa-int",
    ],
)
def test_block_plans_of_another_shape_are_refused(
    perm: Callable[[tuple[Any, ...]], tuple[Any, ...]],
) -> None:
    given = fields(engine())
    with pytest.raises(TypeError, match=re.escape("FastView(plans=...): plans[")):
        build(**{**given, "plans": reorder_plans(given["plans"], perm)})


def test_block_plans_need_one_for_other_types() -> None:
    given = fields(engine())
    plans = {k: v for k, v in given["plans"].items() if k is not None}
    with pytest.raises(TypeError, match="no plan for other types"):
        build(**{**given, "plans": plans})


def test_serve_and_answer_refuse_anything_but_a_fast_view() -> None:
    given = fields(engine())
    positional = (*(given[name] for name in FIELDS if name != "entry_type"), DnsStats())
    with pytest.raises(TypeError, match=re.escape("answer(): a kzgate._native.FastView expected")):
        fast().answer(query("bad.kz"), 1.0, positional)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("serve(): a kzgate._native.FastView expected")):
        fast().serve(-1, 1.0, positional)  # type: ignore[arg-type]


def test_an_engine_on_a_dict_table_has_no_view_and_still_answers() -> None:
    index = PolicyIndex(DictNameTable())
    index.set_domain("bad.kz", REF)
    eng = Engine(index, BlockSettings())
    assert not hasattr(eng, "fast_view")  # serve() cannot be handed one
    assert isinstance(eng.on_query(query("bad.kz"), 1.0), bytes)


def test_a_settings_change_gives_a_new_view_with_the_new_plans() -> None:
    eng = engine()
    old = eng.fast_view
    eng.settings = BlockSettings(mode="refused")
    assert eng.fast_view is not old
    assert eng.fast_view.plans is eng._block.fast_parts()[0]
    out = fast().answer(query("bad.kz"), 1.0, eng.fast_view)
    assert out is not None and dnslib.DNSRecord.parse(out).header.rcode == 5  # REFUSED
