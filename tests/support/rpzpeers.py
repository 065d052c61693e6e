"""Real RPZ peers on loopback: Unbound and BIND ``named`` as secondaries, and a stand-in primary.

Each peer is a child process with its own temporary directory, config and log,
listening on 127.0.0.1 on a port picked free for UDP and TCP (a start that
loses the port to another process is retried on a new one). Every wait is
bounded; :meth:`Peer.stop` kills and reaps. Nothing here sends a packet off
127.0.0.0/8: both resolvers forward every name they do not hold to one local
upstream (a :class:`dnsfake.FakeDns` in the tests), and BIND's root hints point
at 127.0.0.1.

* :class:`UnboundPeer` — an ``rpz:`` clause pulling the zone from the primary
  (AXFR/IXFR over TCP, SOA probes over UDP), NOTIFY accepted from loopback,
  ``rpz-log``, and ``for-downstream`` so the serial it holds can be asked.
  Unbound 1.17 has no TSIG for zone transfers (no ``tsig-key:`` clause), so it
  always transfers unsigned.
* :class:`BindPeer` — ``response-policy`` (``min-update-interval 0``: each
  new version applies at once; BIND's default waits up to 5 s between two)
  over a secondary zone from the primary, optionally with a TSIG key; its
  ``xfer-in`` log at debug 3 says whether each transfer was an IXFR or an AXFR.
* :class:`BindPrimary` — ``named`` serving a static RPZ zone file as the
  primary (``ixfr-from-differences``, NOTIFY to the secondaries, TSIG and an
  address ACL for transfers): proves the harness without kzgate.

Queries go out from this process with dnslib over UDP (:func:`query`), so no
``dig`` is needed; :func:`kdig_xfr` runs ``kdig`` for AXFR/IXFR.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dnslib import QTYPE, RCODE, DNSRecord


def _which(command: str) -> str | None:
    """``command`` on PATH, or in /usr/sbin and /sbin (not on a non-root PATH)."""
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")


UNBOUND = _which("unbound")
NAMED = _which("named")
KDIG = _which("kdig")
LOOPBACK = "127.0.0.1"
T = TypeVar("T")


# -- small pieces ----------------------------------------------------------------


@dataclass(frozen=True)
class Tsig:
    """A TSIG key as kzgate, BIND and kdig each spell it."""

    name: str = "kzgate-xfr."
    algorithm: str = "hmac-sha256"
    secret: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    def write_secret(self, path: Path) -> Path:
        """The secret alone, base64, as kzgate's ``rpz.tsig.secret_file`` reads it."""
        path.write_text(self.secret + "\n", encoding="ascii")
        path.chmod(0o600)
        return path

    def kdig(self) -> str:
        """The argument of ``kdig -y``."""
        return f"{self.algorithm}:{self.name}:{self.secret}"

    def bind_key(self) -> str:
        return f'key "{self.name}" {{ algorithm {self.algorithm}; secret "{self.secret}"; }};'


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (a peer's config needs it up front)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise OSError("no port free for both UDP and TCP")


@dataclass(frozen=True)
class Reply:
    """What a server answered: the RCODE's name, and the answer section as (name, type, rdata)."""

    rcode: str
    answers: tuple[tuple[str, str, str], ...]
    aa: bool = False

    def addresses(self) -> list[str]:
        return [rdata for _, rtype, rdata in self.answers if rtype in ("A", "AAAA")]

    def __str__(self) -> str:
        return f"{self.rcode} {list(self.answers)}"


async def query(
    port: int,
    name: str,
    qtype: str = "A",
    *,
    timeout: float = 1.0,
    host: str = LOOPBACK,
    source: str | None = None,
) -> Reply | None:
    """One UDP query with RD set; ``None`` when nothing (or garbage) comes back in time.

    ``source``: the local address to send from (e.g. 127.0.0.2, to test an ACL).
    """
    request = DNSRecord.question(name, qtype)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
        await loop.sock_sendall(sock, request.pack())
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            except (TimeoutError, ConnectionRefusedError):
                return None
            try:
                reply = DNSRecord.parse(data)
            except Exception:
                continue
            if reply.header.id != request.header.id:
                continue
            answers = tuple(
                (str(rr.rname).lower(), QTYPE.get(rr.rtype), str(rr.rdata)) for rr in reply.rr
            )
            return Reply(RCODE.get(reply.header.rcode), answers, bool(reply.header.aa))
    return None


async def soa_serial(
    port: int, zone: str, *, timeout: float = 1.0, source: str | None = None
) -> int | None:
    """The serial of ``zone``'s SOA as the server at ``port`` holds it, or ``None``."""
    reply = await query(port, zone, "SOA", timeout=timeout, source=source)
    if reply is None or reply.rcode != "NOERROR":
        return None
    for _, rtype, rdata in reply.answers:
        if rtype == "SOA":
            return int(rdata.split()[2])
    return None


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    good: Callable[[T], bool],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = 0.02,
) -> tuple[T, float]:
    """Poll ``probe`` until ``good`` holds; return the value and the seconds it took.

    Raises ``TimeoutError`` naming ``what`` and the last value seen.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        value = await probe()
        if good(value):
            return value, time.monotonic() - started
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout} s; last seen: {value}")
        await asyncio.sleep(interval)


@dataclass
class Transfer:
    """The outcome of one ``kdig`` AXFR or IXFR."""

    ok: bool  # exit 0, no error, and the answer opens and closes with the SOA
    records: list[tuple[str, str, str]]  # (owner, type, rdata), in order
    output: str
    returncode: int
    error: str | None  # the RCODE kdig reports the server replied with, e.g. "REFUSED"

    def soa_serials(self) -> list[int]:
        return [int(rdata.split()[2]) for _, rtype, rdata in self.records if rtype == "SOA"]

    def incremental(self) -> bool:
        """An IXFR answered with differences (RFC 1995): the second record is an SOA too."""
        return self.ok and len(self.records) > 2 and self.records[1][1] == "SOA"

    def data(self) -> list[tuple[str, str, str]]:
        """Every record but the SOAs."""
        return [r for r in self.records if r[1] != "SOA"]


async def kdig_xfr(
    port: int,
    zone: str,
    *,
    serial: int | None = None,
    tsig: Tsig | None = None,
    source: str | None = None,
    host: str = LOOPBACK,
    timeout: float = 10.0,
) -> Transfer:
    """``kdig AXFR`` (or ``IXFR=serial``) of ``zone`` from ``host:port``, optionally signed."""
    if KDIG is None:
        raise RuntimeError("kdig is not installed (Debian: knot-dnsutils)")
    kind = "AXFR" if serial is None else f"IXFR={serial}"
    cmd = [KDIG, f"@{host}", "-p", str(port), "+noall", "+answer", "+time=3", "+retry=0"]
    if tsig is not None:
        cmd += ["-y", tsig.kdig()]
    if source is not None:
        cmd += ["-b", source]
    cmd += [kind, zone]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    records = []
    for line in text.splitlines():
        if not line or line.startswith(";"):
            continue
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[2] == "IN":
            records.append((parts[0].lower(), parts[3], parts[4]))
    ok = (
        proc.returncode == 0
        and "ERROR" not in text
        and len(records) >= 2
        and records[0][1] == "SOA"
        and records[-1][1] == "SOA"
    )
    error = re.search(r"server replied with error '([^']+)'", text)
    return Transfer(ok, records, text, proc.returncode or 0, error.group(1) if error else None)


def rpz_zone_text(origin: str, serial: int, blocked: Iterable[str], *, refresh: int = 3600) -> str:
    """An RPZ zone as kzgate renders one: NXDOMAIN (``CNAME .``) for each name and its subtree."""
    lines = [
        f"$ORIGIN {origin}",
        "$TTL 60",
        f"@ IN SOA localhost. hostmaster.localhost. {serial} {refresh} 60 604800 60",
        "@ IN NS localhost.",
    ]
    for name in blocked:
        lines.append(f"{name} IN CNAME .")
        lines.append(f"*.{name} IN CNAME .")
    return "\n".join(lines) + "\n"


# -- peers ------------------------------------------------------------------------------


class Peer:
    """A DNS server child process on 127.0.0.1:``port``, with its own directory and log."""

    kind = "peer"
    start_attempts = 3

    def __init__(self, work: Path, name: str | None = None) -> None:
        self.name = name or self.kind
        self.dir = work / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.logfile = self.dir / f"{self.kind}.log"
        self.outfile = self.dir / "stdout.log"

    # what a subclass provides
    def command(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    async def answering(self) -> bool:
        """True once the server answers a query (any answer at all)."""
        return await query(self.port, "localhost.", "SOA", timeout=0.2) is not None

    # lifecycle
    async def start(self, timeout: float = 20.0, port: int | None = None) -> None:
        """Start on ``port`` (else a free one); retry on a new one if the port is taken.

        A caller that must tell the primary where to NOTIFY picks the port up
        front with :func:`free_port` and checks :attr:`port` afterwards.
        """
        last = ""
        for attempt in range(self.start_attempts):
            self.port = port if port is not None and attempt == 0 else free_port()
            self.write_config()
            with self.outfile.open("ab") as out:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.command(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=self.dir,
                    start_new_session=True,  # a ^C to the tests does not reach it twice
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    break
                if await self.answering() and self.proc.returncode is None:
                    return
                await asyncio.sleep(0.05)
            await self.stop()
            last = self.output()[-3000:] + self.log()[-3000:]
            if "address in use" not in last.lower():
                break
        raise RuntimeError(f"{self.name} did not start on 127.0.0.1:{self.port}:\n{last}")

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaped."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")
        return ""

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return self.outfile.read_text(errors="replace")
        return ""

    # asking it
    async def resolve(self, name: str, qtype: str = "A", timeout: float = 1.0) -> Reply | None:
        return await query(self.port, name, qtype, timeout=timeout)

    async def serial(self, zone: str) -> int | None:
        """The serial of the RPZ zone this peer holds now (None before its first transfer)."""
        return await soa_serial(self.port, zone, timeout=0.5)

    async def wait_serial(self, zone: str, serial: int, timeout: float = 10.0) -> float:
        """Wait until the peer holds ``serial`` (or newer); the seconds it took."""
        _, took = await wait_for(
            lambda: self.serial(zone),
            lambda s: s is not None and s >= serial,
            timeout,
            what=f"{self.name} holding serial {serial} of {zone}",
        )
        return took

    async def wait_rcode(
        self, name: str, rcode: str, timeout: float = 2.0, qtype: str = "A"
    ) -> tuple[Reply, float]:
        """Wait until ``name`` gets ``rcode`` (and, for NOERROR, an address); reply and seconds."""

        def good(reply: Reply | None) -> bool:
            if reply is None or reply.rcode != rcode:
                return False
            return rcode != "NOERROR" or bool(reply.addresses())

        reply, took = await wait_for(
            lambda: self.resolve(name, qtype, timeout=0.5),
            good,
            timeout,
            what=f"{self.name} answering {rcode} for {name}",
        )
        assert reply is not None
        return reply, took


class UnboundPeer(Peer):
    """Unbound resolving through ``upstream``, with an RPZ pulled from ``primary``."""

    kind = "unbound"

    def __init__(
        self,
        work: Path,
        *,
        origin: str,
        primary: tuple[str, int],
        upstream: tuple[str, int],
        allow_notify: str = "127.0.0.0/8",
        verbosity: int = 2,
        zonefile: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(work, name)
        self.origin = origin
        self.primary = primary
        self.upstream = upstream
        self.allow_notify = allow_notify
        self.verbosity = verbosity
        # Unbound rewrites this file after every transfer, before it answers with the
        # new version: on a large zone that is most of the time an update takes.
        self.zonefile = self.dir / "rpz.zone" if zonefile else None

    def command(self) -> list[str]:
        assert UNBOUND is not None, "unbound is not installed"
        return [UNBOUND, "-d", "-c", str(self.dir / "unbound.conf")]

    def write_config(self) -> None:
        host, port = self.primary
        up_host, up_port = self.upstream
        lines = [
            "server:",
            "  num-threads: 1",
            f"  interface: {LOOPBACK}@{self.port}",
            "  do-ip6: no",
            "  access-control: 127.0.0.0/8 allow",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{self.dir}"',
            f'  logfile: "{self.logfile}"',
            '  pidfile: ""',
            "  use-syslog: no",
            "  log-time-ascii: yes",
            f"  verbosity: {self.verbosity}",
            # respip for the RPZ; no validator (nothing here is signed, no trust anchor).
            '  module-config: "respip iterator"',
            "  do-not-query-localhost: no",
            # "test." is NXDOMAIN by default (RFC 6761): let it through to the upstream.
            '  local-zone: "test." nodefault',
            "rpz:",
            f"  name: {self.origin}",
            f"  primary: {host}@{port}",
            f"  allow-notify: {self.allow_notify}",
            *([f'  zonefile: "{self.zonefile}"'] if self.zonefile else []),
            "  rpz-log: yes",
            f'  rpz-log-name: "{self.name}"',
            "  for-downstream: yes",  # so the test can ask which serial it holds
            # Everything else goes to one loopback upstream: no root priming, no internet.
            "forward-zone:",
            '  name: "."',
            f"  forward-addr: {up_host}@{up_port}",
            "remote-control:",
            "  control-enable: no",
            "",
        ]
        (self.dir / "unbound.conf").write_text("\n".join(lines), encoding="ascii")

    def blocked_log(self, name: str) -> list[str]:
        """``rpz-log`` lines (``[name] rpz: applied ...``) about ``name``."""
        needle = name.rstrip(".").lower() + "."
        return [
            line for line in self.log().splitlines() if "rpz: applied" in line and needle in line
        ]


_XFR_LINE = re.compile(r"transfer of '([^']+)' from \S+: (.*)")


def transfer_types(xfer_log: str, zone: str) -> list[tuple[str, int]]:
    """Completed incoming transfers of ``zone`` in a BIND xfer-in debug log: (type, serial).

    BIND 9.18 says at debug 3, per transfer, ``got incremental response`` (an
    IXFR answered with differences) or ``got nonincremental response`` (a full
    zone: an AXFR, or an IXFR the primary answered AXFR-style), and at info
    ``Transfer completed: ... (serial N)``.
    """
    want = zone.rstrip(".") + "/IN"
    done: list[tuple[str, int]] = []
    kind = "?"
    for line in xfer_log.splitlines():
        match = _XFR_LINE.search(line)
        if match is None or match.group(1) != want:
            continue
        what = match.group(2)
        if what.startswith("got incremental response"):
            kind = "IXFR"
        elif what.startswith("got nonincremental response"):
            kind = "AXFR"
        elif what.startswith("Transfer completed"):
            serial = re.search(r"\(serial (\d+)\)", what)
            done.append((kind, int(serial.group(1)) if serial else -1))
            kind = "?"
    return done


class BindBase(Peer):
    """What both ``named`` roles share: a config in a temporary directory, logs to a file."""

    kind = "named"

    def __init__(self, work: Path, *, tsig: Tsig | None = None, name: str | None = None) -> None:
        super().__init__(work, name)
        self.tsig = tsig

    def command(self) -> list[str]:
        assert NAMED is not None, "named is not installed (Debian: bind9)"
        # -f: foreground, logging as configured (-g would force it to stderr); -4: IPv4 only.
        return [NAMED, "-f", "-4", "-n", "1", "-c", str(self.dir / "named.conf")]

    def options(self) -> list[str]:
        return []

    def zones(self) -> list[str]:
        return []

    def write_config(self) -> None:
        (self.dir / "hints.db").write_text(
            ". 3600000 NS localhost.\nlocalhost. 3600000 A 127.0.0.1\n", encoding="ascii"
        )
        lines = [
            "options {",
            f'  directory "{self.dir}";',
            "  pid-file none;",
            f'  session-keyfile "{self.dir}/session.key";',
            f'  managed-keys-directory "{self.dir}";',
            f"  listen-on port {self.port} {{ {LOOPBACK}; }};",
            "  listen-on-v6 { none; };",
            "  dnssec-validation no;",
            "  allow-query { 127.0.0.0/8; };",
            "  notify-delay 0;",
            *(f"  {line}" for line in self.options()),
            "};",
            "controls { };",  # no rndc channel: stop with SIGTERM, reload with SIGHUP
            "logging {",
            f'  channel main {{ file "{self.logfile}"; print-time yes; print-category yes;'
            " print-severity yes; severity info; };",
            "  category default { main; };",
            # debug 3 is where named says whether it asked for and got an IXFR or an AXFR.
            f'  channel xfer {{ file "{self.dir}/xfer.log"; print-time yes; severity debug 3; }};',
            "  category xfer-in { main; xfer; };",
            "  category xfer-out { main; };",
            "  category notify { main; };",
            "  category rpz { main; };",
            "  category lame-servers { null; };",
            "};",
            # Root hints on loopback: nothing here can ever prime the real root.
            'zone "." { type hint; file "hints.db"; };',
        ]
        if self.tsig is not None:
            lines.append(self.tsig.bind_key())
        lines += self.zones()
        (self.dir / "named.conf").write_text("\n".join(lines) + "\n", encoding="ascii")

    async def answering(self) -> bool:
        # named answers (REFUSED or not) once its listeners are up and zones loaded.
        return await query(self.port, "version.bind.", "TXT", timeout=0.2) is not None

    def xfer_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "xfer.log").read_text(errors="replace")
        return ""

    def transfers(self, zone: str) -> list[tuple[str, int]]:
        """Completed incoming transfers of ``zone``, in order: ("IXFR" or "AXFR", serial)."""
        return transfer_types(self.xfer_log(), zone)


class BindPeer(BindBase):
    """``named`` as a recursive resolver with ``response-policy`` over a secondary RPZ zone."""

    def __init__(
        self,
        work: Path,
        *,
        origin: str,
        primary: tuple[str, int],
        upstream: tuple[str, int],
        tsig: Tsig | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(work, tsig=tsig, name=name)
        self.origin = origin
        self.primary = primary
        self.upstream = upstream

    def options(self) -> list[str]:
        up_host, up_port = self.upstream
        return [
            "recursion yes;",
            "allow-recursion { 127.0.0.0/8; };",
            # Every name it does not hold goes to the one loopback upstream.
            f"forwarders {{ {up_host} port {up_port}; }};",
            "forward only;",
            "notify no;",
            # Apply each new zone version at once (the default waits up to 5 s between two).
            f'response-policy {{ zone "{self.origin}" min-update-interval 0; }}'
            " qname-wait-recurse no;",
        ]

    def zones(self) -> list[str]:
        host, port = self.primary
        key = f" key {self.tsig.name}" if self.tsig is not None else ""
        return [
            f'zone "{self.origin}" {{',
            "  type secondary;",
            f"  primaries port {port} {{ {host}{key}; }};",
            '  file "rpz.db";',
            "  masterfile-format text;",
            "  allow-notify { 127.0.0.0/8; };",
            "};",
        ]


class BindPrimary(BindBase):
    """``named`` serving a static RPZ zone file: a stand-in for kzgate's primary.

    :meth:`publish` rewrites the zone file and reloads it (SIGHUP); with
    ``ixfr-from-differences`` named keeps a journal, so secondaries get IXFRs,
    and with ``notify explicit`` it NOTIFYs ``notify`` at once.
    """

    def __init__(
        self,
        work: Path,
        *,
        origin: str,
        notify: Sequence[tuple[str, int]] = (),
        allow_transfer: Sequence[str] = ("127.0.0.1/32",),
        tsig: Tsig | None = None,
        tsig_required: bool = False,
        name: str = "primary",
    ) -> None:
        super().__init__(work, tsig=tsig, name=name)
        self.origin = origin
        self.notify = list(notify)
        self.allow_transfer = list(allow_transfer)
        self.tsig_required = tsig_required
        self.published = 1
        self.blocked: list[str] = []
        self.zonefile = self.dir / "rpz.zone"
        self.zonefile.write_text(rpz_zone_text(origin, self.published, []), encoding="ascii")

    def options(self) -> list[str]:
        return ["recursion no;"]

    def zones(self) -> list[str]:
        acl = " ".join(f"{a};" for a in self.allow_transfer)
        if self.tsig is not None:
            # Signed transfers from the listed addresses; unsigned ones too unless required.
            signed = f"key {self.tsig.name};"
            acl = f"!{{ !{{ {acl} }}; any; }}; {signed}" + ("" if self.tsig_required else f" {acl}")
        also = " ".join(f"{h} port {p};" for h, p in self.notify)
        return [
            f'zone "{self.origin}" {{',
            "  type primary;",
            '  file "rpz.zone";',
            "  ixfr-from-differences yes;",
            "  max-ixfr-ratio unlimited;",  # tiny zones: an IXFR even when it is not smaller
            f"  allow-transfer {{ {acl} }};",
            "  notify explicit;",
            f"  also-notify {{ {also} }};" if also else "",
            "};",
        ]

    async def publish(self, blocked: Iterable[str]) -> int:
        """Serve ``blocked`` as the new zone under the next serial; return that serial."""
        self.blocked = list(blocked)
        self.published += 1
        tmp = self.zonefile.with_suffix(".tmp")
        tmp.write_text(rpz_zone_text(self.origin, self.published, self.blocked), encoding="ascii")
        os.replace(tmp, self.zonefile)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        await wait_for(
            lambda: soa_serial(self.port, self.origin, timeout=0.5),
            lambda s: s == self.published,
            10.0,
            what=f"primary serving serial {self.published}",
        )
        return self.published

    async def answering(self) -> bool:
        return await soa_serial(self.port, self.origin, timeout=0.2) is not None


async def stop_all(peers: Iterable[Peer]) -> None:
    """Stop every peer, even when one of them fails to stop."""
    results = await asyncio.gather(*(p.stop() for p in peers), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
