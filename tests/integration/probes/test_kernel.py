"""The kernel probes against real state: the nft and routes enforcers write it, the probes read it.

Each state is made by kzgate's own enforcers in a namespace; drift is made
behind their back by ``nft`` and ``ip`` run as another process, with the
enforcer closed first (its table stays; no drift monitor repairs it).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kzgate.config import NftConfig, RoutesConfig
from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.nft import NftEnforcer
from kzgate.enforce.routes import RoutesEnforcer
from kzgate.model import InstructionRef, State
from kzgate.names import IPNetwork
from kzgate.probes.kernel import Kernel
from tests.support import netns

pytestmark = netns.required

A = InstructionRef("mci", "77-A", "2026-11-01")
PORT = 8080
NOBODY_V4 = "10.77.0.9"  # on the pair's link, but no host answers for it


def state(*cidrs: str) -> State:
    nets: dict[IPNetwork, InstructionRef] = {ipaddress.ip_network(c): A for c in cidrs}
    return State({}, nets)


@pytest.fixture
def pair() -> Iterator[netns.Pair]:
    with netns.namespace_pair() as made:
        yield made


@pytest.fixture
def ns() -> Iterator[str]:
    with netns.namespace() as made:
        yield made


async def started_nft(cfg: NftConfig, wanted: State) -> NftEnforcer:
    enforcer = NftEnforcer(cfg, on_drift=lambda: None)
    await enforcer.start()
    await enforcer.reconcile(wanted)
    return enforcer


def nft_config(pair: netns.Pair, action: str = "drop") -> NftConfig:
    return NftConfig(enabled=True, netns=pair.client, hooks=("output",), action=action)  # type: ignore[arg-type]


# -- nftables -------------------------------------------------------------------------


async def test_nft_lookup_names_the_covering_element_and_sees_deletions(pair: netns.Pair) -> None:
    cfg = nft_config(pair)
    wanted = state("10.77.0.2/32", "10.99.0.0/24", "255.255.255.0/24", "fd77::2/128", "fd99::/64")
    enforcer = await started_nft(cfg, wanted)
    kernel = Kernel(cfg, None)
    try:
        assert kernel.nft_lookup("10.77.0.2") == "blocked_hosts_v4 10.77.0.2"
        assert kernel.nft_lookup("10.99.0.0") == "blocked_v4 10.99.0.0/24"
        assert kernel.nft_lookup("10.99.0.255") == "blocked_v4 10.99.0.0/24"
        assert kernel.nft_lookup("255.255.255.255") == "blocked_v4 255.255.255.0/24"
        assert kernel.nft_lookup("fd77::2") == "blocked_hosts_v6 fd77::2"
        assert kernel.nft_lookup("fd99::1:2") == "blocked_v6 fd99::/64"
        for absent in ("10.77.0.3", "10.99.1.0", "10.98.255.255", "fd77::3", "fd99:0:0:1::"):
            assert kernel.nft_lookup(absent) is None, absent
        await enforcer.close()  # the table stays, and nothing watches it any more
        netns.delete_element(pair.client, "10.99.0.0/24", "blocked_v4")
        netns.delete_element(pair.client, "fd77::2", "blocked_hosts_v6")
        assert kernel.nft_lookup("10.99.0.5") is None
        assert kernel.nft_lookup("fd77::2") is None
        assert kernel.nft_lookup("10.77.0.2") == "blocked_hosts_v4 10.77.0.2"  # untouched
        netns.delete_table(pair.client)
        assert kernel.nft_lookup("10.77.0.2") is None  # no table: nothing enforced
    finally:
        kernel.close()
        await enforcer.close()


# -- routes ---------------------------------------------------------------------------


async def test_route_lookup_names_our_covering_route_and_sees_deletions(ns: str) -> None:
    cfg = RoutesConfig(enabled=True, netns=ns)
    enforcer = RoutesEnforcer(cfg, on_drift=lambda: None)
    await enforcer.start()
    kernel = Kernel(None, cfg, route_snapshot_age=0.0)
    try:
        await enforcer.reconcile(state("192.0.2.0/24", "192.0.2.7/32", "2001:db8::/48"))
        netns.run(ns, "ip", "route", "add", "table", "666", "proto", "static",
                  "blackhole", "203.0.113.0/24")  # fmt: skip
        assert kernel.route_lookup("192.0.2.7") == "table 666 192.0.2.7/32 blackhole"
        assert kernel.route_lookup("192.0.2.8") == "table 666 192.0.2.0/24 blackhole"
        assert kernel.route_lookup("2001:db8::5") == "table 666 2001:db8::/48 blackhole"
        assert kernel.route_lookup("203.0.113.1") is None  # in our table, not our protocol
        assert kernel.route_lookup("198.51.100.1") is None
        assert kernel.route_lookup("2001:db9::1") is None
        await enforcer.close()
        netns.run(ns, "ip", "route", "del", "table", "666", "192.0.2.0/24")
        assert kernel.route_lookup("192.0.2.8") is None
        assert kernel.route_lookup("192.0.2.7") == "table 666 192.0.2.7/32 blackhole"
    finally:
        kernel.close()
        await enforcer.close()


async def test_a_route_snapshot_is_reused_only_for_its_age(ns: str) -> None:
    cfg = RoutesConfig(enabled=True, netns=ns)
    enforcer = RoutesEnforcer(cfg, on_drift=lambda: None)
    await enforcer.start()
    kernel = Kernel(None, cfg, route_snapshot_age=3600.0)
    try:
        await enforcer.reconcile(state("192.0.2.0/24"))
        assert kernel.route_lookup("192.0.2.1") == "table 666 192.0.2.0/24 blackhole"
        await enforcer.reconcile(state())
        assert kernel.route_lookup("192.0.2.1") is not None  # the hour-old snapshot
        kernel.route_snapshot_age = 0.0
        assert kernel.route_lookup("192.0.2.1") is None
    finally:
        kernel.close()
        await enforcer.close()


# -- connect --------------------------------------------------------------------------

_LISTENER = """
import socket, sys, time
socks = []
for a in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, int(sys.argv[1])))
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def listening(pair: netns.Pair) -> Iterator[netns.Pair]:
    """TCP listeners on the server's alternative addresses; its main ones refuse."""
    argv = ["ip", "netns", "exec", pair.server, sys.executable, "-c", _LISTENER, str(PORT),
            pair.server_v4_alt, pair.server_v6_alt]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield pair
    finally:
        proc.kill()
        proc.wait()


