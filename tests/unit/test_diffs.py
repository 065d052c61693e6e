"""compose(): sequential diffs folded into one change the state as applying them one by one does."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from kzgate.diffs import compose
from kzgate.model import Diff, InstructionRef, Target
from kzgate.names import IPNetwork
from kzgate.register.state import EffectiveState

A, B, C = (InstructionRef("mci", n, "2026-11-01") for n in ("1", "2", "3"))
REFS = [InstructionRef(iss, str(n), "2026-11-01") for iss in ("mci", "sts") for n in range(4)]
Held = tuple[dict[str, InstructionRef], dict[IPNetwork, InstructionRef]]


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def apply(held: Held, diff: Diff) -> Held:
    """As an enforcer applies a diff (tests/support/enforcer_fakes.py's Recording)."""
    domains = {d: r for d, r in held[0].items() if d not in diff.domains_removed}
    prefixes = {p: r for p, r in held[1].items() if p not in diff.prefixes_removed}
    domains.update(diff.domains_added)
    domains.update(diff.domains_relabelled)
    prefixes.update(diff.prefixes_added)
    return domains, prefixes


def assert_valid(held: Held, diff: Diff) -> None:
    """What enforcers are promised: added keys are absent, removed and relabelled present."""
    assert not set(diff.domains_added) & set(held[0])
    assert diff.domains_removed <= set(held[0])
    assert set(diff.domains_relabelled) <= set(held[0]) - diff.domains_removed
    assert not set(diff.prefixes_added) & (set(held[1]) - diff.prefixes_removed)
    assert diff.prefixes_removed <= set(held[1])


def test_add_then_remove_is_nothing_and_remove_then_add_is_a_relabel() -> None:
    added = Diff(domains_added={"a.kz": A}, prefixes_added={net("10.0.0.0/8"): A})
    removed = Diff(
        domains_removed=frozenset({"a.kz"}), prefixes_removed=frozenset({net("10.0.0.0/8")})
    )
    assert compose([added, removed]).is_empty()
    both = compose(
        [removed, Diff(domains_added={"a.kz": B}, prefixes_added={net("10.0.0.0/8"): B})]
    )
    assert both == Diff(domains_relabelled={"a.kz": B})  # the prefix was and is enforced


def test_relabel_chain_keeps_the_latest_and_an_added_name_stays_added() -> None:
    steps = [
        Diff(domains_added={"new.kz": A}),
        Diff(domains_relabelled={"old.kz": B, "new.kz": B}),
        Diff(domains_relabelled={"old.kz": C}),
    ]
    assert compose(steps) == Diff(domains_added={"new.kz": B}, domains_relabelled={"old.kz": C})


def test_one_diff_is_itself_and_none_is_empty() -> None:
    one = Diff(domains_added={"a.kz": A})
    assert compose([Diff(), one, Diff()]) is one
    assert compose([]) == Diff()


# -- against a model: any valid diffs, applied one by one ----------------------------

DOMAINS = [f"d{i}.kz" for i in range(8)]
NETS = [net(f"10.0.{i}.0/24") for i in range(6)]


@st.composite
def histories(draw: st.DrawFn) -> tuple[Held, list[Diff]]:
    """A start and diffs valid against it in turn: adds of absent keys, removes and
    relabels of present ones (what an enforcer is promised)."""
    held: Held = (
        {d: draw(st.sampled_from(REFS)) for d in draw(st.sets(st.sampled_from(DOMAINS)))},
        {p: draw(st.sampled_from(REFS)) for p in draw(st.sets(st.sampled_from(NETS)))},
    )
    start = held
    diffs = []
    for _ in range(draw(st.integers(0, 12))):
        domains, prefixes = held
        gone = draw(st.sets(st.sampled_from(DOMAINS))) & set(domains)
        kept = sorted(set(domains) - gone)
        relabelled: dict[str, InstructionRef] = {}
        if kept:
            for d in sorted(draw(st.sets(st.sampled_from(kept)))):
                relabelled[d] = draw(st.sampled_from(REFS))
        new = draw(st.sets(st.sampled_from(DOMAINS))) - set(domains)
        p_gone = draw(st.sets(st.sampled_from(NETS))) & set(prefixes)
        p_new = draw(st.sets(st.sampled_from(NETS))) - set(prefixes)
        diff = Diff(
            domains_added={d: draw(st.sampled_from(REFS)) for d in sorted(new)},
            domains_removed=frozenset(gone),
            domains_relabelled=relabelled,
            prefixes_added={p: draw(st.sampled_from(REFS)) for p in sorted(p_new)},
            prefixes_removed=frozenset(p_gone),
        )
        diffs.append(diff)
        held = apply(held, diff)
    return start, diffs


@settings(max_examples=400, deadline=None)
@given(histories())
def test_composed_equals_one_by_one(history: tuple[Held, list[Diff]]) -> None:
    start, diffs = history
    one_by_one = start
    for diff in diffs:
        one_by_one = apply(one_by_one, diff)
    composed = compose(diffs)
    assert_valid(start, composed)
    at_once = apply(start, composed)
    assert at_once[0] == one_by_one[0]  # domains and their labels
    assert set(at_once[1]) == set(one_by_one[1])
    # No prefix relabel in a Diff: a prefix enforced before and after keeps its label.
    for p, ref in at_once[1].items():
        assert ref == (start[1][p] if p in start[1] else one_by_one[1][p])


# -- against the effective state: real diffs, prefixes whose maximal set changes -------


def _cidr(third: int, last: int, length: int) -> Target:
    return Target("cidr", str(ipaddress.ip_network(f"10.0.{third}.{last}/{length}", strict=False)))


TARGETS = st.one_of(
    st.sampled_from(["a.kz", "b.a.kz", "c.kz"]).map(lambda d: Target("domain", d)),
    st.builds(_cidr, st.integers(0, 3), st.integers(0, 255), st.sampled_from([16, 22, 24, 30, 32])),
    st.builds(lambda i: Target("ip", f"10.0.0.{i}"), st.integers(0, 7)),
)
STEPS = st.lists(
    st.tuples(st.sampled_from(REFS), st.lists(TARGETS, max_size=6), st.booleans()),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_pages_of_state_diffs_compose_to_the_state(
    steps: list[tuple[InstructionRef, list[Target], bool]],
) -> None:
    """Instructions toggled on and off, cut into pages where ``page_ends`` says; each
    page applied as one composed diff ends where the one-by-one enforcer does."""
    state = EffectiveState()
    active: dict[InstructionRef, list[Target]] = {}
    one_by_one: Held = ({}, {})
    paged: Held = ({}, {})
    page: list[Diff] = []
    for ref, targets, page_ends in steps:
        if ref in active:
            diff = state.remove(ref, active.pop(ref))
        else:
            active[ref] = targets
            diff = state.add(ref, targets)
        one_by_one = apply(one_by_one, diff)
        page.append(diff)
        if page_ends:
            composed = compose(page)
            assert_valid(paged, composed)
            paged, page = apply(paged, composed), []
    composed = compose(page)
    assert_valid(paged, composed)
    paged = apply(paged, composed)
    snap = state.snapshot()
    assert paged[0] == one_by_one[0] == dict(snap.domains)
    assert set(paged[1]) == set(one_by_one[1]) == set(snap.prefixes)
