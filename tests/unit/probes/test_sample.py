"""What a round samples: the working-day window, rotation, subdomain probes, addresses."""

from __future__ import annotations

import datetime as dt

from kzgate.model import Candidate, InstructionRef, Target
from kzgate.probes.sample import (
    address_inside,
    choose,
    is_working_day,
    monitoring_start,
    targets_of,
)

REF = InstructionRef("mci", "12", "2026-11-01")
KZ = dt.timezone(dt.timedelta(hours=5))
SINCE = dt.datetime(2026, 11, 1, tzinfo=KZ)


def restricted(kind: str, value: str) -> Candidate:
    return Candidate(Target(kind, value), REF)  # type: ignore[arg-type]


def resumed(value: str, at: dt.datetime) -> Candidate:
    return Candidate(Target("domain", value), REF, resumed_at=at)


def never(_: str) -> bool:
    return False


def always(_: str) -> bool:
    return True


def test_weekends_and_fixed_holidays_are_not_working_days() -> None:
    assert is_working_day(dt.date(2026, 11, 20))  # a Friday
    assert not is_working_day(dt.date(2026, 11, 21))  # Saturday
    assert not is_working_day(dt.date(2026, 12, 16))  # Independence Day, a Wednesday
    assert not is_working_day(dt.date(2025, 3, 21))  # Nauryz, a Friday


def test_a_weekend_holiday_moves_to_the_next_working_day() -> None:
    # 2020: Nauryz on Sat 21, Sun 22, Mon 23 March: the days off moved to Tue 24, Wed 25.
    assert not is_working_day(dt.date(2020, 3, 24))
    assert not is_working_day(dt.date(2020, 3, 25))
    assert is_working_day(dt.date(2020, 3, 26))
    # Orthodox Christmas is religious: on a Sunday (2024-01-07) it is not moved.
    assert is_working_day(dt.date(2024, 1, 8))


def test_monitoring_window_counts_fifteen_working_days() -> None:
    # Friday 2026-11-20 back to Monday 2026-11-02: three weeks of Mon-Fri, no holiday.
    assert monitoring_start(dt.date(2026, 11, 20)) == dt.date(2026, 11, 2)
    assert monitoring_start(dt.date(2026, 11, 20), 1) == dt.date(2026, 11, 20)
    # On a Saturday the window ends with the Friday before.
    assert monitoring_start(dt.date(2026, 11, 21), 1) == dt.date(2026, 11, 20)
    # Dec 16 (Wed) and 17 (Thu) 2026 are off: two working days further back than Nov 30.
    assert monitoring_start(dt.date(2026, 12, 18)) == dt.date(2026, 11, 26)


def test_choose_takes_up_to_n_of_each_and_rotates() -> None:
    active = [restricted("ip", f"192.0.2.{i}") for i in range(10)]
    recent = [resumed(f"r{i}.kz", SINCE + dt.timedelta(days=1)) for i in range(3)]
    old = [resumed("old.kz", SINCE - dt.timedelta(days=1))]
    first = choose(active + recent + old, 4, 0, never, always, SINCE)
    second = choose(active + recent + old, 4, 1, never, always, SINCE)
    addrs = lambda ts: [t.value for t in ts if t.kind == "address"]  # noqa: E731
    assert addrs(first) == [f"192.0.2.{i}" for i in range(4)]
    assert addrs(second) == [f"192.0.2.{i}" for i in range(4, 8)]
    names = [t.value for t in first if t.kind == "name"]
    assert names == ["r0.kz", "r1.kz", "r2.kz"]  # resumed: no subdomain probe; old left out
    assert all(t.expect == "open" for t in first if t.kind == "name")
    assert all(t.expect == "blocked" for t in first if t.kind == "address")
    seen = {t.value for r in range(3) for t in choose(active, 4, r, never, always, SINCE)}
    assert len(seen) == 10  # three rounds cover every candidate


def test_restricted_domain_gets_a_subdomain_probe_in_a_labels() -> None:
    idn = "xn--80ak6aa92e.kz"
    out = list(targets_of([restricted("domain", idn)], lambda n: n.endswith(idn), never))
    assert out[0].value == idn
    sub = out[1]
    assert sub.value.startswith("kzgate-probe-") and sub.value.endswith("." + idn)
    assert sub.source == f"domain:{idn}" and sub.expect == "blocked"


def test_subdomain_probe_changes_each_round_and_is_dropped_when_too_long() -> None:
    c = restricted("domain", "example.kz")
    a = choose([c], 1, 0, always, never, SINCE)[1].value
    b = choose([c], 1, 1, always, never, SINCE)[1].value
    assert a != b
    long = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 50])  # 242 characters
    assert [t.value for t in targets_of([restricted("domain", long)], always, never)] == [long]


def test_expect_comes_from_the_effective_state() -> None:
    # A resumed name another instruction still covers is expected blocked.
    c = resumed("still.kz", SINCE + dt.timedelta(hours=1))
    (t,) = choose([c], 5, 0, lambda n: n == "still.kz", never, SINCE)
    assert t.expect == "blocked"


def test_address_inside_a_prefix() -> None:
    assert address_inside("10.0.0.0/24") == "10.0.0.1"
    assert address_inside("10.0.0.7/32") == "10.0.0.7"
    assert address_inside("2001:db8::/32") == "2001:db8::1"
    assert address_inside("2001:db8::5/128") == "2001:db8::5"
    (t,) = targets_of([restricted("cidr", "10.1.0.0/16")], never, always)
    assert (t.kind, t.value, t.source) == ("address", "10.1.0.1", "cidr:10.1.0.0/16")


def test_url_and_app_targets_are_not_probed() -> None:
    cs = [restricted("url", "https://x.kz/a"), restricted("app", "telegram")]
    assert list(targets_of(cs, always, always)) == []
