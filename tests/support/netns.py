"""Network namespaces for tests: two joined by a veth pair, and the tools to probe them.

Everything happens inside namespaces this module creates (``kzg-<pid>-<n>``),
so the host's ruleset and interfaces are never touched: links are created
inside the client namespace with their peer end moved straight into the
server namespace. Each test deletes its pair in teardown; an ``atexit`` hook
deletes whatever namespaces of this process are left (a test that crashed
between creation and its teardown).

Drift is simulated the way an operator would cause it: ``nft`` run in the
namespace by another process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from kzgate.names import IPNetwork

PREFIX = f"kzg-{os.getpid()}-"
COMMAND_TIMEOUT = 30.0  # a generous bound for one ip/nft command, e.g. listing 50k elements
CLIENT_MAC, SERVER_MAC = "02:77:00:00:00:01", "02:77:00:00:00:02"
TOOLS = {"ip": "iproute2", "nft": "nftables", "ping": "iputils-ping"}

_numbers = itertools.count(1)
_created: set[str] = set()


@functools.cache
def unavailable() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need `ip` (iproute2)"
    probe = f"{PREFIX}probe"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=COMMAND_TIMEOUT)
    return None


# Test modules set ``pytestmark = netns.required``. Where namespaces cannot be
# made such a test is skipped in a developer's plain pytest, and fails in a
# strict run (scripts/test sets KZGATE_STRICT_SKIPS=1): see tests/support/skipgate.py.
required = pytest.mark.privileged(check=unavailable)


def require_tools() -> None:
    """Fail, rather than skip, when a tool is missing: CI must install it."""
    missing = [f"{cmd} ({pkg})" for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if missing:
        pytest.fail(f"missing tools for namespace tests: {', '.join(missing)}")


# -- running commands ---------------------------------------------------------


def run(
    ns: str | None,
    *args: str,
    check: bool = True,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns`` (None: this process's own namespace)."""
    argv = ["ip", "netns", "exec", ns, *args] if ns is not None else list(args)
    done = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout}"
        )
    return done


def nft(ns: str, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an nft script (``nft -f -``) inside ``ns``: another process, as an operator would."""
    return run(ns, "nft", "-f", "-", input=script, check=check)


# -- a pair of namespaces -----------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Two namespaces joined by a veth pair; the server answers on two addresses per family."""

    client: str
    server: str
    client_v4: str = "10.77.0.1"
    server_v4: str = "10.77.0.2"
    server_v4_alt: str = "10.77.0.3"
    client_v6: str = "fd77::1"
    server_v6: str = "fd77::2"
    server_v6_alt: str = "fd77::3"

    @property
    def server_addresses(self) -> tuple[str, str, str, str]:
        return (self.server_v4, self.server_v4_alt, self.server_v6, self.server_v6_alt)


def ip(command: str) -> None:
    """Run ``ip COMMAND`` (words split on spaces) in this process's namespace."""
    run(None, "ip", *command.split())


def create_pair(ready_timeout: float = 10.0) -> Pair:
    """Make a client and a server namespace joined by veth, and wait until both families flow."""
    require_tools()
    n = next(_numbers)
    pair = Pair(client=f"{PREFIX}{n}c", server=f"{PREFIX}{n}s")
    client, server = pair.client, pair.server
    try:
        for ns in (client, server):
            _created.add(ns)
            ip(f"netns add {ns}")
            ip(f"-n {ns} link set lo up")
        # Created inside the client namespace, its peer moved straight into the server's.
        ip(f"-n {client} link add kzc address {CLIENT_MAC} type veth"
           f" peer name kzs address {SERVER_MAC} netns {server}")  # fmt: skip
        for addr in (f"{pair.client_v4}/24", f"{pair.client_v6}/64 nodad"):
            ip(f"-n {client} addr add {addr} dev kzc")
        for addr in (pair.server_v4, pair.server_v4_alt):
            ip(f"-n {server} addr add {addr}/24 dev kzs")
        for addr in (pair.server_v6, pair.server_v6_alt):
            ip(f"-n {server} addr add {addr}/64 dev kzs nodad")
        # Static IPv6 neighbours: neighbour discovery on a fresh link loses its first
        # solicitation and retries only a second later.
        for addr in (pair.server_v6, pair.server_v6_alt):
            ip(f"-n {client} neigh replace {addr} lladdr {SERVER_MAC} dev kzc nud permanent")
        ip(f"-n {server} neigh replace {pair.client_v6} lladdr {CLIENT_MAC} dev kzs nud permanent")
        ip(f"-n {client} link set kzc up")
        ip(f"-n {server} link set kzs up")
        deadline = time.monotonic() + ready_timeout
        for addr in pair.server_addresses:
            while not ping(client, addr, timeout=0.5):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{addr} never answered from {client}")
    except BaseException:
        delete_pair(pair)
        raise
    return pair


@contextlib.contextmanager
def namespace_pair() -> Iterator[Pair]:
    """A pair for the length of a ``with`` block (a test fixture's body)."""
    pair = create_pair()
    try:
        yield pair
    finally:
        delete_pair(pair)


@contextlib.contextmanager
def namespace(ready: Iterable[str] = ("lo",)) -> Iterator[str]:
    """One bare namespace (its ``ready`` links up) for the length of a ``with`` block."""
    ns = f"{PREFIX}{next(_numbers)}r"
    _created.add(ns)
    try:
        ip(f"netns add {ns}")
        for link in ready:
            ip(f"-n {ns} link set {link} up")
        yield ns
    finally:
        delete_namespace(ns)


def delete_pair(pair: Pair) -> None:
    for ns in (pair.client, pair.server):
        delete_namespace(ns)


def delete_namespace(ns: str) -> None:
    """Delete one namespace this module created (its veth end goes with it)."""
    if not ns.startswith(PREFIX):
        raise ValueError(f"refusing to delete {ns!r}: not created by this test run")
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=COMMAND_TIMEOUT)
    _created.discard(ns)


