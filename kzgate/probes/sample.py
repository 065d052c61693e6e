"""What a probe round checks: which register targets, as which names and addresses.

Pure. A round takes up to ``n`` restricted targets and up to ``n`` targets resumed
within the monitoring period (Order 366: 15 working days after a resumption),
rotating with the round number so that successive rounds cover different ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Sequence

from kzgate.model import Candidate
from kzgate.probes.model import Expect, ProbeTarget

# Kazakhstan's public holidays that fall on a fixed date (Labour Code; Law "On
# holidays"), as (month, day). The moving religious holiday (the first day of
# Kurban Ait) is not in the table, nor are the government's yearly day-off swaps:
# a day missing here is counted as a working day, which only makes the window
# longer (it starts earlier), so resumed names are watched longer: safe.
# Oct 25 (a day off from 2022) and Dec 17 (one until 2021) are kept for every
# year for the same reason.
FIXED_HOLIDAYS: frozenset[tuple[int, int]] = frozenset(
    {
        (1, 1), (1, 2),  # New Year
        (1, 7),  # Orthodox Christmas
        (3, 8),  # International Women's Day
        (3, 21), (3, 22), (3, 23),  # Nauryz
        (5, 1),  # Unity of the People of Kazakhstan
        (5, 7),  # Defender of the Fatherland
        (5, 9),  # Victory Day
        (7, 6),  # Capital Day
        (8, 30),  # Constitution Day
        (10, 25),  # Republic Day
        (12, 16), (12, 17),  # Independence Day
    }
)  # fmt: skip
# Religious holidays are not moved when they fall on a weekend; the others are
# (Labour Code art. 85: the day off moves to the next working day).
_NOT_MOVED = frozenset({(1, 7)})
PROBE_LABEL = "kzgate-probe-"
_MAX_NAME = 253


def _holiday(day: dt.date) -> bool:
    return (day.month, day.day) in FIXED_HOLIDAYS


def is_working_day(day: dt.date) -> bool:
    """Mon-Fri, not a fixed holiday, and not a weekday that a weekend holiday moved to."""
    return not _days_off(day)[-1]


def _days_off(day: dt.date) -> list[bool]:
    """Whether each day from three weeks before ``day`` up to it is off. A holiday on a
    weekend moves its day off to the next working day; three weeks reach back past any
    run of holidays and weekends, so the carried days are settled by ``day``."""
    out: list[bool] = []
    carried = 0
    for back in range(21, -1, -1):
        d = day - dt.timedelta(days=back)
        weekend, holiday = d.weekday() >= 5, _holiday(d)
        if weekend and holiday and (d.month, d.day) not in _NOT_MOVED:
            carried += 1
        if weekend or holiday:
            out.append(True)
        elif carried:
            carried -= 1
            out.append(True)
        else:
            out.append(False)
    return out


def monitoring_start(today: dt.date, working_days: int = 15) -> dt.date:
    """The first day of the window of the last ``working_days`` working days up to ``today``."""
    if working_days < 1:
        raise ValueError("working_days must be at least 1")
    day, counted = today, 0
    while True:
        if is_working_day(day):
            counted += 1
            if counted == working_days:
                return day
        day -= dt.timedelta(days=1)


def choose(
    candidates: Sequence[Candidate],
    n: int,
    round_no: int,
    blocked_name: Callable[[str], bool],
    blocked_address: Callable[[str], bool],
    since: dt.datetime,
) -> list[ProbeTarget]:
    """Up to ``n`` restricted and up to ``n`` recently resumed (``resumed_at >= since``)
    candidates as probe targets, the window rotating with ``round_no``."""
    restricted = [c for c in candidates if c.resumed_at is None]
    resumed = [c for c in candidates if c.resumed_at is not None and c.resumed_at >= since]
    chosen = _rotate(restricted, n, round_no) + _rotate(resumed, n, round_no)
    out: list[ProbeTarget] = []
    for candidate in chosen:
        out.extend(_targets(candidate, blocked_name, blocked_address, salt=str(round_no)))
    return out


def targets_of(
    candidates: Iterable[Candidate],
    blocked_name: Callable[[str], bool],
    blocked_address: Callable[[str], bool],
) -> Iterator[ProbeTarget]:
    """Every candidate as probe targets, without sampling (``kzgate verify --instruction``
    and ``--all``, and the checks after a resume)."""
    for candidate in candidates:
        yield from _targets(candidate, blocked_name, blocked_address, salt="all")


def _rotate(items: Sequence[Candidate], n: int, round_no: int) -> list[Candidate]:
    if n <= 0 or not items:
        return []
    if len(items) <= n:
        return list(items)
    start = (round_no * n) % len(items)
    return [items[(start + i) % len(items)] for i in range(n)]


def _targets(
    candidate: Candidate,
    blocked_name: Callable[[str], bool],
    blocked_address: Callable[[str], bool],
    *,
    salt: str,
) -> list[ProbeTarget]:
    target = candidate.target
    source = f"{target.kind}:{target.value}"
    ref = candidate.instruction

    def name(value: str) -> ProbeTarget:
        expect: Expect = "blocked" if blocked_name(value) else "open"
        return ProbeTarget("name", value, source, ref, expect)

    def address(value: str) -> ProbeTarget:
        expect: Expect = "blocked" if blocked_address(value) else "open"
        return ProbeTarget("address", value, source, ref, expect)

    if target.kind == "domain":
        # Stored normalized, IDN as A-labels: probed exactly as stored.
        out = [name(target.value)]
        if candidate.resumed_at is None:
            sub = subdomain_probe(target.value, salt)
            if sub is not None:
                out.append(name(sub))  # a restriction covers every subdomain
        return out
    if target.kind == "ip":
        return [address(target.value)]
    if target.kind == "cidr":
        return [address(address_inside(target.value))]
    return []  # url and app targets are not probed


def subdomain_probe(domain: str, salt: str) -> str | None:
    """``kzgate-probe-<hex>.<domain>``, a name nobody registers, or None when too long.

    The hex changes with ``salt`` (the round) so that a resolver's cached answer for
    one round's name does not stand in for the next round's check."""
    digest = hashlib.sha256(f"{salt}\0{domain}".encode()).hexdigest()[:8]
    sub = f"{PROBE_LABEL}{digest}.{domain}"
    return sub if len(sub) <= _MAX_NAME else None


def address_inside(cidr: str) -> str:
    """One address inside a prefix: the network address of a /32 or /128, otherwise
    the first address after it (the network address itself may be special)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if net.num_addresses == 1:
        return str(net.network_address)
    return str(net.network_address + 1)
