"""A whole enforcement fleet to probe, and the means to break each place of it on purpose.

The fleet (:func:`probes_fleet`): kzgate as an in-process :class:`Daemon`
(so a test can reach its nft enforcer and pause the drift monitor) with its
own DNS listener, the RPZ primary, and nftables in the client namespace of a
veth pair; a real Unbound and a real BIND pulling the RPZ from it, both
resolving every other name through one in-process upstream (:class:`WildDns`)
that answers every name the tests use and every subdomain of them, so that a
lifted name (and a ``kzgate-probe-<hex>`` subdomain of it) resolves.

With ``probes=True`` the config carries
``probes: {enabled: true, resolvers: [unbound, bind], interval: 1, sample: 20}``;
until issue 14's config section is merged that config does not load, which is
why the breakage self-tests run with ``probes=False``.

The breakages, each proven by a direct query or ``nft get element``:

* :meth:`ProbesFleet.stop_transfers` — the resolver is reconfigured to pull
  the zone from a dead primary (a closed port) and reloaded (SIGHUP): it keeps
  the policy it holds, hears kzgate's NOTIFYs, and can transfer nothing new.
* :meth:`ProbesFleet.override` — a ``local-data`` answer (Unbound) or a
  ``rpz-passthru`` in a policy zone of the operator's own listed first (BIND)
  for one name, and a reload: that resolver answers the name.
* :meth:`ProbesFleet.drift_paused` + :meth:`ProbesFleet.delete_element` — the
  nft enforcer's notification socket is taken off the loop, and ``nft delete
  element`` (another process, as an operator would) removes one address: the
  kernel holds no element for it, and nothing repairs it until the pause ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from dnslib import RR, DNSLabel, DNSRecord
from prometheus_client.parser import text_string_to_metric_families

from kzgate.config import load_config
from kzgate.daemon import Daemon
from kzgate.enforce.nft.enforcer import NftEnforcer
from tests.support import netns
from tests.support.dnsfake import FakeDns
from tests.support.kzfixtures import Regulator, client_ssl, push_task, write_config
from tests.support.rpzpeers import (
    LOOPBACK,
    BindPeer,
    Peer,
    Reply,
    UnboundPeer,
    free_port,
    query,
    stop_all,
    wait_for,
)

ORIGIN = "rpz.kzgate."
# Every name the tests restrict, and every subdomain of it, resolves upstream.
NAMES = {
    "blocked.test": "192.0.2.10",
    "late.test": "192.0.2.11",  # restricted after BIND's transfers stop
    "later.test": "192.0.2.14",  # restricted after Unbound's transfers stop too
    "local.test": "192.0.2.12",  # overridden in one resolver
    "lifted.test": "192.0.2.13",  # restricted, then resumed
    "other.test": "192.0.2.20",  # never restricted
}
OVERRIDE_ADDRESS = "192.0.2.99"  # what an override answers, unlike the upstream's
SETTLE = 15.0  # seconds for a resolver to take a zone version (bounded; usually < 1 s)


def upstream_zone() -> str:
    lines = []
    for name, address in NAMES.items():
        lines.append(f"{name}. 60 IN A {address}")
        lines.append(f"*.{name}. 60 IN A {address}")
    return "\n".join(lines) + "\n"


class WildDns(FakeDns):
    """:class:`FakeDns` that also answers from ``*.<name>`` records (RFC 4592, one level of
    lookup: enough for ``kzgate-probe-<hex>.<name>`` and ``www.<name>``)."""

    def answer(self, request: DNSRecord) -> DNSRecord:
        name = request.q.qname
        if not any(rr.rname == name for rr in self.records):
            labels = name.label
            for cut in range(1, len(labels)):
                wild = DNSLabel((b"*", *labels[cut:]))
                here = [rr for rr in self.records if rr.rname == wild]
                if here:
                    reply = request.reply()
                    for rr in here:
                        if rr.rtype == request.q.qtype:
                            reply.add_answer(RR(name, rr.rtype, rdata=rr.rdata, ttl=rr.ttl))
                    return reply
        return super().answer(request)


def dead_port() -> int:
    """A loopback port nothing listens on (the socket that held it is closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# -- the fleet ---------------------------------------------------------------------------


@dataclass
class ProbesFleet:
    daemon: Daemon
    pki: Path
    config: Path
    regulator: Regulator
    pair: netns.Pair
    upstream: WildDns
    unbound: BrokenUnbound
    bind: BrokenBind

    @property
    def peers(self) -> list[Peer]:
        return [self.unbound, self.bind]

    def port(self, listener: str) -> int:
        return self.daemon.bound[listener][1]

    @property
    def kzgate_place(self) -> str:
        """kzgate's own DNS listener's place name: its ``dns.listen`` entry."""
        return f"{LOOPBACK}:{self.port('dns')}"

    @staticmethod
    def place(peer: Peer) -> str:
        """The resolver's place name: its ``probes.resolvers`` entry."""
        return f"{LOOPBACK}:{peer.port}"

    # -- the regulator's side ------------------------------------------------------------

    async def push(self, task: dict[str, Any]) -> dict[str, Any]:
        status, receipt = await push_task(self.port("api"), self.pki, self.regulator.sign(task))
        assert status == 200 and receipt["status"] == "applied", (status, receipt)
        return receipt

    async def restrict(self, number: str, *targets: str) -> dict[str, Any]:
        return await self.push(self.regulator.restrict(number, *targets))

    async def resume(self, number: str) -> dict[str, Any]:
        return await self.push(self.regulator.resume(number))

    async def task(self, iss: str, task_id: str) -> dict[str, Any]:
        """GET /v1/tasks/{iss}/{id}: the receipt (and, after issue 14, ``verified_at``)."""
        connector = aiohttp.TCPConnector(ssl=client_ssl(self.pki))
        url = f"https://127.0.0.1:{self.port('api')}/v1/tasks/{iss}/{task_id}"
        async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    # -- what the daemon says ------------------------------------------------------------

    async def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.port('metrics')}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return await resp.text()

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        text = await self.metrics_text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of ``name``: sorted labels -> value."""
        text = await self.metrics_text()
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        }

    async def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port('metrics')}/status"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return dict(await resp.json())

    # -- the resolvers -------------------------------------------------------------------

    async def serial(self) -> int:
        reply = await query(self.port("rpz"), ORIGIN, "SOA")
        assert reply is not None and reply.rcode == "NOERROR", reply
        return int(next(r for _, t, r in reply.answers if t == "SOA").split()[2])

    async def settled(self, peers: list[Peer] | None = None) -> int:
        """Wait until each of ``peers`` (default: both) holds kzgate's current serial."""
        serial = await self.serial()
        for peer in self.peers if peers is None else peers:
            await peer.wait_serial(ORIGIN, serial, timeout=SETTLE)
        return serial

    async def ask(self, where: Peer | int, name: str) -> Reply | None:
        port = where if isinstance(where, int) else where.port
        return await query(port, name, timeout=1.0)

    async def answers(self, where: Peer | int, name: str, want: str, timeout: float = 5.0) -> Reply:
        """Wait until ``name`` at ``where`` is ``want``: "NXDOMAIN", or an address."""

        def good(reply: Reply | None) -> bool:
            if reply is None:
                return False
            if want == "NXDOMAIN":
                return reply.rcode == "NXDOMAIN"
            return reply.rcode == "NOERROR" and reply.addresses() == [want]

        reply, _ = await wait_for(
            lambda: self.ask(where, name), good, timeout, what=f"{name} -> {want} at {where}"
        )
        assert reply is not None
        return reply

    # -- breakage (a): a resolver that stops taking zone transfers -------------------------

    async def stop_transfers(self, peer: Peer) -> None:
        """Cut ``peer`` off its primary; it keeps serving the zone version it holds.

        BIND: its zone's primary becomes a closed port, and a reload (SIGHUP).
        Unbound: restarted on the same port with an ``rpz:`` clause of only the zone
        file it wrote after its last transfer (Unbound 1.17 keeps its transfer
        state across a SIGHUP, and took the next version after a NOTIFY even with
        the primary gone from its config). Proven by the caller: a name restricted
        afterwards still resolves there.
        """
        assert isinstance(peer, BrokenUnbound | BrokenBind)
        held = await peer.serial(ORIGIN)
        assert held is not None, f"{peer.name} holds no zone yet"
        peer.deaf = True
        if isinstance(peer, BrokenBind):
            await reload(peer)
        else:
            port = peer.port
            await peer.stop()
            await peer.start(port=port)
            assert peer.port == port, f"{peer.name} lost its port in the restart"
        assert await peer.serial(ORIGIN) == held, f"{peer.name} lost its zone"

    # -- breakage (b): a local override of one restricted name ----------------------------

    async def override(self, peer: Peer, name: str, address: str = OVERRIDE_ADDRESS) -> None:
        """Make ``peer`` answer ``name`` with ``address`` whatever the RPZ says, and reload."""
        assert isinstance(peer, BrokenUnbound | BrokenBind)
        peer.overrides.append((name, address))
        await reload(peer)

    # -- breakage (c): an element gone from the kernel, unrepaired ------------------------

    def nft(self) -> NftEnforcer:
        assert self.daemon.enforcers is not None
        enforcer = self.daemon.enforcers["nft"]
        assert isinstance(enforcer, NftEnforcer)
        return enforcer

    @contextlib.contextmanager
    def drift_paused(self) -> Iterator[None]:
        """The nft drift monitor hears nothing until the block ends; then it reads what
        queued meanwhile (so a deletion made here is repaired right after)."""
        # Test-only reach into the enforcer: the monitor's socket stays open and keeps
        # queueing notifications; only its reader is off the loop.
        monitor = self.nft()._monitor
        assert monitor is not None
        loop = asyncio.get_running_loop()
        fd = monitor.sock.fileno()
        assert loop.remove_reader(fd), "the monitor was not reading"
        try:
            yield
        finally:
            loop.add_reader(fd, monitor._readable)
            loop.call_soon(monitor._readable)  # what queued while paused

    def element(self, address: str) -> str | None:
        """``nft get element`` for ``address`` in the host set of its family, or None."""
        name = "blocked_hosts_v6" if ":" in address else "blocked_hosts_v4"
        done = netns.run(
            self.pair.client,
            "nft", "get", "element", "inet", "kzgate", name, f"{{ {address} }}",
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return None
        # nft 1.0.6 prints the element as text even with -j: "elements = { 10.0.0.1 ... }"
        found = re.search(r"elements = \{ ([0-9a-f.:/]+)", done.stdout)
        return f"{name} {found.group(1)}" if found else None

    async def delete_element(self, address: str) -> None:
        name = "blocked_hosts_v6" if ":" in address else "blocked_hosts_v4"
        await asyncio.to_thread(netns.delete_element, self.pair.client, address, name)


class BrokenUnbound(UnboundPeer):
    """Unbound whose config can be broken: cut off its primary, or override names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deaf = False
        self.overrides: list[tuple[str, str]] = []

    def write_config(self) -> None:
        super().write_config()
        config = self.dir / "unbound.conf"
        lines = config.read_text(encoding="ascii").splitlines(keepends=True)
        if self.deaf:
            cut = ("  primary:", "  allow-notify:")
            lines = [line for line in lines if not line.startswith(cut)]
        # Each override: a transparent local zone with its own local-data, in the
        # server: clause (it comes first), before the rpz: clause.
        extra = "".join(
            f'  local-zone: "{name}." transparent\n  local-data: "{name}. 60 IN A {address}"\n'
            for name, address in self.overrides
        )
        text = "".join(lines).replace("rpz:\n", extra + "rpz:\n", 1)
        config.write_text(text, encoding="ascii")


OVERRIDE_ZONE = "local.override."


class BrokenBind(BindPeer):
    """BIND whose config can be broken: a dead primary, or names overridden by a policy
    zone of the operator's own listed before kzgate's (the first zone that matches wins)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deaf = False
        self.overrides: list[tuple[str, str]] = []
        self.live_primary = self.primary

    def zones(self) -> list[str]:
        self.primary = (LOOPBACK, dead_port()) if self.deaf else self.live_primary
        zones = super().zones()
        if self.overrides:
            records = "".join(f"{name} IN A {address}\n" for name, address in self.overrides)
            (self.dir / "override.db").write_text(
                "$TTL 60\n@ IN SOA localhost. hostmaster.localhost. 1 3600 60 604800 60\n"
                f"@ IN NS localhost.\n{records}",
                encoding="ascii",
            )
            zones.append(f'zone "{OVERRIDE_ZONE}" {{ type primary; file "override.db"; }};')
        return zones

    def options(self) -> list[str]:
        options = super().options()
        if self.overrides:
            options = [
                line.replace(
                    f'response-policy {{ zone "{self.origin}"',
                    f'response-policy {{ zone "{OVERRIDE_ZONE}"; zone "{self.origin}"',
                )
                for line in options
            ]
        return options


async def reload(peer: Peer) -> None:
    """Rewrite ``peer``'s config, SIGHUP it, and wait until its log says it reloaded
    (answering alone proves nothing: the old config serves until then)."""
    assert peer.proc is not None
    peer.write_config()
    marker = "start of service" if isinstance(peer, UnboundPeer) else "all zones loaded"
    before = peer.log().count(marker)
    peer.proc.send_signal(signal.SIGHUP)

    async def reloads() -> int:
        return peer.log().count(marker)

    await wait_for(reloads, lambda n: n > before, SETTLE, what=f"{peer.name} reloaded")
    await wait_for(peer.answering, bool, SETTLE, what=f"{peer.name} answering after SIGHUP")


# -- starting it -------------------------------------------------------------------------


def probes_section(
    resolvers: list[int], *, interval: float = 1, sample: int = 20
) -> dict[str, Any]:
    return {
        "enabled": True,
        "resolvers": [f"{LOOPBACK}:{p}" for p in resolvers],
        "interval": interval,
        "sample": sample,
    }


@contextlib.asynccontextmanager
async def probes_fleet(
    tmp_path: Path, pki: Path, *, probes: bool = True, **probe_options: Any
) -> AsyncIterator[ProbesFleet]:
    """The fleet, started and settled; everything stopped and removed afterwards."""
    netns.require_tools()
    upstream = WildDns(upstream_zone())
    up = await upstream.start()
    ports = {"unbound": free_port(), "bind": free_port()}
    sections: dict[str, Any] = {
        "rpz": {
            "enabled": True,
            "origin": ORIGIN,
            "listen": ["127.0.0.1:0"],
            "notify": [f"{LOOPBACK}:{p}" for p in ports.values()],
            "allow_transfer": ["127.0.0.1/32"],
            "ixfr_history": 100,
        },
        # A fixed port: `kzgate verify` reads the config, so its kzgate place must be real.
        "dns": {"listen": [f"{LOOPBACK}:{free_port()}"], "upstreams": [f"{up[0]}:{up[1]}"]},
    }
    peers: list[Peer] = []
    with netns.namespace_pair() as pair:
        # A default route, as a real host has: the connect() place sends a datagram to
        # addresses outside the pair, which needs a route to leave (the server drops it).
        netns.ip(f"-n {pair.client} route add default via {pair.server_v4}")
        netns.ip(f"-n {pair.client} -6 route add default via {pair.server_v6}")
        sections["nftables"] = {"enabled": True, "netns": pair.client, "hooks": ["output"]}
        if probes:
            sections["probes"] = probes_section(list(ports.values()), **probe_options)
        config = write_config(tmp_path, pki, **sections)
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            src = (LOOPBACK, daemon.bound["rpz"][1])
            unbound = BrokenUnbound(tmp_path, origin=ORIGIN, primary=src, upstream=up)
            bind = BrokenBind(tmp_path, origin=ORIGIN, primary=src, upstream=up)
            peers += [unbound, bind]
            await unbound.start(port=ports["unbound"])
            await bind.start(port=ports["bind"])
            assert (unbound.port, bind.port) == (ports["unbound"], ports["bind"]), "port lost"
            fleet = ProbesFleet(daemon, pki, config, Regulator(pki), pair, upstream, unbound, bind)
            await fleet.settled()
            yield fleet
        finally:
            await stop_all(peers)
            await daemon.stop()
            await upstream.close()


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str


async def kzgate_cli(config: Path, *args: str, timeout: float = 60.0) -> CliRun:
    """``kzgate ARGS --config CONFIG`` as a child process, off the loop the daemon runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kzgate", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CliRun(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
