"""kzgate as the RPZ primary of real resolvers: Unbound and BIND on loopback, and kdig.

The fleet: kzgate (``kzgate run`` as a child process) serving ``rpz.kzgate.``
and NOTIFYing the secondaries; Unbound with an ``rpz:`` clause and BIND with
``response-policy`` pulling the zone from it; both resolving every other name
through one in-process upstream that holds the test domain. A restrict pushed
through kzgate's API must reach both resolvers within 2 s (the name and its
subdomains answer NXDOMAIN), a resume must undo it within 2 s, and the
transfer of such a small change must be an IXFR.

Unbound 1.17 (Debian 12) has no TSIG for zone transfers, and kzgate refuses
an unsigned transfer once a key is configured; so the first fleet runs kzgate
without TSIG (Unbound and BIND), the second with TSIG (BIND, with the key, and
kdig): there, transfers without the key, with a wrong key, or from an address
outside ``allow_transfer`` are refused, and signed AXFR/IXFR succeed.

The first test proves the harness itself against BIND as the primary serving
a static zone file, so a failure in the kzgate tests is kzgate's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kzgate.keys import load_private_key
from kzgate.protocol.receipts import verify_receipt
from kzgate.status import render
from tests.support.daemon_proc import DaemonProcess
from tests.support.dnsfake import FakeDns
from tests.support.kzfixtures import Regulator, client_ssl, push_task, write_config
from tests.support.rpzpeers import (
    KDIG,
    LOOPBACK,
    NAMED,
    UNBOUND,
    BindPeer,
    BindPrimary,
    Peer,
    Tsig,
    UnboundPeer,
    free_port,
    kdig_xfr,
    query,
    soa_serial,
    stop_all,
    transfer_types,
)

ORIGIN = "rpz.kzgate."
UPSTREAM_ZONE = """
blocked.test. 60 IN A 192.0.2.10
x.blocked.test. 60 IN A 192.0.2.11
other.test. 60 IN A 192.0.2.20
"""
NAMES = ("blocked.test", "x.blocked.test")  # the restricted name and one of its subdomains
WITHIN = 2.0  # seconds from the API's receipt to every resolver enforcing it

needs_unbound = pytest.mark.skipif(
    UNBOUND is None, reason="unbound is not installed (Debian: unbound)"
)
needs_named = pytest.mark.skipif(NAMED is None, reason="named is not installed (Debian: bind9)")
needs_kdig = pytest.mark.skipif(
    KDIG is None, reason="kdig is not installed (Debian: knot-dnsutils)"
)


# -- checks shared by the harness test and the kzgate tests ------------------------------


def evidence(peers: list[Peer], extra: str = "") -> str:
    """The tail of every peer's logs, for an assertion message."""
    out = [extra] if extra else []
    for peer in peers:
        out.append(f"--- {peer.name} on {peer.port} ---\n{peer.log()[-2500:]}")
        if isinstance(peer, BindPeer):
            out.append(f"--- {peer.name} xfer ---\n{peer.xfer_log()[-2500:]}")
    return "\n".join(out)


