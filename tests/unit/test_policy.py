import ipaddress

import pytest

from kzgate import policy
from kzgate.enforce.dnsindex import DnsIndexEnforcer
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import domain_to_wire
from kzgate.nametable import CompiledNameTable, DictNameTable
from kzgate.policy import PolicyIndex

A = InstructionRef("mci", "1", "2026-11-01")
B = InstructionRef("mci", "2", "2026-11-02")


@pytest.fixture(
    autouse=True,
    params=[
        pytest.param("c", marks=pytest.mark.skipif(CompiledNameTable is None, reason="not built")),
        "python",
    ],
)
def table_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test on the compiled NameTable and on the dict one (an install without C)."""
    if request.param == "python":
        monkeypatch.setattr(policy, "new_name_table", DictNameTable)


def test_name_and_subdomains_match_parents_do_not() -> None:
    index = PolicyIndex()
    index.set_domain("example.kz", A)
    assert index.lookup_name("example.kz") == A
    assert index.lookup_name("a.b.example.kz") == A
    assert index.lookup_name("kz") is None
    assert index.lookup_name("notexample.kz") is None
    assert index.lookup_name("example.kz.evil.com") is None


def test_lookup_wire_matches_the_deepest_restricted_suffix_first() -> None:
    index = PolicyIndex()
    index.set_domain("example.kz", A)
    index.set_domain("www.example.kz", B)
    assert index.lookup_wire(domain_to_wire("x.www.example.kz")) == B
    assert index.lookup_wire(domain_to_wire("mail.example.kz")) == A
    assert index.lookup_wire(b"\x00") is None


def test_remove_domain_lifts_only_that_name() -> None:
    index = PolicyIndex()
    index.set_domain("example.kz", A)
    index.set_domain("other.kz", B)
    index.remove_domain("example.kz")
    assert index.lookup_name("www.example.kz") is None
    assert index.lookup_name("other.kz") == B


async def test_dns_enforcer_applies_diffs_and_reconciles_to_state() -> None:
    index = PolicyIndex()
    enforcer = DnsIndexEnforcer(index)
    net = ipaddress.ip_network("10.0.0.0/24")
    await enforcer.apply(Diff(domains_added={"example.kz": A}, prefixes_added={net: A}))
    assert index.lookup_name("www.example.kz") == A
    await enforcer.apply(Diff(domains_relabelled={"example.kz": B}))
    assert index.lookup_name("example.kz") == B
    # Drift: something outside the state, and something missing from it.
    index.set_domain("stray.kz", A)
    index.remove_domain("example.kz")
    fixed = await enforcer.reconcile(State(domains={"example.kz": B}, prefixes={net: A}))
    assert fixed.domains_removed == {"stray.kz"} and fixed.domains_added == {"example.kz": B}
    assert not fixed.prefixes_added  # prefixes are nftables' to carry, never DNS drift
    assert index.domains() == {"example.kz": B}
