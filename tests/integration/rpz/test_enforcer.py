"""The RPZ primary on real sockets (127.0.0.1, port 0), driven by kdig and dnspython.

dnspython's client runs in a thread (it is blocking) while the enforcer serves
on the test's loop; every call has a timeout, so a hang fails instead of stalling.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.xfr
import pytest
from prometheus_client import CollectorRegistry

from kzgate.config import HostPort, RpzConfig, TsigConfig
from kzgate.model import Diff, InstructionRef, State
from kzgate.rpz.enforcer import RpzEnforcer

REF = InstructionRef("mci", "1", "2026-01-01")
ORIGIN = "rpz.kzgate."
SECRET = base64.b64encode(bytes(range(32))).decode()
KEYNAME = dns.name.from_text("kzgate-xfr.")
KEYRING = {KEYNAME: dns.tsig.Key(KEYNAME, SECRET, "hmac-sha256")}
kdig_missing = pytest.mark.skipif(shutil.which("kdig") is None, reason="kdig is not installed")


def rpz_config(tmp_path: Path, **changes: Any) -> RpzConfig:
    secret = tmp_path / "xfr.tsig"
    secret.write_text(SECRET + "\n")
    cfg = RpzConfig(
        enabled=True,
        listen=(HostPort("127.0.0.1", 0),),
        notify=(),
        tsig=TsigConfig("kzgate-xfr.", "hmac-sha256", secret),
        ixfr_history=3,
    )
    return replace(cfg, **changes)


class Primary:
    def __init__(self, enforcer: RpzEnforcer, port: int, registry: CollectorRegistry) -> None:
        self.enforcer, self.port, self.registry = enforcer, port, registry

    def counter(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def xfr(self, rdtype: str = "AXFR", serial: int = 0, tsig: bool = True) -> list[Any]:
        def run() -> list[Any]:
            return list(
                dns.query.xfr(
                    "127.0.0.1",
                    ORIGIN,
                    rdtype=rdtype,
                    port=self.port,
                    keyring=KEYRING if tsig else None,
                    keyname=KEYNAME if tsig else None,
                    serial=serial,
                    relativize=False,
                    lifetime=20,
                )
            )

        return await asyncio.wait_for(asyncio.to_thread(run), 30)

    async def kdig(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "kdig",
            "+timeout=5",
            "-p",
            str(self.port),
            "@127.0.0.1",
            ORIGIN,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        return out.decode()


Factory = Callable[..., Any]


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[Factory]:
    started: list[RpzEnforcer] = []

    async def make(**changes: Any) -> Primary:
        registry = CollectorRegistry()
        enforcer = RpzEnforcer(
            rpz_config(tmp_path, **changes),
            block_mode="nxdomain",
            sinkhole_ipv4=ipaddress.IPv4Address("192.0.2.1"),
            sinkhole_ipv6=ipaddress.IPv6Address("2001:db8::1"),
        )
        for collector in enforcer.collectors():
            registry.register(collector)
        [(_, port)] = await enforcer.listen()
        started.append(enforcer)
        return Primary(enforcer, port, registry)

    yield make
    for enforcer in started:
        await enforcer.close()


def records(messages: list[Any]) -> list[tuple[str, str, str]]:
    return [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
        for m in messages
        for rrset in m.answer
        for rd in rrset
    ]


def state(*names: str) -> State:
    return State(domains=dict.fromkeys(names, REF), prefixes={})


@kdig_missing
async def test_axfr_with_tsig_is_complete(primary: Factory) -> None:
    p = await primary()
    await p.enforcer.reconcile(state("example.com", "bad.kz"))
    out = await p.kdig("AXFR", "-y", f"hmac-sha256:kzgate-xfr:{SECRET}")
    lines = [line.split() for line in out.splitlines() if line and not line.startswith(";")]
    rrs = [(f[0], f[3], " ".join(f[4:])) for f in lines if f[3] != "TSIG"]
    assert rrs[0][1] == rrs[-1][1] == "SOA" and str(p.enforcer.serial) in rrs[0][2]
    assert set(rrs[1:-1]) == {
        (ORIGIN, "NS", "localhost."),
        ("example.com." + ORIGIN, "CNAME", "."),
        ("*.example.com." + ORIGIN, "CNAME", "."),
        ("bad.kz." + ORIGIN, "CNAME", "."),
        ("*.bad.kz." + ORIGIN, "CNAME", "."),
    }
    assert any(f[3] == "TSIG" for f in lines)  # kdig verified it, or it would say so
    assert p.counter("kzgate_rpz_transfers_total", type="axfr", outcome="ok") == 1


@kdig_missing
async def test_refused_without_tsig_or_outside_acl_notauth_on_bad_key(primary: Factory) -> None:
    p = await primary()
    assert "REFUSED" in await p.kdig("AXFR")
    assert "REFUSED" in await p.kdig("IXFR=1")
    wrong = base64.b64encode(b"x" * 32).decode()
    assert "NOTAUTH" in await p.kdig("AXFR", "-y", f"hmac-sha256:kzgate-xfr:{wrong}")
    assert "NOTAUTH" in await p.kdig("AXFR", "-y", f"hmac-sha256:other-key:{SECRET}")
    outside = await primary(allow_transfer=(ipaddress.ip_network("10.0.0.0/8"),))
    # outside the ACL: the connection is closed at accept, a datagram is not answered
    out = await outside.kdig("AXFR", "-y", f"hmac-sha256:kzgate-xfr:{SECRET}")
    assert "failed to query server" in out and "REFUSED" not in out
    soa = dns.message.make_query(ORIGIN, "SOA")
    with pytest.raises(dns.exception.Timeout):
        await asyncio.to_thread(dns.query.udp, soa, "127.0.0.1", port=outside.port, timeout=0.5)
    assert outside.enforcer.server.refusals.counts == {"acl": 2}
    assert p.counter("kzgate_rpz_transfers_total", type="axfr", outcome="refused") == 3
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        await p.xfr(tsig=False)


async def test_ixfr_returns_only_the_difference(primary: Factory) -> None:
    p = await primary()
    await p.enforcer.reconcile(state(*(f"n{i}.kz" for i in range(100))))
    s0 = p.enforcer.serial
    await p.enforcer.apply(
        Diff(domains_added={"new.kz": REF}, domains_removed=frozenset({"n1.kz"}))
    )
    assert p.enforcer.serial == s0 + 1
    rrs = records(await p.xfr("IXFR", serial=s0))
    soa = [r for r in rrs if r[1] == "SOA"]
    assert [int(r[2].split()[2]) for r in soa] == [s0 + 1, s0, s0 + 1, s0 + 1]
    assert [r for r in rrs if r[1] != "SOA"] == [
        ("n1.kz." + ORIGIN, "CNAME", "."),
        ("*.n1.kz." + ORIGIN, "CNAME", "."),
        ("new.kz." + ORIGIN, "CNAME", "."),
        ("*.new.kz." + ORIGIN, "CNAME", "."),
    ]
    assert p.counter("kzgate_rpz_transfers_total", type="ixfr", outcome="ok") == 1
    # up to date: the SOA alone
    assert [r[1] for r in records(await p.xfr("IXFR", serial=s0 + 1))] == ["SOA"]


async def test_ixfr_from_too_old_a_serial_falls_back_to_axfr(primary: Factory) -> None:
    p = await primary(ixfr_history=2)
    await p.enforcer.reconcile(state("a.kz"))
    s0 = p.enforcer.serial
    for i in range(3):
        await p.enforcer.apply(Diff(domains_added={f"x{i}.kz": REF}))
    rrs = records(await p.xfr("IXFR", serial=s0))
    assert rrs[0][1] == rrs[-1][1] == "SOA" and rrs[1][1] == "NS"  # AXFR format
    assert sum(r[1] == "SOA" for r in rrs) == 2
    assert len(rrs) == 2 + 1 + 2 * 4
    assert p.counter("kzgate_rpz_transfers_total", type="axfr", outcome="ok") == 1


async def test_soa_and_ixfr_over_udp_get_the_soa(primary: Factory) -> None:
    p = await primary()
    for rdtype in ("SOA", "IXFR"):
        q = dns.message.make_query(ORIGIN, rdtype)
        q.use_tsig(KEYRING[KEYNAME])
        r = await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", port=p.port, timeout=5)
        assert r.rcode() == dns.rcode.NOERROR and r.had_tsig
        assert r.answer[0].rdtype == dns.rdatatype.SOA
        assert r.answer[0][0].serial == p.enforcer.serial


async def test_notify_reaches_a_secondary_and_is_retried(primary: Factory) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        p = await primary(notify=(HostPort("127.0.0.1", sock.getsockname()[1]),))
        p.enforcer.notifier.first_wait = 0.2  # retry sooner than 1 s
        await p.enforcer.apply(Diff(domains_added={"a.kz": REF}))

        def receive() -> tuple[dns.message.Message, Any]:
            data, addr = sock.recvfrom(65535)
            return dns.message.from_wire(data, keyring=KEYRING), addr

        first, _ = await asyncio.to_thread(receive)  # not answered: must come again
        again, addr = await asyncio.to_thread(receive)
        assert again.id == first.id and again.opcode() == dns.opcode.NOTIFY
        assert again.flags & dns.flags.AA and again.had_tsig
        assert again.question[0].rdtype == dns.rdatatype.SOA
        assert again.answer[0][0].serial == p.enforcer.serial
        ack = dns.message.make_response(again)
        sock.sendto(ack.to_wire(), addr)
        for _ in range(50):
            if p.counter("kzgate_rpz_notify_total", outcome="acked"):
                break
            await asyncio.sleep(0.05)
        assert p.counter("kzgate_rpz_notify_total", outcome="acked") == 1
        assert p.counter("kzgate_rpz_notify_total", outcome="sent") == 2
    finally:
        sock.close()


@kdig_missing
async def test_large_zone_streams_in_many_signed_messages(primary: Factory) -> None:
    p = await primary()
    names = [f"host{i}.example{i % 97}.kz" for i in range(50_000)]
    await p.enforcer.reconcile(state(*names))
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:  # the loop must stay responsive during the transfer
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - last)
            last = loop.time()

    beat = asyncio.create_task(heartbeat())
    # kdig checks the TSIG of every message (it reports a failure otherwise)
    out = await p.kdig("AXFR", "-y", f"hmac-sha256:kzgate-xfr:{SECRET}")
    done.set()
    await beat
    summary = re.search(r"Received \d+ B \((\d+) messages, (\d+) records\)", out)
    assert summary is not None, out[-500:]
    assert int(summary[1]) > 50
    assert int(summary[2]) == 2 + 1 + 2 * 50_000  # SOA twice, NS, name and wildcard each
    assert "TSIG\thmac-sha256." in out and ";; ERROR" not in out
    assert "host49999.example44.kz." + ORIGIN in out and "*.host0.example0.kz." in out
    assert max(gaps) < 0.5


async def test_reconcile_returns_the_fix_and_bumps_only_on_change(primary: Factory) -> None:
    p = await primary()
    fix = await p.enforcer.reconcile(state("a.kz", "b.kz"))
    assert set(fix.domains_added) == {"a.kz", "b.kz"}
    s = p.enforcer.serial
    assert (await p.enforcer.reconcile(state("a.kz", "b.kz"))).is_empty()
    assert p.enforcer.serial == s
    fix = await p.enforcer.reconcile(state("b.kz"))
    assert fix.domains_removed == {"a.kz"} and p.enforcer.serial == s + 1
    assert p.counter("kzgate_rpz_serial") == s + 1


async def test_daemon_serves_the_zone_only_after_reconcile_and_exports_it(
    tmp_path: Path, pki: Path
) -> None:
    """Through the daemon: a stored restrict is in the first zone served, and in the export."""
    import subprocess
    import sys

    from kzgate.config import load_config
    from kzgate.daemon import Daemon
    from tests.support.kzfixtures import Regulator, write_config

    rpz = {
        "enabled": True,
        "listen": ["127.0.0.1:0"],
        "notify": [],
        "allow_transfer": ["127.0.0.1/32"],
    }
    config = write_config(tmp_path, pki, rpz=rpz)
    first = Daemon(load_config(config))
    await first.start()
    mci = Regulator(pki)
    assert first.pipeline is not None
    await first.pipeline.submit(mci.sign(mci.restrict("1", "domain:zoned.kz")))
    await first.stop()

    second = Daemon(load_config(config))
    await second.start()
    try:
        host, port = second.bound["rpz"]

        def transfer() -> set[str]:
            xfr = dns.query.xfr(host, "rpz.kzgate.", port=port, lifetime=10, relativize=False)
            return {str(rrset.name) for message in xfr for rrset in message.answer}

        names = await asyncio.get_running_loop().run_in_executor(None, transfer)
        assert {"zoned.kz.rpz.kzgate.", "*.zoned.kz.rpz.kzgate."} <= names
    finally:
        await second.stop()
    out = tmp_path / "rpz.zone"
    result = subprocess.run(
        [sys.executable, "-m", "kzgate", "export", "rpz", str(out), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "$ORIGIN rpz.kzgate." in text
    assert "\nzoned.kz CNAME .\n" in text and "\n*.zoned.kz CNAME .\n" in text


async def test_serial_never_goes_back_across_a_restart(tmp_path: Path) -> None:
    """A burst of changes runs the serial ahead of the clock; a restart must continue above it."""
    cfg = replace(rpz_config(tmp_path), notify=())
    serial_file = tmp_path / "rpz-serial"

    def enforcer() -> RpzEnforcer:
        return RpzEnforcer(
            cfg,
            block_mode="nxdomain",
            sinkhole_ipv4=ipaddress.IPv4Address("192.0.2.1"),
            sinkhole_ipv6=ipaddress.IPv6Address("2001:db8::1"),
            serial_file=serial_file,
        )

    first = enforcer()
    for i in range(300):
        await first.apply(Diff(domains_added={f"n{i}.kz": REF}))
    last = first.serial
    await first.close()
    second = enforcer()
    assert second.serial > last
    await second.reconcile(state("n1.kz"))
    assert second.serial > last + 1
    await second.close()
