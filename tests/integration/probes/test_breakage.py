"""The e2e probes' harness on its own: each breakage is real, proven without any probe.

A failure here is the harness's, not the prober's: each way of breaking a place
(a resolver that takes no more zone transfers, a resolver that overrides one
restricted name, an nftables element deleted while the drift monitor is deaf)
is shown by direct DNS queries (dnslib) and ``nft get element``, against the
same fleet ``test_probes_e2e.py`` probes. These run on main today (no
``probes`` config section).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support import netns
from tests.support.probesnet import NAMES, OVERRIDE_ADDRESS, probes_fleet
from tests.support.rpzpeers import NAMED, UNBOUND

pytestmark = netns.required
REPAIRED_WITHIN = 3.0  # drift is repaired within 1 s once heard; slack for the shared CI host


def test_tools_are_installed() -> None:
    # scripts/test installs both; without them every test here would prove nothing.
    assert UNBOUND is not None and NAMED is not None


async def test_a_resolver_whose_transfers_stop_keeps_answering_new_restrictions(
    tmp_path: Path, pki: Path
) -> None:
    async with probes_fleet(tmp_path, pki, probes=False) as fleet:
        unbound, bind, dns = fleet.unbound, fleet.bind, fleet.port("dns")
        await fleet.restrict("T-1", "domain:blocked.test")
        for where in (unbound, bind, dns):
            await fleet.answers(where, "blocked.test", "NXDOMAIN")

        await fleet.stop_transfers(fleet.bind)
        await fleet.restrict("T-2", "domain:late.test")
        await fleet.settled([unbound])
        await fleet.answers(unbound, "late.test", "NXDOMAIN")
        await fleet.answers(dns, "late.test", "NXDOMAIN")
        await asyncio.sleep(0.5)  # NOTIFY went out long ago; BIND cannot follow it
        await fleet.answers(bind, "late.test", NAMES["late.test"], timeout=0.5)
        await fleet.answers(bind, "blocked.test", "NXDOMAIN")  # what it held, it keeps

        await fleet.stop_transfers(fleet.unbound)
        await fleet.restrict("T-3", "domain:later.test")
        await fleet.answers(dns, "later.test", "NXDOMAIN")
        await asyncio.sleep(0.5)
        for where in (unbound, bind):
            await fleet.answers(where, "later.test", NAMES["later.test"], timeout=0.5)
        await fleet.answers(unbound, "late.test", "NXDOMAIN")
        await fleet.answers(unbound, "blocked.test", "NXDOMAIN")


async def test_an_override_in_one_resolver_answers_one_restricted_name(
    tmp_path: Path, pki: Path
) -> None:
    async with probes_fleet(tmp_path, pki, probes=False) as fleet:
        unbound, bind, dns = fleet.unbound, fleet.bind, fleet.port("dns")
        await fleet.restrict("O-1", "domain:local.test", "domain:blocked.test")
        await fleet.settled()

        await fleet.override(unbound, "local.test")
        await fleet.answers(unbound, "local.test", OVERRIDE_ADDRESS)
        for where in (bind, dns):
            await fleet.answers(where, "local.test", "NXDOMAIN")
        for where in (unbound, bind, dns):  # only that one name
            await fleet.answers(where, "blocked.test", "NXDOMAIN")
        # Not its subdomains either (a prober's kzgate-probe-<hex> name still blocks).
        await fleet.answers(unbound, "kzgate-probe-5e.local.test", "NXDOMAIN")

        await fleet.override(bind, "blocked.test")
        await fleet.answers(bind, "blocked.test", OVERRIDE_ADDRESS)
        await fleet.answers(unbound, "blocked.test", "NXDOMAIN")
        await fleet.answers(bind, "local.test", "NXDOMAIN")
        await fleet.answers(bind, "kzgate-probe-5e.blocked.test", "NXDOMAIN")
        # The zone still reaches both: the breakage is that one name alone.
        await fleet.restrict("O-2", "domain:late.test")
        await fleet.settled()
        for where in (unbound, bind):
            await fleet.answers(where, "late.test", "NXDOMAIN")


async def test_an_element_deleted_while_drift_is_paused_stays_deleted(
    tmp_path: Path, pki: Path
) -> None:
    async with probes_fleet(tmp_path, pki, probes=False) as fleet:
        address, other = fleet.pair.server_v4, "198.51.100.7"
        await fleet.restrict("N-1", f"ip:{address}", f"ip:{other}")
        assert fleet.element(address) == f"blocked_hosts_v4 {address}"
        assert fleet.element(other) == f"blocked_hosts_v4 {other}"
        repairs = await fleet.metric("kzgate_enforcer_drift_repairs_total", enforcer="nft")

        with fleet.drift_paused():
            await fleet.delete_element(address)
            await asyncio.sleep(REPAIRED_WITHIN)  # longer than any repair takes
            assert fleet.element(address) is None
            assert fleet.element(other) == f"blocked_hosts_v4 {other}"
        # Heard at last: repaired, and counted.
        started = time.monotonic()
        while fleet.element(address) is None:
            assert time.monotonic() - started < REPAIRED_WITHIN, "not repaired after the pause"
            await asyncio.sleep(0.05)
        after = await fleet.metric("kzgate_enforcer_drift_repairs_total", enforcer="nft")
        assert after > repairs