def leftovers() -> list[str]:
    """Namespaces of this process that still exist."""
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    return [ns for ns in names if ns.startswith(PREFIX)]


@atexit.register
def _delete_leftovers() -> None:
    """The safety net: whatever this test run created and did not delete."""
    if not _created:
        return
    for ns in leftovers():
        delete_namespace(ns)


# -- probing ------------------------------------------------------------------


@dataclass(frozen=True)
class PingResult:
    ok: bool
    output: str
    seconds: float


def ping_result(ns: str, addr: str, *, timeout: float = 1.0) -> PingResult:
    """One echo request from ``ns`` to ``addr``, waiting at most ``timeout`` for the reply."""
    started = time.monotonic()
    done = run(
        ns, "ping", "-n", "-c", "1", "-W", f"{timeout:g}", addr, check=False, timeout=timeout + 10
    )
    return PingResult(done.returncode == 0, done.stdout + done.stderr, time.monotonic() - started)


def ping(ns: str, addr: str, *, timeout: float = 1.0) -> bool:
    """True when ``addr`` answered one echo request from ``ns`` within ``timeout``."""
    return ping_result(ns, addr, timeout=timeout).ok


def reachable(pair: Pair, timeout: float = 0.5) -> dict[str, bool]:
    """Which of the server's addresses answer the client, by address (pinged in parallel)."""
    addrs = pair.server_addresses
    with ThreadPoolExecutor(len(addrs)) as pool:
        answers = pool.map(lambda addr: ping(pair.client, addr, timeout=timeout), addrs)
        return dict(zip(addrs, answers, strict=True))


# -- reading and disturbing nftables state ------------------------------------


def _elements(raw: Iterable[Any]) -> set[IPNetwork]:
    """nft JSON elements (address, prefix, range, or any of those with a comment)."""
    out: set[IPNetwork] = set()
    for item in raw:
        if isinstance(item, dict) and "elem" in item:
            item = item["elem"]
        if isinstance(item, dict) and "val" in item:
            item = item["val"]
        if isinstance(item, str):
            out.add(ipaddress.ip_network(item))
        elif "prefix" in item:
            out.add(ipaddress.ip_network(f"{item['prefix']['addr']}/{item['prefix']['len']}"))
        elif "range" in item:
            first, last = (ipaddress.ip_address(a) for a in item["range"])
            # A range that is no single prefix (e.g. merged neighbours) stays visible
            # as several networks, so comparing with the wanted state still fails.
            out.update(ipaddress.summarize_address_range(first, last))
        else:
            raise ValueError(f"unexpected nft element {item!r}")
    return out


def read_set(ns: str, name: str = "blocked_v4", table: str = "kzgate") -> set[IPNetwork] | None:
    """The elements of ``inet table name`` in ``ns``; None when the set (or table) is missing.

    ``nft -j list set`` reads the whole set: fine for test sizes, never for a daemon.
    """
    done = run(ns, "nft", "-j", "list", "set", "inet", table, name, check=False)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return None
        raise AssertionError(f"nft list set {name}: {done.stderr.strip()}")
    for obj in json.loads(done.stdout)["nftables"]:
        if "set" in obj:
            return _elements(obj["set"].get("elem", []))
    raise AssertionError(f"no set in the output of nft list set {name}")


SET_NAMES = ("blocked_hosts_v4", "blocked_v4", "blocked_hosts_v6", "blocked_v6")


