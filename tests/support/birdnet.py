"""A kzgate host and a border router, each running BIRD with the shipped config, in namespaces.

Three namespaces (names from ``netns.PREFIX``, unique per run)::

    customer (cust0 10.98.0.2) -- (rtr1 10.98.0.1) router (rtr0 10.99.0.2)
                                   -- (kzh0 10.99.0.1) kzgate host

The kzgate host runs BIRD with ``configs/bird-rtbh.conf`` and the router with
``configs/bird-rtbh-router.conf``. Both files are read from the repository at
start and only their SITE ``define`` lines (addresses, AS numbers, router ids)
and the ``log`` line (a file here, syslog in production) are replaced; every
replacement must hit exactly once, so a renamed define fails the test rather
than silently testing something else. The targets live on the kzgate host's
loopback (10.66.0.1-2, fd66::1-2) and the router reaches them through it, so a
blackhole on the router is visible as a lost ping from the customer.

Both BIRDs run in the foreground as children of this process (``bird -f``):
``stop`` kills them and deletes the namespaces, and an ``atexit`` hook does the
same for anything a crashed test left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import netns

REPO = Path(__file__).resolve().parents[2]
HOST_CONFIG = REPO / "configs" / "bird-rtbh.conf"
ROUTER_CONFIG = REPO / "configs" / "bird-rtbh-router.conf"
TABLE, PROTO = 666, 252  # the shipped config's KZGATE_TABLE / KZGATE_PROTO (checked in render)
BGP_ON_HOST, BGP_ON_ROUTER = "border1", "kzgate"  # protocol names in the two files
BLACKHOLE, NO_EXPORT = (65535, 666), (65535, 65281)
ESTABLISH_TIMEOUT = 30.0  # BGP waits ~5 s (connect delay) before its first attempt
DROPPED = "Kernel dropped some netlink messages"
BIRD_TOOLS = {"bird": "bird2", "birdc": "bird2"}

_numbers = itertools.count(1)
_running: list[BirdNet] = []


def require_bird() -> None:
    """Fail, rather than skip, when BIRD is missing: scripts/test installs bird2."""
    missing = [f"{c} ({p})" for c, p in BIRD_TOOLS.items() if which(c) is None]
    if missing:
        pytest.fail(f"missing tools for BIRD tests: {', '.join(missing)}")


def which(command: str) -> str | None:
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")


def render(source: Path, defines: Mapping[str, str], log: Path) -> str:
    """The file's text with the named ``define``s and the ``log`` line replaced (each once)."""
    text = source.read_text(encoding="utf-8")
    for name, value in defines.items():
        text, hits = re.subn(
            rf"^define {name} = [^;]+;", f"define {name} = {value};", text, flags=re.M
        )
        if hits != 1:
            raise AssertionError(f"{source}: `define {name}` found {hits} times, expected once")
    text, hits = re.subn(r"^log syslog all;", f'log "{log}" all;', text, flags=re.M)
    if hits != 1:
        raise AssertionError(f"{source}: `log syslog all;` found {hits} times, expected once")
    return text


def check_defines(source: Path, wanted: Mapping[str, str]) -> None:
    """Fail unless the file defines these constants with these values (what the helpers assume)."""
    text = source.read_text(encoding="utf-8")
    for name, value in wanted.items():
        if not re.search(rf"^define {name} = {re.escape(value)};", text, flags=re.M):
            raise AssertionError(f"{source}: expected `define {name} = {value};`")


@dataclass(frozen=True)
class Route:
    """One route as the router's BIRD shows it (``show route all``)."""

    prefix: str
    dest: str  # "blackhole", "unicast", "unreachable", ...
    communities: frozenset[tuple[int, int]]
    next_hop: str | None


def parse_routes(text: str) -> dict[str, Route]:
    """``birdc show route all`` output, by prefix (the best route of each)."""
    routes: dict[str, Route] = {}
    head = re.compile(r"^(\S+)\s+(\S+)\s+\[")
    current: dict[str, object] | None = None

    def close() -> None:
        if current is not None:
            prefix = str(current["prefix"])
            routes.setdefault(
                prefix,
                Route(
                    prefix,
                    str(current["dest"]),
                    frozenset(current["communities"]),  # type: ignore[call-overload]
                    current["next_hop"],  # type: ignore[arg-type]
                ),
            )

    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Table ")):
            continue
        if not line[0].isspace():
            close()
            match = head.match(line)
            if match is None:  # a further route of the same prefix: "  unicast [..."
                current = None
                continue
            current = {"prefix": match[1], "dest": match[2], "communities": set(), "next_hop": None}
        elif current is not None:
            field_ = line.strip()
            if field_.startswith("BGP.community:"):
                pairs = re.findall(r"\((\d+),(\d+)\)", field_)
                current["communities"] = {(int(a), int(b)) for a, b in pairs}
            elif field_.startswith("BGP.next_hop:"):
                current["next_hop"] = field_.split()[1]
    close()
    return routes


