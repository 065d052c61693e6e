"""The connection table: caps in total and per client, and the choice of whom to evict."""

from __future__ import annotations

import pytest

from kzgate.connections import EVICT_SCAN, ConnectionTable, Tally, client_of


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/kzgate.sock", "/run/kzgate.sock"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address: str, client: str) -> None:
    assert client_of(address) == client


def test_per_client_cap_comes_first_and_evicts_nobody() -> None:
    table: ConnectionTable[int] = ConnectionTable(max_total=10, max_per_client=2)
    table.add(1, "a")
    table.add(2, "a")
    assert table.admit("a", lambda c: True) == ("per_client", None)
    assert table.admit("b", lambda c: True) == (None, None)
    table.remove(1)
    assert table.admit("a") == (None, None)
    assert table.held_by("a") == 1


def test_when_full_the_least_recently_active_evictable_one_goes() -> None:
    table: ConnectionTable[int] = ConnectionTable(max_total=3, max_per_client=3)
    for conn, client in ((1, "a"), (2, "b"), (3, "c")):
        table.add(conn, client)
    assert table.admit("d") == ("connections", None)  # the listener allows no eviction
    assert table.admit("d", lambda c: True) == (None, 1)
    table.touch(1)  # 1 did something: 2 is now the idlest
    assert table.admit("d", lambda c: True) == (None, 2)
    assert table.admit("d", lambda c: c != 2) == (None, 3)
    assert table.admit("d", lambda c: False) == ("connections", None)


def test_eviction_looks_at_a_bounded_number_of_connections() -> None:
    table: ConnectionTable[int] = ConnectionTable(max_total=100, max_per_client=100)
    for conn in range(100):
        table.add(conn, "a")
    seen: list[int] = []

    def busy(conn: int) -> bool:
        seen.append(conn)
        return False

    assert table.admit("b", busy) == ("connections", None)
    assert seen == list(range(EVICT_SCAN))


def test_remove_is_idempotent_and_frees_the_client() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=2, max_per_client=1)
    table.add("x", "a")
    table.remove("x")
    table.remove("x")
    table.touch("x")  # a connection already gone: nothing happens
    assert len(table) == 0 and table.held_by("a") == 0 and "x" not in table


def test_enter_counts_each_refusal_and_evicts_before_it_adds() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=2, max_per_client=1)
    refusals: list[str] = []
    evicted: list[str] = []

    def enter(conn: str, client: str, can_evict: bool = True) -> bool:
        return table.enter(
            conn,
            client,
            refused=refusals.append,
            can_evict=lambda c: can_evict,
            evict=evicted.append,
        )

    assert enter("x", "a") and enter("y", "b")
    assert not enter("x2", "a")  # a's cap
    assert not enter("z", "c", can_evict=False)  # full, nobody may go
    assert (refusals, evicted, list(table)) == (["per_client", "connections"], [], ["x", "y"])
    assert enter("z", "c")  # full: x, the least recently active, makes room
    assert (refusals[-1], evicted, list(table)) == ("evicted", ["x"], ["y", "z"])
    assert table.held_by("a") == 0 and table.held_by("c") == 1


def test_a_tally_forgets_a_client_that_holds_nothing() -> None:
    tally = Tally()
    tally.add("a")
    tally.add("a")
    tally.add("b")
    assert (tally.total, tally.held_by("a"), tally.held_by("b")) == (3, 2, 1)
    tally.remove("a")
    tally.remove("b")
    assert (tally.total, tally.held_by("a"), tally.held_by("b")) == (1, 1, 0)
    assert tally._held == {"a": 1}  # no zero count left behind by a client that went
