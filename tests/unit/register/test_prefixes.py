"""The maximal active prefixes, on their own: keys in, keys out, against brute force.

No instructions here (test_state.py has the refs, labels and diffs): a prefix
is active or not, and what is reported must be exactly the maximal ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzgate.names import IPNetwork
from kzgate.register import prefixes
from kzgate.register.prefixes import MaximalPrefixes, key_network, prefix_key


def key(text: str) -> tuple[int, int]:
    return prefix_key(text)


def brute_force(active: set[IPNetwork]) -> set[IPNetwork]:
    return {
        n
        for n in active
        if not any(
            o != n and o.version == n.version and n.subnet_of(o)  # type: ignore[arg-type]
            for o in active
        )
    }


def maximal_of(mp: MaximalPrefixes) -> set[IPNetwork]:
    return {key_network(fam, k) for fam in (0, 1) for k in mp.maximal(fam)}


@contextmanager
def batch_threshold(n: int) -> Iterator[None]:
    """Force the per-key or the rebuild path of the sorted lists."""
    old = prefixes.BATCH
    prefixes.BATCH = n
    try:
        yield
    finally:
        prefixes.BATCH = old


class Model:
    """MaximalPrefixes driven the way the state drives it, with what it reports applied
    to a plain set, the way an enforcer applies a diff."""

    def __init__(self) -> None:
        self.mp = MaximalPrefixes()
        self.active: set[IPNetwork] = set()
        self.view: set[IPNetwork] = set()

    def toggle(self, texts: list[str]) -> None:
        """Grow the inactive ones, shrink the active ones (each family one batch)."""
        for fam in (0, 1):
            keys = {key(t)[1] for t in texts if key(t)[0] == fam}
            new = [k for k in keys if key_network(fam, k) not in self.active]
            gone = [k for k in keys if key_network(fam, k) in self.active]
            if new:
                self.active |= {key_network(fam, k) for k in new}
                self.apply(fam, *self.mp.grow(fam, new))
            if gone:
                self.active -= {key_network(fam, k) for k in gone}
                self.apply(fam, *self.mp.shrink(fam, gone))

    def apply(self, fam: int, became: list[int], ceased: list[int]) -> None:
        added = {key_network(fam, k) for k in became}
        removed = {key_network(fam, k) for k in ceased}
        assert len(added) == len(became) and len(removed) == len(ceased)
        assert not added & removed
        assert removed <= self.view, "reported as no longer maximal, but never was"
        self.view -= removed
        assert not added & self.view, "reported as newly maximal, but already was"
        self.view |= added


# -- the key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["10.0.0.0/8", "10.1.2.3", "0.0.0.0/0", "2001:db8::/32", "::1", "::/0"]
)
def test_a_key_names_its_network(text: str) -> None:
    fam, k = key(text)
    assert key_network(fam, k) == ipaddress.ip_network(text)
    assert fam == (1 if ":" in text else 0)


def test_keys_sort_by_start_with_the_containing_prefix_first() -> None:
    texts = ["10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/24", "10.0.0.1", "10.0.1.0/24", "11.0.0.0/8"]
    assert sorted(key(t)[1] for t in texts) == [key(t)[1] for t in texts]


# -- examples -------------------------------------------------------------------------------


def test_wider_prefix_replaces_the_narrower_and_gives_them_back() -> None:
    mp = MaximalPrefixes()
    narrow = [key("10.0.0.0/24")[1], key("10.0.0.5")[1], key("10.0.9.9")[1]]
    assert mp.grow(0, list(narrow)) == ([narrow[0], narrow[2]], [])
    wide = key("10.0.0.0/16")[1]
    assert mp.grow(0, [wide]) == ([wide], [narrow[0], narrow[2]])
    assert mp.shrink(0, [wide]) == ([narrow[0], narrow[2]], [wide])


def test_a_prefix_inside_a_maximal_one_changes_nothing() -> None:
    mp = MaximalPrefixes()
    mp.grow(0, [key("10.0.0.0/24")[1]])
    assert mp.grow(0, [key("10.0.0.5")[1]]) == ([], [])
    assert mp.shrink(0, [key("10.0.0.5")[1]]) == ([], [])
    assert maximal_of(mp) == {ipaddress.ip_network("10.0.0.0/24")}


def test_adjacent_prefixes_stay_apart() -> None:
    mp = MaximalPrefixes()
    mp.grow(0, [key("10.0.0.0/25")[1], key("10.0.0.128/25")[1]])
    assert len(mp.maximal(0)) == 2


def test_families_are_apart() -> None:
    mp = MaximalPrefixes()
    mp.grow(0, [key("0.0.0.0/0")[1]])
    assert mp.grow(1, [key("::1")[1]]) == ([key("::1")[1]], [])
    assert maximal_of(mp) == {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::1")}


# -- the property ----------------------------------------------------------------------------

NETS = st.one_of(
    st.builds(
        lambda third, last, length: str(
            ipaddress.ip_network(f"10.0.{third}.{last}/{length}", strict=False)
        ),
        st.integers(0, 3),
        st.integers(0, 255),
        st.sampled_from([8, 16, 22, 23, 24, 25, 30, 31, 32]),
    ),
    st.sampled_from(["2001:db8::/32", "2001:db8::/64", "2001:db8::1", "2001:db8:1::/48", "::1"]),
)
STEPS = st.lists(st.lists(NETS, min_size=1, max_size=12), min_size=1, max_size=30)


def check(steps: list[list[str]]) -> None:
    m = Model()
    for texts in steps:
        m.toggle(texts)
        expected = brute_force(m.active)
        assert m.view == expected
        assert maximal_of(m.mp) == expected
        for fam in (0, 1):
            assert m.mp.maximal(fam) == sorted(m.mp.maximal(fam))
        v4 = [key(str(n))[1] for n in m.active if n.version == 4]
        v6 = [key(str(n))[1] for n in m.active if n.version == 6]
        rebuilt = MaximalPrefixes.build((v4, v6))
        assert maximal_of(rebuilt) == expected


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_property_reports_exactly_the_maximal_prefixes(steps: list[list[str]]) -> None:
    check(steps)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_property_holds_on_the_rebuild_path(steps: list[list[str]]) -> None:
    with batch_threshold(0):  # every list change goes through the batch code
        check(steps)


@pytest.mark.parametrize("threshold", [0, 64])
def test_many_keys_at_once(threshold: int) -> None:
    hosts = [f"10.0.{i // 256}.{i % 256}" for i in range(0, 2048, 3)]
    nets24 = [f"10.0.{i}.0/24" for i in range(0, 8, 2)]
    with batch_threshold(threshold):
        m = Model()
        m.toggle(hosts)
        m.toggle(nets24)
        assert m.view == brute_force(m.active)
        m.toggle(["10.0.0.0/21"])
        assert m.view == {ipaddress.ip_network("10.0.0.0/21")}
        m.toggle(["10.0.0.0/21"])
        assert m.view == brute_force(m.active)
        m.toggle(nets24)
        assert m.view == brute_force(m.active) == {ipaddress.ip_network(h) for h in hosts}
