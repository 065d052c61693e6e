"""The effective state: pure add/remove, checked against a brute-force recomputation."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzgate.model import Diff, InstructionRef, State, Target
from kzgate.names import IPNetwork, network_of
from kzgate.register import prefixes as prefixes_mod
from kzgate.register.state import EffectiveState

A = InstructionRef("mci", "1", "2026-11-01")
B = InstructionRef("mci", "2", "2026-11-01")
C = InstructionRef("sts", "1", "2026-11-01")


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def cidr(text: str) -> Target:
    return Target("cidr", text)


def ip(text: str) -> Target:
    return Target("ip", text)


def dom(text: str) -> Target:
    return Target("domain", text)


# -- a model to check against ---------------------------------------------------


def brute_force(active: dict[InstructionRef, list[Target]]) -> State:
    """Maximal prefixes of the union, and domains, each with the smallest exact ref."""
    domains: dict[str, InstructionRef] = {}
    nets: dict[IPNetwork, InstructionRef] = {}
    for ref, targets in active.items():
        for t in targets:
            if t.kind == "domain":
                domains[t.value] = min(domains.get(t.value, ref), ref)
            elif t.kind in ("ip", "cidr"):
                n = network_of(t.kind, t.value)
                nets[n] = min(nets.get(n, ref), ref)
    maximal = {
        n: r
        for n, r in nets.items()
        if not any(
            o != n and o.version == n.version and n.subnet_of(o)  # type: ignore[arg-type]
            for o in nets
        )
    }
    return State(domains, maximal)


def apply(view: dict[str, dict[object, InstructionRef]], diff: Diff) -> None:
    """Apply a diff the way an enforcer must, failing on any impossible step."""
    doms, prefs = view["domains"], view["prefixes"]
    assert not set(diff.domains_added) & diff.domains_removed
    assert not set(diff.domains_added) & set(diff.domains_relabelled)
    assert not set(diff.prefixes_added) & diff.prefixes_removed
    for d in diff.domains_removed:
        del doms[d]
    for d, r in diff.domains_relabelled.items():
        assert d in doms and doms[d] != r
        doms[d] = r
    for d, r in diff.domains_added.items():
        assert d not in doms
        doms[d] = r
    for p in diff.prefixes_removed:
        del prefs[p]
    for p, r in diff.prefixes_added.items():
        assert p not in prefs
        prefs[p] = r


@contextmanager
def batch_threshold(n: int) -> Iterator[None]:
    """Force the per-key or the rebuild path of the sorted lists."""
    old = prefixes_mod.BATCH
    prefixes_mod.BATCH = n
    try:
        yield
    finally:
        prefixes_mod.BATCH = old


# -- examples from the brief ------------------------------------------------------


def test_wider_prefix_replaces_narrower_and_narrower_comes_back() -> None:
    s = EffectiveState()
    d1 = s.add(A, [cidr("10.0.0.0/24"), ip("10.0.0.5")])
    assert d1.prefixes_added == {net("10.0.0.0/24"): A}
    d2 = s.add(B, [cidr("10.0.0.0/16")])
    assert d2.prefixes_removed == {net("10.0.0.0/24")}
    assert d2.prefixes_added == {net("10.0.0.0/16"): B}
    d3 = s.remove(B, [cidr("10.0.0.0/16")])
    assert d3.prefixes_removed == {net("10.0.0.0/16")}
    assert d3.prefixes_added == {net("10.0.0.0/24"): A}


def test_exposed_prefixes_are_the_maximal_ones_beneath() -> None:
    s = EffectiveState()
    s.add(A, [cidr("10.0.0.0/24"), ip("10.0.0.5"), ip("10.0.1.7"), ip("10.0.2.1")])
    s.add(B, [cidr("10.0.0.0/16")])
    s.remove(A, [ip("10.0.2.1")])  # A keeps the rest; a partial remove is harmless here
    d = s.remove(B, [cidr("10.0.0.0/16")])
    assert set(d.prefixes_added) == {net("10.0.0.0/24"), net("10.0.1.7/32")}


def test_address_inside_enforced_prefix_changes_nothing() -> None:
    s = EffectiveState()
    s.add(A, [cidr("10.0.0.0/24")])
    assert s.add(B, [ip("10.0.0.5")]).is_empty()
    assert s.remove(B, [ip("10.0.0.5")]).is_empty()
    assert set(s.snapshot().prefixes) == {net("10.0.0.0/24")}


def test_adjacent_prefixes_are_not_merged() -> None:
    s = EffectiveState()
    s.add(A, [cidr("10.0.0.0/25"), cidr("10.0.0.128/25")])
    assert set(s.snapshot().prefixes) == {net("10.0.0.0/25"), net("10.0.0.128/25")}


def test_resuming_one_of_two_overlapping_instructions_keeps_the_other() -> None:
    s = EffectiveState()
    s.add(A, [cidr("10.0.0.0/24"), dom("example.kz")])
    s.add(B, [ip("10.0.0.5"), dom("example.kz")])
    d = s.remove(A, [cidr("10.0.0.0/24"), dom("example.kz")])
    assert d.prefixes_removed == {net("10.0.0.0/24")}
    assert d.prefixes_added == {net("10.0.0.5/32"): B}
    assert d.domains_removed == frozenset()
    assert d.domains_relabelled == {"example.kz": B}
    snap = s.snapshot()
    assert snap.domains == {"example.kz": B}
    assert snap.prefixes == {net("10.0.0.5/32"): B}


def test_domain_refcount_and_relabel_on_smaller_ref() -> None:
    s = EffectiveState()
    assert s.add(B, [dom("a.kz")]).domains_added == {"a.kz": B}
    d = s.add(A, [dom("a.kz")])
    assert d.domains_added == {} and d.domains_relabelled == {"a.kz": A}
    d = s.add(C, [dom("a.kz")])
    assert d.is_empty()  # C > A: the label stays A
    assert s.remove(A, [dom("a.kz")]).domains_relabelled == {"a.kz": B}
    assert s.remove(B, [dom("a.kz")]).domains_relabelled == {"a.kz": C}
    assert s.remove(C, [dom("a.kz")]).domains_removed == {"a.kz"}


def test_url_and_app_are_recorded_not_enforced() -> None:
    s = EffectiveState()
    d = s.add(A, [Target("url", "https://x.kz/a"), Target("app", "kz.x.app")])
    assert d.is_empty()
    c = s.counts()
    assert (c["url"], c["app"], c["domain"]) == (1, 1, 0)
    s.remove(A, [Target("url", "https://x.kz/a"), Target("app", "kz.x.app")])
    assert (s.counts()["url"], s.counts()["app"]) == (0, 0)


def test_ipv6_and_ipv4_together() -> None:
    s = EffectiveState()
    d = s.add(A, [cidr("2001:db8::/32"), ip("2001:db8::1"), cidr("10.0.0.0/8"), ip("::1")])
    assert set(d.prefixes_added) == {net("2001:db8::/32"), net("10.0.0.0/8"), net("::1/128")}
    assert s.counts()["enforced_v6"] == 2 and s.counts()["enforced_v4"] == 1


def test_covering_queries() -> None:
    s = EffectiveState()
    s.add(A, [dom("example.kz"), cidr("10.0.0.0/8"), ip("10.1.2.3")])
    s.add(B, [dom("www.example.kz"), dom("example.kz"), cidr("10.0.0.0/8")])
    assert s.covering_domain("a.www.example.kz") == [
        ("www.example.kz", B),
        ("example.kz", A),
        ("example.kz", B),
    ]
    assert s.covering_domain("example.com") == []
    assert s.covering_ip("10.1.2.3") == [
        (net("10.1.2.3/32"), A),
        (net("10.0.0.0/8"), A),
        (net("10.0.0.0/8"), B),
    ]
    assert s.covering_ip("2001:db8::1") == []


def test_counts_distinguish_ip_from_host_length_cidr() -> None:
    s = EffectiveState()
    a_targets = [ip("10.0.0.1"), cidr("10.0.0.2/32"), cidr("10.0.0.0/24"), dom("a.kz")]
    s.add(A, a_targets)
    s.add(B, [cidr("10.0.0.1/32"), ip("10.0.0.2")])
    c = s.counts()
    assert (c["ip"], c["cidr"], c["domain"]) == (2, 3, 1)
    s.remove(B, [cidr("10.0.0.1/32"), ip("10.0.0.2")])
    c = s.counts()
    assert (c["ip"], c["cidr"]) == (1, 2)
    assert c["enforced_v4"] == 1
    assert EffectiveState.load([(A, a_targets)]).counts() == c


def test_load_equals_incremental_adds() -> None:
    active = {
        A: [dom("a.kz"), dom("b.kz"), cidr("10.0.0.0/24"), ip("10.0.0.9"), ip("2001:db8::1")],
        B: [dom("a.kz"), cidr("10.0.0.0/16"), Target("url", "https://a.kz/")],
        C: [ip("192.0.2.1"), cidr("2001:db8::/48")],
    }
    inc = EffectiveState()
    for ref, targets in active.items():
        inc.add(ref, targets)
    bulk = EffectiveState.load(active.items())
    assert bulk.snapshot() == inc.snapshot() == brute_force(active)
    assert bulk.counts() == inc.counts()
    # and the bulk-built state keeps working incrementally
    bulk.remove(B, active[B])
    inc.remove(B, active[B])
    assert bulk.snapshot() == inc.snapshot()


# -- the property -------------------------------------------------------------------

REFS = [InstructionRef(iss, str(n), "2026-11-01") for iss in ("mci", "sts") for n in range(4)]
TARGETS = st.one_of(
    st.sampled_from(["a.kz", "b.a.kz", "c.kz", "xn--80ao21a"]).map(dom),
    st.builds(
        lambda third, last, length: cidr(
            str(ipaddress.ip_network(f"10.0.{third}.{last}/{length}", strict=False))
        ),
        st.integers(0, 3),
        st.integers(0, 255),
        st.sampled_from([16, 22, 23, 24, 25, 30, 32]),
    ),
    st.builds(lambda third, last: ip(f"10.0.{third}.{last}"), st.integers(0, 3), st.integers(0, 7)),
    st.sampled_from(["2001:db8::/32", "2001:db8::/64", "2001:db8::1", "::1"]).map(
        lambda v: cidr(v) if "/" in v else ip(v)
    ),
    st.sampled_from([Target("url", "https://a.kz/x"), Target("app", "kz.a")]),
)
STEPS = st.lists(
    st.tuples(st.sampled_from(REFS), st.lists(TARGETS, max_size=8)), min_size=1, max_size=25
)


def check_sequence(steps: list[tuple[InstructionRef, list[Target]]]) -> None:
    s = EffectiveState()
    active: dict[InstructionRef, list[Target]] = {}
    view: dict[str, dict[object, InstructionRef]] = {"domains": {}, "prefixes": {}}
    for ref, targets in steps:
        if ref in active:  # toggling: the step resumes the instruction
            apply(view, s.remove(ref, active.pop(ref)))
        else:
            active[ref] = targets
            apply(view, s.add(ref, targets))
        snap = s.snapshot()
        expected = brute_force(active)
        assert snap == expected
        assert view["domains"] == dict(snap.domains)
        # Diff has no prefix relabel: an enforcer's labels may lag, the set may not.
        assert set(view["prefixes"]) == set(snap.prefixes)
        assert EffectiveState.load(active.items()).snapshot() == snap


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_property_diffs_and_snapshot_match_brute_force(
    steps: list[tuple[InstructionRef, list[Target]]],
) -> None:
    check_sequence(steps)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_property_holds_on_the_rebuild_path(
    steps: list[tuple[InstructionRef, list[Target]]],
) -> None:
    with batch_threshold(0):  # every list change goes through the batch code
        check_sequence(steps)


@pytest.mark.parametrize("threshold", [0, 64])
def test_many_prefixes_at_once(threshold: int) -> None:
    hosts = [ip(f"10.0.{i // 256}.{i % 256}") for i in range(0, 2048, 3)]
    nets24 = [cidr(f"10.0.{i}.0/24") for i in range(0, 8, 2)]
    with batch_threshold(threshold):
        s = EffectiveState()
        active = {A: hosts, B: nets24}
        s.add(A, hosts)
        s.add(B, nets24)
        assert s.snapshot() == brute_force(active)
        s.add(C, [cidr("10.0.0.0/21")])
        assert set(s.snapshot().prefixes) == {net("10.0.0.0/21")}
        s.remove(C, [cidr("10.0.0.0/21")])
        assert s.snapshot() == brute_force(active)
        s.remove(B, nets24)
        del active[B]
        assert s.snapshot() == brute_force(active)
