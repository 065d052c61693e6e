"""What enforcers leave out, per task and per enforcer over time (pure)."""

from __future__ import annotations

import ipaddress

from kzgate.enforce.notenforced import NotEnforced, for_targets
from kzgate.model import Diff, InstructionRef, State, Target

REF = InstructionRef("mci", "1", "2026-01-01")


class Picky:
    """Cannot carry domains starting with "long" nor IPv6 prefixes."""

    def __init__(self, name: str = "picky") -> None:
        self.name = name

    async def apply(self, diff: Diff) -> None: ...

    async def reconcile(self, state: State) -> Diff:
        return Diff()

    def uncarried(self, diff: Diff) -> Diff:
        return Diff(
            domains_added={d: r for d, r in diff.domains_added.items() if d.startswith("long")},
            prefixes_added={p: r for p, r in diff.prefixes_added.items() if p.version == 6},
        )


class Easy(Picky):
    def uncarried(self, diff: Diff) -> Diff:
        return Diff()


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_for_targets_names_each_enforcer_in_the_task_order() -> None:
    targets = [
        Target("domain", "long-b.kz"),
        Target("ip", "2001:db8::1"),
        Target("domain", "ok.kz"),
        Target("url", "https://long.kz/"),
        Target("cidr", "10.0.0.0/8"),
        Target("domain", "long-a.kz"),
    ]
    got = for_targets([Easy("dns"), Picky("rpz")], REF, targets)
    # the issuer's own spelling of the address, not the /128 it became
    assert got == {"rpz": ["long-b.kz", "2001:db8::1", "long-a.kz"]}
    assert for_targets([Easy("dns"), Picky("rpz")], REF, [Target("domain", "ok.kz")]) == {}


def test_the_running_set_follows_diffs_and_resets() -> None:
    picky, easy = Picky("rpz"), Easy("dns")
    tracked = NotEnforced(e.name for e in (easy, picky))  # a generator: read once
    assert tracked.counts() == {"dns": 0, "rpz": 0}
    new = tracked.update(picky, Diff(domains_added={"long.kz": REF, "a.kz": REF}))
    assert new == ["long.kz"]
    assert tracked.update(easy, Diff(domains_added={"long.kz": REF})) == []
    # already left out: not new again
    assert tracked.update(picky, Diff(domains_added={"long.kz": REF})) == []
    tracked.update(picky, Diff(prefixes_added={net("2001:db8::/32"): REF}))
    assert tracked.counts() == {"dns": 0, "rpz": 2}
    assert tracked.values("rpz") == ["long.kz", "2001:db8::/32"]
    assert tracked.values("rpz", 1) == ["long.kz"]
    tracked.update(picky, Diff(domains_removed=frozenset({"long.kz", "a.kz"})))
    assert tracked.counts()["rpz"] == 1
    state = State(domains={"long2.kz": REF, "long1.kz": REF, "b.kz": REF}, prefixes={})
    tracked.reset(picky, state)
    assert tracked.values("rpz") == ["long1.kz", "long2.kz"]
    assert tracked.values("nobody") == []