def read_sets(ns: str, table: str = "kzgate") -> set[IPNetwork] | None:
    """All four sets' elements (comparable with ``State.prefixes``); None if one is missing."""
    out: set[IPNetwork] = set()
    for name in SET_NAMES:
        found = read_set(ns, name, table)
        if found is None:
            return None
        out |= found
    return out


def set_comments(ns: str, name: str, table: str = "kzgate") -> dict[IPNetwork, str]:
    """Each element's comment (elements without one are left out)."""
    done = run(ns, "nft", "-j", "list", "set", "inet", table, name)
    out: dict[IPNetwork, str] = {}
    for obj in json.loads(done.stdout)["nftables"]:
        for item in obj.get("set", {}).get("elem", []):
            if isinstance(item, dict) and "comment" in item.get("elem", {}):
                [key] = _elements([item])
                out[key] = item["elem"]["comment"]
    return out


def table_objects(ns: str, table: str = "kzgate") -> dict[str, list[dict[str, Any]]] | None:
    """The objects of ``inet table`` by kind ("set", "chain", "rule"); None if it is missing."""
    done = run(ns, "nft", "-j", "list", "table", "inet", table, check=False)
    if done.returncode != 0:
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in json.loads(done.stdout)["nftables"]:
        for kind, body in obj.items():
            if kind != "metainfo":
                out.setdefault(kind, []).append(body)
    return out


def delete_table(ns: str, table: str = "kzgate") -> None:
    run(ns, "nft", "delete", "table", "inet", table)


def flush_set(ns: str, name: str = "blocked_v4", table: str = "kzgate") -> None:
    run(ns, "nft", "flush", "set", "inet", table, name)


def delete_element(ns: str, element: str, name: str = "blocked_v4", table: str = "kzgate") -> None:
    run(ns, "nft", "delete", "element", "inet", table, name, f"{{ {element} }}")


# -- a packet stream, to catch any instant in which a blocked address is reachable ----

_RECEIVER = """
import select, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
socks = []
for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.setblocking(False)
    socks.append(s)
print("ready", flush=True)
n, end = 0, time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    for s in select.select(socks, [], [], left)[0]:
        while True:
            try:
                s.recv(64)
            except BlockingIOError:
                break
            n += 1
print(n, flush=True)
"""

_SENDER = """
import socket, sys, time
port, seconds, addrs = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
socks = [
    (socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM), a)
    for a in addrs
]
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for s, a in socks:
        try:
            s.sendto(b"x", (a, port))
        except OSError:  # EPERM: dropped by an output hook
            pass
        sent += 1
print(sent, flush=True)
"""


class Stream:
    """UDP datagrams from the client to ``addrs`` on the server, as fast as Python sends them.

    ``finish`` returns (sent, received): a blocked address must receive nothing,
    however briefly it was reachable.
    """

    def __init__(self, pair: Pair, addrs: Iterable[str], seconds: float, port: int = 7707) -> None:
        python = sys.executable
        self.seconds = seconds
        self.receiver = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                pair.server,
                python,
                "-c",
                _RECEIVER,
                str(port),
                str(seconds + 1.0),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.receiver.stdout is not None
        ready = self.receiver.stdout.readline()  # bound by the receiver's own lifetime
        if ready.strip() != "ready":
            self.receiver.kill()
            raise AssertionError(f"the stream's receiver did not start: {ready!r}")
        self.sender = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                pair.client,
                python,
                "-c",
                _SENDER,
                str(port),
                str(seconds),
                *addrs,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def finish(self) -> tuple[int, int]:
        try:
            sent, _ = self.sender.communicate(timeout=self.seconds + 10)
            received, _ = self.receiver.communicate(timeout=self.seconds + 10)
        finally:
            for proc in (self.sender, self.receiver):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return int(sent), int(received.split()[-1])


async def reachable_off_loop(pair: Pair) -> dict[str, bool]:
    """``reachable``, in a thread: an in-process daemon or enforcer must keep running."""
    return await asyncio.to_thread(reachable, pair)


async def read_sets_off_loop(pair: Pair) -> set[IPNetwork] | None:
    return await asyncio.to_thread(read_sets, pair.client)


async def read_set_off_loop(pair: Pair, name: str) -> set[IPNetwork] | None:
    return await asyncio.to_thread(read_set, pair.client, name)


def only_peer_blocked(pair: Pair) -> dict[str, bool]:
    """The server's main addresses blocked, its alternative ones reachable."""
    return {
        pair.server_v4: False,
        pair.server_v4_alt: True,
        pair.server_v6: False,
        pair.server_v6_alt: True,
    }
