"""The pure-Python UDP path of DnsServer (``fast=None``): server CPU per query over loopback.

Workload model: a DNS worker that fell back to pure Python (dns.crash_limit),
or one without a C compiler, answering subscribers. dnsperf sends at a fixed
rate (open loop, ``-Q``) for ``--seconds``: half the queries are for
restricted names (the engine answers at once), half (none with
``--blocked-only``) for allowed names that are forwarded to an upstream: a
do-nothing reflector in its own process that echoes the query as an empty
NOERROR answer. The server runs in this process on uvloop (a worker without
the C module), or with ``--asyncio`` on asyncio's loop (a worker moved to
Python after crashes). The figure is this process's CPU time (user + system)
over the pass divided by the answers dnsperf got, which other load on a shared
machine moves less than a rate or a latency. Each round runs one pass; the
median over rounds is reported.

    .venv/bin/python bench/udp_python.py [--rate 8000] [--seconds 5] [--rounds 5]
        [--blocked-only] [--asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from kzgate.config import HostPort
from kzgate.dns.engine import Engine
from kzgate.dns.server import DnsServer
from kzgate.dns.types import BlockSettings
from kzgate.dns.upstream import Upstreams
from kzgate.loop import new_event_loop
from kzgate.model import InstructionRef
from kzgate.policy import PolicyIndex

NAMES = 10_000

# The upstream: echo each query back as a reply (QR set, NOERROR, no records).
REFLECTOR = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    q, addr = s.recvfrom(4096)
    s.sendto(q[:2] + bytes([q[2] | 0x80, q[3] & 0xF0]) + q[4:], addr)
"""


def query_file(path: str, forwards: bool) -> None:
    with open(path, "w") as f:
        for i in range(NAMES):
            f.write(f"b{i}.blocked.kz A\n")
            if forwards:
                f.write(f"w{i}.allowed.test A\n")


async def one_pass(args: argparse.Namespace, port: int, queries: str) -> dict[str, float]:
    cpu0 = time.process_time()
    proc = await asyncio.create_subprocess_exec(
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries,
        "-l", str(args.seconds), "-Q", str(args.rate), "-q", "500", "-t", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    cpu = time.process_time() - cpu0
    done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return {"cpu_us_per_query": cpu / max(done, 1) * 1e6, "completed": done, "lost": lost}


async def main(args: argparse.Namespace) -> None:
    reflector = subprocess.Popen(
        [sys.executable, "-c", REFLECTOR], stdout=subprocess.PIPE, text=True
    )
    assert reflector.stdout is not None
    upstream_port = int(reflector.stdout.readline())
    index = PolicyIndex()
    index.set_domain("blocked.kz", InstructionRef("mci", "1", "2026-11-01"))
    engine = Engine(index, BlockSettings())
    upstreams = Upstreams([("127.0.0.1", upstream_port)], timeout=2.0)
    await upstreams.start()
    server = DnsServer(engine, upstreams, [HostPort("127.0.0.1", 0)], fast=None)
    ((_, port),) = await server.start()
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            queries = f.name
        query_file(queries, not args.blocked_only)
        await one_pass(argparse.Namespace(seconds=1, rate=args.rate), port, queries)  # warm-up
        rounds = [await one_pass(args, port, queries) for _ in range(args.rounds)]
        print(json.dumps({"rounds": rounds}))
        cpu = statistics.median(r["cpu_us_per_query"] for r in rounds)
        print(f"median server CPU per query: {cpu:.2f} us "
              f"(lost {sum(r['lost'] for r in rounds)} of "
              f"{sum(r['completed'] + r['lost'] for r in rounds)})")  # fmt: skip
        os.unlink(queries)
    finally:
        await server.close()
        await upstreams.close()
        reflector.kill()
        reflector.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=8000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blocked-only", action="store_true", help="no forwarded queries")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's loop, not uvloop")
    ns = parser.parse_args()
    loop = new_event_loop(prefer_uvloop=not ns.asyncio)
    try:
        loop.run_until_complete(main(ns))
    finally:
        loop.close()
