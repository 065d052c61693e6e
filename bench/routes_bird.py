"""Routes end to end: kzgate's table → BIRD (configs/bird-rtbh.conf) → BGP → the border router.

Runs the topology of tests/support/birdnet.py (kzgate host, border router, both
BIRDs on the shipped configs, in namespaces made and deleted here) and measures:

1. latency of 100 single restricts: from the receipt to the moment the router's
   BIRD installs the blackhole into the router's kernel. "Holds" is detected by a
   netlink monitor socket in the router's namespace (RTMGRP_IPV4/IPV6_ROUTE,
   RTM_NEWROUTE with rtm_protocol 12 = bird, matching dst), timestamped by a
   thread blocked in recv: resolution well under a millisecond (one thread
   wake-up), far finer than polling birdc (each call ~5-10 ms).
2. a 200,000-prefix restrict (IPv4 /32s): seconds until the router's session
   imported all of them (``birdc show protocols all``, polled every 50 ms), and
   the withdrawal of all of them; counting "Kernel dropped some netlink messages"
   in the host BIRD's log. Run twice: BIRD's default ``netlink rx buffer``
   (the two lines deleted from the config) and the shipped 128 MiB.

``--writer standin`` (the default until the routes enforcer is merged) writes
the routes itself with raw netlink in the kzgate host's namespace, as kzgate
does (RTM_NEWROUTE blackhole, table 666 in RTA_TABLE, protocol 252, batches of
~256 KiB per sendmsg); "receipt" is then the kernel's ack of the route.
``--writer kzgate`` runs the daemon in process with ``routes.netns`` = the host
namespace and posts signed tasks; "receipt" is the API's answer (a 200,000
restrict is two tasks of 100,000, the task limit).

    .venv/bin/python bench/routes_bird.py [--writer standin|kzgate] [--count 200000]

Needs root. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from tests.support import birdnet  # noqa: E402

NETLINK_ROUTE, SOL_NETLINK, NETLINK_CAP_ACK, SO_RCVBUFFORCE = 0, 270, 10, 33
RTM_NEWROUTE, NLMSG_ERROR = 24, 2
F_REQUEST, F_ACK, F_REPLACE, F_CREATE = 1, 4, 0x100, 0x400
RTA_DST, RTA_TABLE, RTN_BLACKHOLE, RTPROT_BIRD = 1, 15, 6, 12
RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x40, 0x400
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(ns: str, groups: int = 0, rcvbuf: int = 8 << 20) -> socket.socket:
    """A NETLINK_ROUTE socket opened in namespace ``ns`` (a socket keeps its namespace)."""
    mine = os.open("/proc/self/ns/net", os.O_RDONLY)
    theirs = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(theirs, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    finally:
        _libc.setns(mine, CLONE_NEWNET)
        os.close(theirs)
        os.close(mine)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.bind((0, groups))
    return sock


def _rta(kind: int, payload: bytes) -> bytes:
    return struct.pack("HH", 4 + len(payload), kind) + payload  # 4 or 16 bytes: aligned


def add_message(net: ipaddress.IPv4Network | ipaddress.IPv6Network, seq: int, ack: bool) -> bytes:
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    body = struct.pack(
        "BBBBBBBBI", family, net.prefixlen, 0, 0, 0, birdnet.PROTO, 0, RTN_BLACKHOLE, 0
    )
    body += _rta(RTA_DST, net.network_address.packed) + _rta(RTA_TABLE, struct.pack("I", 666))
    flags = F_REQUEST | F_CREATE | F_REPLACE | (F_ACK if ack else 0)
    return struct.pack("IHHII", 16 + len(body), RTM_NEWROUTE, flags, seq, 0) + body


def _messages(buf: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + 16 <= len(buf):
        length, kind = struct.unpack_from("IH", buf, off)
        if length < 16:
            return
        yield kind, buf[off + 16 : off + length]
        off += (length + 3) & ~3


class RouterMonitor:
    """Timestamps of RTM_NEWROUTE proto bird in the router's kernel, by prefix (a thread)."""

    def __init__(self, ns: str) -> None:
        self.sock = socket_in(ns, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE, rcvbuf=64 << 20)
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = self.sock.recv(1 << 20)
                now = time.monotonic()
                for kind, body in _messages(data):
                    if kind != RTM_NEWROUTE or body[5] != RTPROT_BIRD:
                        continue
                    family, dst_len = body[0], body[1]
                    off, dst = 12, b""
                    while off + 4 <= len(body):
                        length, attr = struct.unpack_from("HH", body, off)
                        if length < 4:
                            break
                        if attr == RTA_DST:
                            dst = body[off + 4 : off + length]
                        off += (length + 3) & ~3
                    if family in (socket.AF_INET, socket.AF_INET6) and dst:
                        prefix = str(ipaddress.ip_network((dst, dst_len)))
                        with self.cond:
                            self.seen.setdefault(prefix, now)
                            self.cond.notify_all()

    def wait(self, prefix: str, timeout: float = 10.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: prefix in self.seen, timeout):
                raise TimeoutError(f"the router never installed {prefix}")
            return self.seen[prefix]

    def close(self) -> None:
        self.sock.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(pick(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def targets(count: int, version: int, base: str) -> list[Any]:
    start = int(ipaddress.ip_address(base))
    length = 32 if version == 4 else 128
    return [ipaddress.ip_network((start + i, length)) for i in range(count)]


# -- the stand-in writer ------------------------------------------------------


class StandIn:
    """Writes routes the way kzgate does, with raw netlink in the kzgate host's namespace."""

    def __init__(self, net: birdnet.BirdNet) -> None:
        self.net = net
        self.sock = socket_in(net.host)
        self.seq = 0

    def restrict_one(self, prefix: Any) -> float:
        """Add one route, wait for the kernel's ack; the ack's time (the "receipt")."""
        self.seq += 1
        self.sock.send(add_message(prefix, self.seq, ack=True))
        for kind, body in _messages(self.sock.recv(65536)):
            if kind == NLMSG_ERROR and struct.unpack_from("i", body)[0] != 0:
                raise OSError(-struct.unpack_from("i", body)[0], f"add {prefix}")
        return time.monotonic()

    def restrict_many(self, prefixes: list[Any]) -> None:
        chunk: list[bytes] = []
        size = 0
        for prefix in prefixes:
            self.seq += 1
            chunk.append(add_message(prefix, self.seq, ack=False))
            size += len(chunk[-1])
            if size >= 256 * 1024:
                self.sock.send(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            self.sock.send(b"".join(chunk))

    def resume_all(self) -> None:
        self.net.flush()  # ip route flush: the kernel's own bulk delete


# -- measures -----------------------------------------------------------------


def latency(net: birdnet.BirdNet, restrict_one: Callable[[Any], float], rounds: int) -> Any:
    monitor = RouterMonitor(net.router)
    try:
        after_receipt, after_send = [], []
        prefixes = targets(rounds // 2, 4, "10.70.0.1") + targets(
            rounds - rounds // 2, 6, "fd70::1"
        )
        for prefix in prefixes:
            sent = time.monotonic()
            receipt = restrict_one(prefix)
            held = monitor.wait(str(prefix))
            after_receipt.append(held - receipt)
            after_send.append(held - sent)
        return {
            "receipt_to_router_kernel": percentiles(after_receipt),
            "send_to_router_kernel": percentiles(after_send),
            "negative_receipt_deltas": sum(1 for d in after_receipt if d < 0),
        }
    finally:
        monitor.close()


def burst(
    net: birdnet.BirdNet,
    restrict_many: Callable[[list[Any]], None],
    resume_all: Callable[[], None],
    count: int,
) -> dict[str, Any]:
    prefixes = targets(count, 4, "10.128.0.0")
    base = net.router_bird.imported(birdnet.BGP_ON_ROUTER)  # left by the latency rounds
    dropped = net.host_bird.dropped()
    started = time.monotonic()
    restrict_many(prefixes)
    written = time.monotonic() - started
    held = net.wait_imported(base + count, timeout=120) + written
    add_drops = net.host_bird.dropped() - dropped
    started = time.monotonic()
    resume_all()
    deleted = time.monotonic() - started
    gone = net.wait_imported(base, timeout=120) + deleted
    return {
        "count": count,
        "add_written_s": round(written, 2),
        "add_router_holds_all_s": round(held, 2),
        "add_kernel_dropped_lines": add_drops,
        "delete_written_s": round(deleted, 2),
        "delete_router_empty_s": round(gone, 2),
        "delete_kernel_dropped_lines": net.host_bird.dropped() - dropped - add_drops,
    }


def without_rx_buffer(text: str) -> str:
    """The host config with BIRD's default netlink receive buffer (the option deleted)."""
    edited, hits = re.subn(r"^\s*netlink rx buffer \d+;.*$", "", text, flags=re.M)
    if hits != 2:
        raise AssertionError(f"expected two `netlink rx buffer` lines, found {hits}")
    return edited


def run_standin(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"writer": "standin (raw netlink, the kernel's ack as receipt)"}
    for label, edit in (("default_rx_buffer", without_rx_buffer), ("shipped_128MiB", None)):
        with tempfile.TemporaryDirectory() as tmp, birdnet.birdnet(Path(tmp), edit) as net:
            writer = StandIn(net)
            if edit is None:
                out["latency"] = latency(net, writer.restrict_one, args.rounds)
                net.flush()
                net.wait_imported(0, timeout=30)
            out[label] = burst(net, writer.restrict_many, writer.resume_all, args.count)
    return out


def run_kzgate(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon in process (needs kzgate/enforce/routes, issue 13's routes enforcer)."""
    return asyncio.run(_kzgate(args))


async def _kzgate(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"writer": "kzgate (in process; the API's receipt)"}
    for label, edit in (("default_rx_buffer", without_rx_buffer), ("shipped_128MiB", None)):
        with tempfile.TemporaryDirectory() as tmp, birdnet.birdnet(Path(tmp), edit) as net:
            out.update(await _kzgate_once(args, net, Path(tmp), label, with_latency=edit is None))
    return out


async def _kzgate_once(
    args: argparse.Namespace, net: birdnet.BirdNet, tmp: Path, label: str, with_latency: bool
) -> dict[str, Any]:
    from kzgate.config import load_config
    from kzgate.daemon import Daemon
    from kzgate.devpki import ensure_dev_material
    from tests.integration.daemon.test_nft import Client, session
    from tests.support.kzfixtures import Regulator, write_config

    out: dict[str, Any] = {}
    pki = tmp / "pki"
    ensure_dev_material(pki)
    routes = {"enabled": True, "table": 666, "type": "blackhole", "protocol": 252}
    daemon = Daemon(load_config(write_config(tmp, pki, routes={**routes, "netns": net.host})))
    await daemon.start()
    mci = Regulator(pki)
    loop = asyncio.get_running_loop()
    numbers = iter(range(1, 1 << 30))
    try:
        async with session(pki) as made:
            client = Client(made, daemon.bound["api"][1], daemon.bound["metrics"][1])

            async def post(task: dict[str, Any]) -> float:
                status, receipt = await client.post(mci.sign(task))
                if (status, receipt.get("status")) != (200, "applied"):
                    raise AssertionError(f"not applied: {status} {receipt}")
                return time.monotonic()

            def post_from_thread(task: dict[str, Any]) -> float:
                return asyncio.run_coroutine_threadsafe(post(task), loop).result()

            def restrict_one(prefix: Any) -> float:
                return post_from_thread(
                    mci.restrict(f"b{next(numbers)}", f"ip:{prefix.network_address}")
                )

            def restrict_many(prefixes: list[Any]) -> None:
                for start in range(0, len(prefixes), 100_000):
                    part = prefixes[start : start + 100_000]
                    post_from_thread(
                        mci.restrict(f"big{start}", *(f"ip:{p.network_address}" for p in part))
                    )

            def resume_all() -> None:
                for start in range(0, args.count, 100_000):
                    post_from_thread(mci.resume(f"big{start}"))

            if with_latency:
                out["latency"] = await asyncio.to_thread(latency, net, restrict_one, args.rounds)
            out[label] = await asyncio.to_thread(burst, net, restrict_many, resume_all, args.count)
    finally:
        await daemon.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writer", choices=["standin", "kzgate"], default="standin")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    result = run_standin(args) if args.writer == "standin" else run_kzgate(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