@dataclass
class Bird:
    """One BIRD process in a namespace, controlled over its own socket."""

    ns: str
    config: Path
    socket: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "ip", "netns", "exec", self.ns, which("bird") or "bird",
                "-f", "-c", str(self.config), "-s", str(self.socket),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def birdc(self, *command: str) -> str:
        done = subprocess.run(
            [which("birdc") or "birdc", "-s", str(self.socket), *command],
            capture_output=True,
            text=True,
            timeout=netns.COMMAND_TIMEOUT,
        )
        if done.returncode != 0:
            raise AssertionError(f"birdc {' '.join(command)}: {done.stderr or done.stdout}")
        return done.stdout

    def state(self, protocol: str) -> str:
        """The protocol's line of ``show protocols`` (state and info columns)."""
        for line in self.birdc("show", "protocols", protocol).splitlines():
            if line.startswith(protocol + " "):
                return line
        return ""

    def imported(self, protocol: str) -> int:
        """Routes the protocol imported, over all its channels (``Routes: N imported``)."""
        text = self.birdc("show", "protocols", "all", protocol)
        return sum(int(n) for n in re.findall(r"Routes:\s+(\d+) imported", text))

    def dropped(self) -> int:
        """How many times the kernel dropped netlink messages for this BIRD (its log)."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count(DROPPED)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class BirdNet:
    host: str  # the kzgate host's namespace (routes.netns)
    router: str
    customer: str
    directory: Path
    # A change to the host config's text after rendering (bench/routes_bird.py
    # compares BIRD's default netlink buffer with the shipped one); tests leave it None.
    edit_host: Callable[[str], str] | None = None
    host_bird: Bird = field(init=False)
    router_bird: Bird = field(init=False)
    host_v4: str = "10.99.0.1"
    router_v4: str = "10.99.0.2"
    customer_v4: str = "10.98.0.2"
    targets_v4: tuple[str, str] = ("10.66.0.1", "10.66.0.2")
    targets_v6: tuple[str, str] = ("fd66::1", "fd66::2")

    # -- the host's table, written by hand (kzgate's stand-in) --------------------

    def add(self, prefix: str, proto: int = PROTO, kind: str = "blackhole") -> None:
        netns.ip(f"-n {self.host} route add {kind} {prefix} table {TABLE} proto {proto}")

    def delete(self, prefix: str, proto: int = PROTO) -> None:
        netns.ip(f"-n {self.host} route del {prefix} table {TABLE} proto {proto}")

    def host_table(self) -> set[str]:
        """Prefixes of kzgate's protocol in its table on the host (``ip route show``)."""
        return {r["dst"] for r in self._ip_routes(self.host, f"table {TABLE} proto {PROTO}")}

    def flush(self) -> None:
        for family in ("-4", "-6"):
            netns.run(self.host, "ip", family, "route", "flush", "table", str(TABLE), check=False)

    # -- what the router holds ----------------------------------------------------

    def router_routes(self) -> dict[str, Route]:
        """The router's BIRD routes from the kzgate host's session, by prefix."""
        shown = self.router_bird.birdc("show", "route", "all", "protocol", BGP_ON_ROUTER)
        return parse_routes(shown)

    def router_kernel(self) -> dict[str, str]:
        """The routes the router's BIRD installed into its kernel: prefix -> type."""
        routes = self._ip_routes(self.router, "proto bird")
        return {r["dst"]: r.get("type", "unicast") for r in routes}

    def wait_router(self, wanted: Mapping[str, bool], timeout: float = 5.0) -> dict[str, Route]:
        """Wait until the router holds (True) or lacks (False) each prefix, in BIRD and kernel."""
        deadline = time.monotonic() + timeout
        while True:
            routes, kernel = self.router_routes(), self.router_kernel()
            if all(
                (p in routes and kernel.get(p) == "blackhole") == want for p, want in wanted.items()
            ):
                return routes
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"router never reached {dict(wanted)}: BIRD {sorted(routes)}, kernel {kernel}"
                )
            time.sleep(0.05)

    def wait_imported(self, count: int, timeout: float) -> float:
        """Wait until the router's session imported exactly ``count`` routes; seconds waited."""
        started = time.monotonic()
        while (n := self.router_bird.imported(BGP_ON_ROUTER)) != count:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"the router imported {n} routes, not {count}")
            time.sleep(0.05)
        return time.monotonic() - started

    def reachable_from_customer(self, addr: str, timeout: float = 0.5) -> bool:
        return netns.ping(self.customer, addr, timeout=timeout)

    @staticmethod
    def _ip_routes(ns: str, selector: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for family in ("-4", "-6"):
            done = netns.run(ns, "ip", "-j", family, "route", "show", *selector.split())
            routes = json.loads(done.stdout or "[]")
            for r in routes:
                dst = r["dst"]
                if "/" not in dst and dst != "default":
                    dst += "/32" if family == "-4" else "/128"
                r["dst"] = dst
            out += routes
        return out

    # -- life ---------------------------------------------------------------------

    def start(self) -> None:
        self._topology()
        site_host = {
            "KZGATE_ROUTER_ID": self.host_v4,
            "KZGATE_AS": "65001",
            "BORDER_ADDR": self.router_v4,
            "BORDER_AS": "65000",
        }
        site_router = {
            "ROUTER_ID": self.router_v4,
            "ROUTER_AS": "65000",
            "KZGATE_ADDR": self.host_v4,
            "KZGATE_AS": "65001",
        }
        check_defines(HOST_CONFIG, {"KZGATE_TABLE": str(TABLE), "KZGATE_PROTO": str(PROTO)})
        self.host_bird = self._bird(self.host, HOST_CONFIG, site_host, "host", self.edit_host)
        self.router_bird = self._bird(self.router, ROUTER_CONFIG, site_router, "router")
        for bird in (self.host_bird, self.router_bird):
            bird.start()
        self.wait_established()

    def _bird(
        self,
        ns: str,
        source: Path,
        site: Mapping[str, str],
        name: str,
        edit: Callable[[str], str] | None = None,
    ) -> Bird:
        log = self.directory / f"{name}.log"
        config = self.directory / f"{name}.conf"
        text = render(source, site, log)
        config.write_text(edit(text) if edit else text, encoding="utf-8")
        return Bird(ns, config, self.directory / f"{name}.ctl", log)

    def wait_established(self, timeout: float = ESTABLISH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for bird in (self.host_bird, self.router_bird):
                assert bird.proc is not None
                if bird.proc.poll() is not None:
                    err = bird.proc.stderr.read().decode() if bird.proc.stderr else ""
                    raise AssertionError(f"bird in {bird.ns} exited {bird.proc.returncode}: {err}")
            states = []
            for bird, proto in ((self.host_bird, BGP_ON_HOST), (self.router_bird, BGP_ON_ROUTER)):
                with contextlib.suppress(AssertionError):  # its socket is not there yet
                    states.append(bird.state(proto))
            if len(states) == 2 and all("Established" in s for s in states):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"BGP not established after {timeout} s: {states}")
            time.sleep(0.2)

    def _topology(self) -> None:
        h, r, c = self.host, self.router, self.customer
        for ns in (h, r, c):
            netns.ip(f"netns add {ns}")
            netns.ip(f"-n {ns} link set lo up")
        commands = [
            f"-n {h} link add kzh0 type veth peer name rtr0 netns {r}",
            f"-n {c} link add cust0 type veth peer name rtr1 netns {r}",
            f"-n {h} addr add {self.host_v4}/30 dev kzh0",
            f"-n {h} addr add fd99::1/64 dev kzh0 nodad",
            f"-n {r} addr add {self.router_v4}/30 dev rtr0",
            f"-n {r} addr add fd99::2/64 dev rtr0 nodad",
            f"-n {r} addr add 10.98.0.1/30 dev rtr1",
            f"-n {r} addr add fd98::1/64 dev rtr1 nodad",
            f"-n {c} addr add {self.customer_v4}/30 dev cust0",
            f"-n {c} addr add fd98::2/64 dev cust0 nodad",
            *(f"-n {h} addr add {a}/32 dev lo" for a in self.targets_v4),
            *(f"-n {h} addr add {a}/128 dev lo" for a in self.targets_v6),
            *(f"-n {ns} link set {dev} up"
              for ns, dev in ((h, "kzh0"), (r, "rtr0"), (r, "rtr1"), (c, "cust0"))),
            f"-n {r} route add 10.66.0.0/16 via {self.host_v4}",
            f"-n {r} route add fd66::/16 via fd99::1",
            f"-n {c} route add default via 10.98.0.1",
            f"-n {c} -6 route add default via fd98::1",
            f"-n {h} route add 10.98.0.0/30 via {self.router_v4}",
            f"-n {h} -6 route add fd98::/64 via fd99::2",
        ]  # fmt: skip
        for command in commands:
            netns.ip(command)
        netns.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        deadline = time.monotonic() + 10
        for addr in (*self.targets_v4, *self.targets_v6):
            while not self.reachable_from_customer(addr):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{addr} never answered the customer")

    def stop(self) -> None:
        for bird in (getattr(self, "host_bird", None), getattr(self, "router_bird", None)):
            if bird is not None:
                bird.stop()
        for ns in (self.host, self.router, self.customer):
            netns.delete_namespace(ns)
        with contextlib.suppress(ValueError):
            _running.remove(self)


def create(directory: Path, edit_host: Callable[[str], str] | None = None) -> BirdNet:
    """The three namespaces and both BIRDs, BGP established; torn down if any step fails."""
    netns.require_tools()
    require_bird()
    n = next(_numbers)
    made = BirdNet(
        f"{netns.PREFIX}b{n}h", f"{netns.PREFIX}b{n}r", f"{netns.PREFIX}b{n}c", directory, edit_host
    )
    _running.append(made)
    try:
        made.start()
    except BaseException:
        made.stop()
        raise
    return made


@contextlib.contextmanager
def birdnet(directory: Path, edit_host: Callable[[str], str] | None = None) -> Iterator[BirdNet]:
    made = create(directory, edit_host)
    try:
        yield made
    finally:
        made.stop()


@atexit.register
def _stop_leftovers() -> None:
    for made in list(_running):
        made.stop()