def tcp_errno(ns: str, address: str, timeout: float = 1.0) -> str:
    """What a plain TCP connect() from ``ns`` gets: the docstring's measured table."""

    def go() -> str:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect((address, PORT))
            except TimeoutError:
                return "timeout"
            except OSError as exc:
                return errno.errorcode[exc.errno or 0]
            return "connected"

    return run_in_netns(ns, go)


async def test_connect_without_a_rule_tells_connected_refused_and_timeout(
    listening: netns.Pair,
) -> None:
    pair = listening
    kernel = Kernel(nft_config(pair), None, connect_port=PORT, connect_timeout=1.0)
    assert kernel.connect_result(pair.server_v4_alt) == "open: connected"
    assert kernel.connect_result(pair.server_v6_alt) == "open: connected"
    assert kernel.connect_result(pair.server_v4) == "open: ECONNREFUSED"
    assert kernel.connect_result(pair.server_v6) == "open: ECONNREFUSED"
    # nobody there: the datagram still went out, so no rule stopped it
    assert kernel.connect_result(NOBODY_V4) == "open: sent, tcp timeout"


@pytest.mark.parametrize("action", ["drop", "reject"])
async def test_connect_to_a_blocked_address_is_refused_by_our_output_rule(
    listening: netns.Pair, action: str
) -> None:
    pair = listening
    cfg = nft_config(pair, action)
    blocked = (pair.server_v4, pair.server_v4_alt, pair.server_v6)
    enforcer = await started_nft(cfg, state(*(f"{a}/{32 if '.' in a else 128}" for a in blocked)))
    try:
        kernel = Kernel(cfg, None, connect_port=PORT, connect_timeout=1.0)
        for address in blocked:  # a listener behind the block changes nothing
            assert kernel.connect_result(address) == "blocked: EPERM", address
        assert kernel.connect_result(pair.server_v6_alt) == "open: connected"
        # why a datagram goes first: TCP alone sees a drop as an unreachable peer
        expected = "timeout" if action == "drop" else "EHOSTUNREACH"
        assert tcp_errno(pair.client, pair.server_v4_alt) == expected
    finally:
        await enforcer.close()