async def enforced_within(peers: list[Peer], since: float, rcode: str) -> dict[str, float]:
    """Every peer answers ``rcode`` for every name in NAMES by ``since + WITHIN``.

    Returns the seconds from ``since`` until each peer did, for the slowest name.
    """
    deadline = since + WITHIN
    took: dict[str, float] = {}
    for peer in peers:
        for name in NAMES:
            try:
                await peer.wait_rcode(name, rcode, timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n{evidence(peers)}")
            took[peer.name] = round(time.monotonic() - since, 3)
    return took


async def resolves_normally(peers: list[Peer]) -> None:
    for peer in peers:
        for name, address in (("blocked.test", "192.0.2.10"), ("x.blocked.test", "192.0.2.11")):
            reply, _ = await peer.wait_rcode(name, "NOERROR", timeout=5)
            assert reply.addresses() == [address], f"{peer.name}: {reply}"


def last_transfer_is_ixfr(bind: BindPeer, serial: int) -> None:
    transfers = bind.transfers(ORIGIN)
    assert ("IXFR", serial) in transfers, evidence([bind], f"transfers: {transfers}")


# -- the harness on its own: BIND as the primary of a static zone ------------------------


@needs_unbound
@needs_named
@needs_kdig
async def test_harness_against_a_static_bind_primary(tmp_path: Path) -> None:
    upstream = FakeDns(UPSTREAM_ZONE)
    up = await upstream.start()
    tsig = Tsig()
    ports = {"unbound": free_port(), "bind": free_port()}
    primary = BindPrimary(
        tmp_path, origin=ORIGIN, tsig=tsig, notify=[(LOOPBACK, p) for p in ports.values()]
    )
    await primary.start()
    src = (LOOPBACK, primary.port)
    unbound = UnboundPeer(tmp_path, origin=ORIGIN, primary=src, upstream=up)
    bind = BindPeer(tmp_path, origin=ORIGIN, primary=src, upstream=up, tsig=tsig)
    peers: list[Peer] = [unbound, bind]
    try:
        await unbound.start(port=ports["unbound"])
        await bind.start(port=ports["bind"])
        assert (unbound.port, bind.port) == (ports["unbound"], ports["bind"])
        for peer in peers:
            await peer.wait_serial(ORIGIN, primary.published)
        await resolves_normally(peers)

        serial = await primary.publish(["blocked.test"])
        await enforced_within(peers, time.monotonic(), "NXDOMAIN")
        assert unbound.blocked_log("x.blocked.test"), evidence([unbound])
        last_transfer_is_ixfr(bind, serial)

        await primary.publish([])
        await enforced_within(peers, time.monotonic(), "NOERROR")
        other = await bind.resolve("other.test")
        assert other is not None and other.addresses() == ["192.0.2.20"]

        # kdig's view, and the refusals the kzgate tests rely on telling apart.
        full = await kdig_xfr(primary.port, ORIGIN, tsig=tsig)
        assert full.ok and full.soa_serials() == [primary.published] * 2, full.output
        diff = await kdig_xfr(primary.port, ORIGIN, tsig=tsig, serial=serial - 1)
        assert diff.incremental() and diff.soa_serials()[:2] == [primary.published, serial - 1]
        outside = await kdig_xfr(primary.port, ORIGIN, tsig=tsig, source="127.0.0.2")
        assert not outside.ok and outside.error == "REFUSED" and not outside.records
        forged = await kdig_xfr(primary.port, ORIGIN, tsig=Tsig())
        assert not forged.ok and forged.error == "BADSIG" and not forged.records
    finally:
        await stop_all([*peers, primary])
        await upstream.close()
    assert not any(p.alive() for p in [*peers, primary])


# -- kzgate as the primary -------------------------------------------------------------


@dataclass
class Fleet:
    kzgate: DaemonProcess
    pki: Path
    tsig: Tsig | None
    peers: list[Peer]
    source: str  # an address inside allow_transfer, to ask kzgate's SOA from
    regulator: Regulator = field(init=False)

    def __post_init__(self) -> None:
        self.regulator = Regulator(self.pki)

    @property
    def rpz_port(self) -> int:
        return self.kzgate.ports["rpz"]

    def peer(self, kind: type[Peer]) -> Peer:
        return next(p for p in self.peers if isinstance(p, kind))

    async def serial(self) -> int:
        serial = await soa_serial(self.rpz_port, ORIGIN, source=self.source)
        assert serial is not None, "kzgate does not answer the SOA of its zone"
        return serial

    async def push(self, body: bytes) -> float:
        """POST a signed task; the monotonic time its receipt arrived."""
        status, answer = await push_task(self.kzgate.ports["api"], self.pki, body)
        assert status == 200, answer
        return time.monotonic()

    async def restrict(self, number: str, *targets: str) -> float:
        return await self.push(self.regulator.sign(self.regulator.restrict(number, *targets)))

    async def resume(self, number: str) -> float:
        return await self.push(self.regulator.sign(self.regulator.resume(number)))

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        url = f"http://127.0.0.1:{self.kzgate.ports['metrics']}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            text = await resp.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def settled(self) -> int:
        """Wait until every peer holds kzgate's current serial; return it."""
        serial = await self.serial()
        for peer in self.peers:
            try:
                await peer.wait_serial(ORIGIN, serial, timeout=15)
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n{evidence(self.peers)}\n{''.join(self.kzgate.log[-20:])}")
        return serial


@contextlib.asynccontextmanager
async def fleet(
    tmp_path: Path,
    pki: Path,
    *,
    unbound: bool,
    bind: bool,
    tsig: Tsig | None,
    allow_transfer: tuple[str, ...] = ("127.0.0.1/32",),
) -> AsyncIterator[Fleet]:
    """kzgate with the RPZ primary on, and the asked-for resolvers pulling from it."""
    upstream = FakeDns(UPSTREAM_ZONE)
    up = await upstream.start()
    ports = {kind: free_port() for kind, on in (("unbound", unbound), ("bind", bind)) if on}
    rpz: dict[str, object] = {
        "enabled": True,
        "origin": ORIGIN,
        "listen": ["127.0.0.1:0"],
        "notify": [f"127.0.0.1:{p}" for p in ports.values()],
        "allow_transfer": list(allow_transfer),
        "ixfr_history": 100,
    }
    if tsig is not None:
        secret = tsig.write_secret(tmp_path / "xfr.secret")
        rpz["tsig"] = {"name": tsig.name, "algorithm": tsig.algorithm, "secret_file": str(secret)}
    daemon = DaemonProcess(write_config(tmp_path, pki, rpz=rpz))
    peers: list[Peer] = []
    try:
        await daemon.start()
        assert "rpz" in daemon.ports, f"no 'rpz on H:P' in the ready line: {daemon.log}"
        src = (LOOPBACK, daemon.ports["rpz"])
        if unbound:
            peers.append(UnboundPeer(tmp_path, origin=ORIGIN, primary=src, upstream=up))
            await peers[-1].start(port=ports["unbound"])
        if bind:
            peers.append(BindPeer(tmp_path, origin=ORIGIN, primary=src, upstream=up, tsig=tsig))
            await peers[-1].start(port=ports["bind"])
        assert sorted(p.port for p in peers) == sorted(ports.values()), "a NOTIFY port was lost"
        source = allow_transfer[0].split("/")[0]
        crew = Fleet(daemon, pki, tsig, peers, source)
        await crew.settled()
        yield crew
    finally:
        await stop_all(peers)
        if daemon.proc is not None and daemon.proc.returncode is None:
            daemon.kill()
            await daemon.wait()
        await upstream.close()


@needs_unbound
@needs_named
async def test_restrict_and_resume_reach_unbound_and_bind_within_two_seconds(
    tmp_path: Path, pki: Path
) -> None:
    async with fleet(tmp_path, pki, unbound=True, bind=True, tsig=None) as crew:
        unbound, bind = crew.peer(UnboundPeer), crew.peer(BindPeer)
        assert isinstance(unbound, UnboundPeer) and isinstance(bind, BindPeer)
        await resolves_normally(crew.peers)
        ixfr_before = await crew.metric("kzgate_rpz_transfers_total", type="ixfr", outcome="ok")

        received = await crew.restrict("RPZ-1", "domain:blocked.test")
        took = await enforced_within(crew.peers, received, "NXDOMAIN")
        serial = await crew.serial()
        # The NXDOMAIN is the policy's (the upstream would answer), and nothing more is blocked.
        assert unbound.blocked_log("blocked.test"), evidence([unbound])
        for peer in crew.peers:
            other = await peer.resolve("other.test")
            assert other is not None and other.addresses() == ["192.0.2.20"], peer.name

        # A one-name change travels as an IXFR: BIND says so, and kzgate counts it.
        await bind.wait_serial(ORIGIN, serial)
        last_transfer_is_ixfr(bind, serial)
        await crew.settled()
        ixfr_after = await crew.metric("kzgate_rpz_transfers_total", type="ixfr", outcome="ok")
        assert ixfr_after >= ixfr_before + 2, (ixfr_before, ixfr_after)  # one per resolver
        assert await crew.metric("kzgate_rpz_serial") == serial
        assert await crew.metric("kzgate_rpz_notify_total", outcome="failed") == 0

        received = await crew.resume("RPZ-1")
        took_back = await enforced_within(crew.peers, received, "NOERROR")
        await resolves_normally(crew.peers)
        last_transfer_is_ixfr(bind, await crew.serial())
        print(f"restrict enforced after {took} s, resume after {took_back} s")


@needs_named
@needs_kdig
async def test_tsig_and_acl_guard_transfers(tmp_path: Path, pki: Path) -> None:
    tsig = Tsig()
    async with fleet(tmp_path, pki, unbound=False, bind=True, tsig=tsig) as crew:
        bind = crew.peer(BindPeer)
        assert isinstance(bind, BindPeer)
        before = await crew.serial()
        received = await crew.restrict("RPZ-2", "domain:blocked.test")
        await enforced_within([bind], received, "NXDOMAIN")
        serial = await crew.serial()
        assert serial > before
        last_transfer_is_ixfr(bind, serial)
        assert f"transferred serial {serial}: TSIG '{tsig.name.rstrip('.')}'" in bind.log()

        # Signed: AXFR has the whole zone, IXFR from the previous serial only the change.
        full = await kdig_xfr(crew.rpz_port, ORIGIN, tsig=tsig)
        assert full.ok and full.soa_serials() == [serial, serial], full.output
        policy = {(owner, rtype, rdata) for owner, rtype, rdata in full.data()}
        assert ("blocked.test.rpz.kzgate.", "CNAME", ".") in policy, full.output
        assert ("*.blocked.test.rpz.kzgate.", "CNAME", ".") in policy, full.output
        diff = await kdig_xfr(crew.rpz_port, ORIGIN, tsig=tsig, serial=before)
        assert diff.incremental(), diff.output
        assert diff.soa_serials()[:2] == [serial, before], diff.output
        assert ("blocked.test.rpz.kzgate.", "CNAME", ".") in diff.data(), diff.output
        current = await kdig_xfr(crew.rpz_port, ORIGIN, tsig=tsig, serial=serial)
        assert current.soa_serials() == [serial] and not current.data(), current.output

        refused_before = await crew.metric("kzgate_rpz_transfers_total", outcome="refused")
        # Without the key, with a forged one, or from outside the ACL: no zone data.
        unsigned = await kdig_xfr(crew.rpz_port, ORIGIN)
        assert unsigned.error == "REFUSED" and not unsigned.records, unsigned.output
        unsigned_ixfr = await kdig_xfr(crew.rpz_port, ORIGIN, serial=before)
        assert unsigned_ixfr.error == "REFUSED" and not unsigned_ixfr.records
        forged = await kdig_xfr(crew.rpz_port, ORIGIN, tsig=Tsig())
        assert forged.error == "NOTAUTH" and not forged.records, forged.output
        outside = await kdig_xfr(crew.rpz_port, ORIGIN, tsig=tsig, source="127.0.0.2")
        assert "failed to query server" in outside.output, outside.output  # closed at accept
        assert not outside.records and outside.error is None, outside.output
        refused_after = await crew.metric("kzgate_rpz_transfers_total", outcome="refused")
        assert refused_after == refused_before + 3
        refusals = "kzgate_listener_refusals_total"
        assert await crew.metric(refusals, listener="rpz", reason="acl") == 1


@needs_kdig
async def test_acl_without_tsig_refuses_other_addresses(tmp_path: Path, pki: Path) -> None:
    async with fleet(tmp_path, pki, unbound=False, bind=False, tsig=None) as crew:
        inside = await kdig_xfr(crew.rpz_port, ORIGIN)
        assert inside.ok, inside.output
        outside = await kdig_xfr(crew.rpz_port, ORIGIN, source="127.0.0.2")
        assert "failed to query server" in outside.output, outside.output  # closed at accept
        assert not outside.records and outside.error is None, outside.output
        # An ACL that leaves 127.0.0.1 out shuts it out too.
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    async with fleet(
        narrow, pki, unbound=False, bind=False, tsig=None, allow_transfer=("127.0.0.2/32",)
    ) as crew:
        refused = await kdig_xfr(crew.rpz_port, ORIGIN)
        assert "failed to query server" in refused.output and not refused.records
        assert await query(crew.rpz_port, ORIGIN, "SOA", timeout=0.5) is None  # not answered
        allowed = await kdig_xfr(crew.rpz_port, ORIGIN, source="127.0.0.2")
        assert allowed.ok, allowed.output


def test_transfer_log_tells_ixfr_from_axfr() -> None:
    """The IXFR check can fail: a full transfer in BIND's log is not taken for an IXFR."""
    log = (
        "x: transfer of 'rpz.kzgate/IN' from 127.0.0.1#5: got nonincremental response\n"
        "x: transfer of 'rpz.kzgate/IN' from 127.0.0.1#5: Transfer completed: 1 messages,"
        " 3 records, 1 bytes, 0.001 secs (1 bytes/sec) (serial 7)\n"
        "x: transfer of 'rpz.kzgate/IN' from 127.0.0.1#5: got incremental response\n"
        "x: transfer of 'rpz.kzgate/IN' from 127.0.0.1#5: Transfer completed: 1 messages,"
        " 4 records, 1 bytes, 0.001 secs (1 bytes/sec) (serial 8)\n"
    )
    assert transfer_types(log, ORIGIN) == [("AXFR", 7), ("IXFR", 8)]
    assert transfer_types(log, "other.") == []


# -- a target the zone cannot hold (issue 10) ----------------------------------------------

# 243 characters: a legal domain (intake allows 253), but *.<name>.rpz.kzgate. would be
# 258 octets, over the 255 of any DNS name. Before the fix such a restrict put that owner in
# the zone and every AXFR and IXFR failed from then on: the fleet kept an old zone, and
# dropped it altogether at the SOA expire.
LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 46]) + ".test"


async def kzgate_status(crew: Fleet) -> dict[str, object]:
    url = f"http://127.0.0.1:{crew.kzgate.ports['metrics']}/status"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return dict(await resp.json())


@needs_unbound
@needs_named
@needs_kdig
async def test_a_name_too_long_for_the_zone_is_partial_and_the_fleet_keeps_up(
    tmp_path: Path, pki: Path
) -> None:
    assert len(LONG) == 243
    async with fleet(tmp_path, pki, unbound=True, bind=True, tsig=None) as crew:
        unbound, bind = crew.peer(UnboundPeer), crew.peer(BindPeer)
        assert isinstance(unbound, UnboundPeer) and isinstance(bind, BindPeer)
        public = load_private_key(pki / "keys/operator.key").public_key()
        api = crew.kzgate.ports["api"]
        before = await crew.serial()

        task = crew.regulator.restrict("LONG-1", f"domain:{LONG}")
        status, receipt = await push_task(api, pki, crew.regulator.sign(task))
        assert status == 200 and receipt["status"] == "partial", receipt
        assert receipt["not_enforced"] == {"rpz": [LONG]}
        verify_receipt(receipt, public)
        assert await get_receipt(api, pki, task["id"]) == receipt
        # kzgate's own resolver blocks it, and its subdomains
        for name in (LONG, f"www.{LONG}"):
            reply = await query(crew.kzgate.ports["dns"], name)
            assert reply is not None and reply.rcode == "NXDOMAIN", (name, reply)
        assert await crew.serial() == before  # nothing the zone can hold changed
        assert await crew.metric("kzgate_not_enforced_targets", enforcer="rpz") == 1
        assert await crew.metric("kzgate_not_enforced_targets", enforcer="dns") == 0
        live = await kzgate_status(crew)
        assert live["not_enforced"] == {"rpz": {"count": 1, "targets": [LONG]}}
        assert f"                {LONG}" in render({}, {}, live).splitlines()
        await crew.kzgate.wait_log(f"not_enforced=rpz:1({LONG})")

        # Later orders still reach both secondaries, as IXFRs.
        received = await crew.restrict("RPZ-3", "domain:blocked.test")
        await enforced_within(crew.peers, received, "NXDOMAIN")
        serial = await crew.serial()
        last_transfer_is_ixfr(bind, serial)
        full = await kdig_xfr(crew.rpz_port, ORIGIN)
        assert full.ok and full.soa_serials() == [serial, serial], full.output
        assert not [r for r in full.records if LONG in r[0]], full.output
        diff = await kdig_xfr(crew.rpz_port, ORIGIN, serial=before)
        assert diff.incremental() and diff.soa_serials()[:2] == [serial, before], diff.output

        # A task with both kinds: partial naming only the long one; the other reaches the fleet.
        second = crew.regulator.restrict("LONG-2", f"domain:x.{LONG[2:]}", "domain:other.test")
        status, receipt = await push_task(api, pki, crew.regulator.sign(second))
        assert receipt["status"] == "partial" and receipt["not_enforced"] == {
            "rpz": [f"x.{LONG[2:]}"]
        }
        for peer in crew.peers:
            await peer.wait_rcode("other.test", "NXDOMAIN", timeout=WITHIN)
        assert await crew.metric("kzgate_not_enforced_targets", enforcer="rpz") == 2

        # Resumes: applied, and the zone keeps transferring after each.
        for number in ("LONG-1", "RPZ-3", "LONG-2"):
            status, receipt = await push_task(
                api, pki, crew.regulator.sign(crew.regulator.resume(number))
            )
            assert (status, receipt["status"]) == (200, "applied"), receipt
        await enforced_within(crew.peers, time.monotonic(), "NOERROR")
        for peer in crew.peers:
            await peer.wait_rcode("other.test", "NOERROR", timeout=WITHIN)
        await resolves_normally(crew.peers)
        last_transfer_is_ixfr(bind, await crew.settled())
        assert await crew.metric("kzgate_not_enforced_targets", enforcer="rpz") == 0
        assert (await kzgate_status(crew))["not_enforced"] == {}

        # Restarted with the long name in force again: the start-up reconcile leaves it out.
        await crew.restrict("LONG-3", f"domain:{LONG}")
        crew.kzgate.kill()
        await crew.kzgate.wait()
        again = DaemonProcess(crew.kzgate.config)
        await again.start()
        try:
            await again.wait_log("enforcer rpz cannot represent 1 active target(s)")
            full = await kdig_xfr(again.ports["rpz"], ORIGIN)
            assert full.ok and not [r for r in full.records if LONG in r[0]], full.output
        finally:
            again.kill()
            await again.wait()


async def get_receipt(port: int, pki: Path, task_id: str) -> dict[str, object]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    url = f"https://127.0.0.1:{port}/v1/tasks/mci/{task_id}"
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        assert resp.status == 200
        return dict(await resp.json())
