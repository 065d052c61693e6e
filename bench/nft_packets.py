"""nftables per-packet cost: packets/s through the forward hook for each rule layout, same run.

Topology (namespaces made here, ``kzg-pkt-<pid>-{snd,rtr,sink}``, deleted at the
end, also on error, Ctrl-C or SIGTERM)::

    snd --veth--> rtr (forwarding; our tables, forward hook) --veth--> sink

``sink`` forwards into blackhole routes, which drop silently (no ICMP back).
The sender is a small C program (compiled here with clang) that sends 18-byte
UDP payloads with sendmmsg, 64 per call, round-robin over ``--destinations``
addresses of one traffic class, for ``--seconds``. veth delivers into the
peer's backlog and the softirq runs when the sender's send re-enables bottom
halves, so the whole path (snd's UDP stack, rtr's routing and forward hook,
sink's receive) runs on the sender's CPU: packets/s is 1 / (CPU time per
packet), and a layout's rules show up as added nanoseconds per packet. On a
shared machine the sender gets a varying share of its CPU, so ``pps`` is per
second of the sender's CPU time (which holds the softirq work done in its
context); ``wall_pps`` is per second of wall clock, and ``ksoftirqd_share``
says how much softirq work ran elsewhere (not counted). One sender on one CPU.

Workload: ``--elements`` targets (default 1,000,000) from bench/nft.py's
``make_prefixes``: 90% IPv4 (/32 hosts, every 16th a /24), 10% IPv6 /48s,
loaded without comments by raw netlink batches (kzgate's BatchBuilder; hash
elements are one key each). All sets are loaded once, before any measurement:

- ``inet kzb_old``: today's layout, ``blocked_v4`` / ``blocked_v6`` interval
  sets holding every target;
- ``inet kzb_new``: the new layout, hosts in hash sets ``blocked_hosts_v4`` /
  ``blocked_hosts_v6`` (no flags), proper prefixes in interval sets
  ``blocked_v4`` / ``blocked_v6``;
- ``inet kzb_sized`` (unless ``--no-sized``): as kzb_new with the hash sets
  declared ``size`` (the kernel then picks its fixed-size hash backend, for
  4-byte keys "hash_fast", instead of the resizable rhashtable).

A layout is only its chains: switching layouts rewrites chains with ``nft -f``
(one transaction) and never touches the sets. Layouts: ``floor`` (no chain,
no hook), ``empty`` (the base chain, no rules), ``today`` (2 rules), ``split``
(4 rules, hash before interval), ``dispatch`` (``meta nfproto vmap`` to a
per-family chain holding that family's two rules), ``split_sized``.

Traffic classes: ``miss4`` (x.y.z.8 in the /24 of a listed host x.y.z.7: a miss
that lands between elements), ``miss6`` (addresses in 2a00:2::/32, past the
listed /48s), ``hit4_host`` (listed /32s), ``hit4_prefix`` (random addresses
inside listed /24s). Hits are measured for layouts with rules only (the floor
forwards them); their count is the rules' drop counters.

Rounds: every round visits every layout (order rotated per round) and every
class; medians and min-max over ``--rounds``. Prints JSON (the repository's
benches keep no results directory). Needs root and clang. About 2 minutes.

    .venv/bin/python bench/nft_packets.py [--elements 1000000] [--rounds 5] [--seconds 1.0]
    .venv/bin/python bench/nft_packets.py --quick   # 100k targets, short runs, < 30 s
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nft import make_prefixes, refs

from kzgate.enforce.netns import run_in_netns
from kzgate.enforce.nft.decode import rule_counters
from kzgate.enforce.nft.encode import INTERVALS, BatchBuilder, element, getrule_dump
from kzgate.enforce.nft.netlink import Netlink, open_socket
from kzgate.names import IPNetwork

SENDER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* sender FAMILY(4|6) SECONDS FILE: UDP to the raw addresses in FILE, round-robin,
   64 per sendmmsg, for SECONDS; prints "sent failed elapsed_ns cpu_ns" (cpu: this
   process's user + system time, which holds the softirq work done in its context). */
#define BATCH 64
static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: sender 4|6 SECONDS FILE\n"); return 2; }
    int v6 = atoi(argv[1]) == 6;
    double seconds = atof(argv[2]);
    FILE *f = fopen(argv[3], "rb");
    if (!f) { perror("open"); return 2; }
    size_t alen = v6 ? 16 : 4, cap = 1 << 20, n = 0;
    unsigned char *raw = malloc(cap * alen);
    n = fread(raw, alen, cap, f);
    fclose(f);
    n -= n % BATCH;
    if (n == 0) { fprintf(stderr, "need at least %d addresses\n", BATCH); return 2; }
    struct sockaddr_in6 *a6 = calloc(n, sizeof *a6);
    struct sockaddr_in *a4 = calloc(n, sizeof *a4);
    struct mmsghdr *msgs = calloc(n, sizeof *msgs);
    static char payload[18] = "kzgate-nft-packets";
    struct iovec iov = { payload, sizeof payload };
    for (size_t i = 0; i < n; i++) {
        if (v6) {
            a6[i].sin6_family = AF_INET6;
            a6[i].sin6_port = htons(9);
            memcpy(&a6[i].sin6_addr, raw + i * alen, 16);
            msgs[i].msg_hdr.msg_name = &a6[i];
            msgs[i].msg_hdr.msg_namelen = sizeof a6[i];
        } else {
            a4[i].sin_family = AF_INET;
            a4[i].sin_port = htons(9);
            memcpy(&a4[i].sin_addr, raw + i * alen, 4);
            msgs[i].msg_hdr.msg_name = &a4[i];
            msgs[i].msg_hdr.msg_namelen = sizeof a4[i];
        }
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 2; }
    unsigned long long sent = 0, failed = 0;
    size_t pos = 0;
    double cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    double start = now(), end = start + seconds, t = start;
    while (t < end) {
        int r = sendmmsg(fd, msgs + pos, BATCH, 0);
        if (r < 0) {
            if (errno != ENOBUFS && errno != EAGAIN && errno != ENETUNREACH) {
                perror("sendmmsg");
                return 1;
            }
            failed++;
        } else {
            sent += r;
        }
        pos = (pos + BATCH) % n;
        t = now();
    }
    double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    printf("%llu %llu %.0f %.0f\n", sent, failed, (t - start) * 1e9, cpu * 1e9);
    return 0;
}
"""

HOOK_PRIORITY = -10  # as kzgate/enforce/nft/skeleton.py
SIZED_CAPACITY = 2_097_152  # the declared size of kzb_sized's hash sets
SND_MAC, RTR_IN_MAC, RTR_OUT_MAC, SINK_MAC = (f"02:77:01:00:00:0{i}" for i in range(1, 5))


# --- the sets ----------------------------------------------------------------------


class HostKeys:
    """Hash-set elements: one key per host address (what the new layout's host sets hold)."""

    interval = False

    def added(self, items: Iterable[tuple[IPNetwork, str]]) -> Iterator[bytes]:
        # the key is an element's last bytes (4 or 16: no padding): reuse the head
        heads = {w: element(bytes(w))[:-w] for w in (4, 16)}
        return (heads[n.max_prefixlen >> 3] + n.network_address.packed for n, _ in items)

    def removed(self, nets: Iterable[IPNetwork]) -> Iterator[bytes]:
        return (element(n.network_address.packed) for n in nets)


HOSTS = HostKeys()


def is_host(net: IPNetwork) -> bool:
    return net.prefixlen == net.max_prefixlen


def set_declarations(table: str, *, sized: bool) -> str:
    t = f"inet {table}"
    if table == "kzb_old":
        return (
            f"add table {t}\n"
            f"add set {t} blocked_v4 {{ type ipv4_addr; flags interval; }}\n"
            f"add set {t} blocked_v6 {{ type ipv6_addr; flags interval; }}\n"
        )
    size = f" size {SIZED_CAPACITY};" if sized else ""
    return (
        f"add table {t}\n"
        f"add set {t} blocked_hosts_v4 {{ type ipv4_addr;{size} }}\n"
        f"add set {t} blocked_hosts_v6 {{ type ipv6_addr;{size} }}\n"
        f"add set {t} blocked_v4 {{ type ipv4_addr; flags interval; }}\n"
        f"add set {t} blocked_v6 {{ type ipv6_addr; flags interval; }}\n"
    )


def load_table(sock: Netlink, table: str, prefixes: list[IPNetwork]) -> dict[str, Any]:
    """Fill one table's sets, one batch per set: (elements, seconds) per set."""
    by_set: dict[str, tuple[list[IPNetwork], Any]] = {}
    for net in prefixes:
        if table == "kzb_old":
            name, keys = f"blocked_v{net.version}", INTERVALS
        elif is_host(net):
            name, keys = f"blocked_hosts_v{net.version}", HOSTS
        else:
            name, keys = f"blocked_v{net.version}", INTERVALS
        by_set.setdefault(name, ([], keys))[0].append(net)
    out: dict[str, Any] = {}
    for name, (nets, keys) in by_set.items():
        builder = BatchBuilder(table, sock.seq + 1)
        builder.add(name, ((n, "") for n in nets), keys)
        started = time.perf_counter()
        sock.transact(builder)
        out[name] = {"prefixes": len(nets), "s": round(time.perf_counter() - started, 2)}
    return out


# --- rule layouts ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Chains in one table; the first chain is the base chain on the forward hook."""

    name: str
    table: str | None  # None: no chain at all (the floor)
    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def setup(self) -> str:
        if self.table is None:
            return ""
        t = f"inet {self.table}"
        lines = []
        for i, (chain, _) in enumerate(self.chains):
            hook = (
                f" {{ type filter hook forward priority {HOOK_PRIORITY}; policy accept; }}"
                if i == 0
                else ""
            )
            lines.append(f"add chain {t} {chain}{hook}")
        # rules after every chain exists (a vmap may jump to a later chain)
        for chain, rules in self.chains:
            lines += [f"add rule {t} {chain} {rule}" for rule in rules]
        return "\n".join(lines) + "\n"

    def teardown(self) -> str:
        if self.table is None:
            return ""
        t = f"inet {self.table}"
        flush = [f"flush chain {t} {chain}" for chain, _ in self.chains]
        return "\n".join([*flush, *(f"delete chain {t} {c}" for c, _ in self.chains)]) + "\n"

    def rules(self) -> dict[str, list[str]]:
        return {chain: list(rules) for chain, rules in self.chains}


SPLIT_V4 = ("ip daddr @blocked_hosts_v4 counter drop", "ip daddr @blocked_v4 counter drop")
SPLIT_V6 = ("ip6 daddr @blocked_hosts_v6 counter drop", "ip6 daddr @blocked_v6 counter drop")
DISPATCH = "meta nfproto vmap { ipv4 : jump v4, ipv6 : jump v6 }"


def layouts(*, sized: bool) -> list[Layout]:
    out = [
        Layout("floor", None),
        Layout("empty", "kzb_new", (("forward", ()),)),
        Layout(
            "today",
            "kzb_old",
            (
                (
                    "forward",
                    ("ip daddr @blocked_v4 counter drop", "ip6 daddr @blocked_v6 counter drop"),
                ),
            ),
        ),
        Layout("split", "kzb_new", (("forward", SPLIT_V4 + SPLIT_V6),)),
        Layout(
            "dispatch", "kzb_new", (("forward", (DISPATCH,)), ("v4", SPLIT_V4), ("v6", SPLIT_V6))
        ),
    ]
    if sized:
        out.append(Layout("split_sized", "kzb_sized", (("forward", SPLIT_V4 + SPLIT_V6),)))
    return out


# --- namespaces --------------------------------------------------------------------


def sh(*argv: str, ns: str | None = None, stdin: str | None = None, timeout: float = 60) -> str:
    cmd = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def nft(ns: str, script: str) -> None:
    if script:
        sh("nft", "-f", "-", ns=ns, stdin=script)


@dataclass(frozen=True, slots=True)
class Topology:
    snd: str
    rtr: str
    sink: str

    @classmethod
    def named(cls, pid: int) -> Topology:
        return cls(f"kzg-pkt-{pid}-snd", f"kzg-pkt-{pid}-rtr", f"kzg-pkt-{pid}-sink")

    def names(self) -> tuple[str, str, str]:
        return self.snd, self.rtr, self.sink

    def create(self) -> None:
        for ns in self.names():
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        s, r, k = self.names()
        # links are made inside one namespace, the peer end moved straight into the other
        sh(
            "ip",
            "link",
            "add",
            "s0",
            "address",
            SND_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "r0",
            "address",
            RTR_IN_MAC,
            "netns",
            r,
            ns=s,
        )
        sh(
            "ip",
            "link",
            "add",
            "r1",
            "address",
            RTR_OUT_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "k0",
            "address",
            SINK_MAC,
            "netns",
            k,
            ns=r,
        )
        for ns, dev, v4, v6 in (
            (s, "s0", "10.250.0.1/30", "fd00:250::1/64"),
            (r, "r0", "10.250.0.2/30", "fd00:250::2/64"),
            (r, "r1", "10.250.1.1/30", "fd00:251::1/64"),
            (k, "k0", "10.250.1.2/30", "fd00:251::2/64"),
        ):
            sh("ip", "addr", "add", v4, "dev", dev, ns=ns)
            sh("ip", "-6", "addr", "add", v6, "dev", dev, "nodad", ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        for ns in (r, k):
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", ns=ns)
        # static neighbours: no ARP/ND during a run
        for addr, mac, dev, ns in (
            ("10.250.0.2", RTR_IN_MAC, "s0", s),
            ("fd00:250::2", RTR_IN_MAC, "s0", s),
            ("10.250.1.2", SINK_MAC, "r1", r),
            ("fd00:251::2", SINK_MAC, "r1", r),
        ):
            sh("ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent", ns=ns)
        sh("ip", "route", "add", "default", "via", "10.250.0.2", ns=s)
        sh("ip", "-6", "route", "add", "default", "via", "fd00:250::2", ns=s)
        sh("ip", "route", "add", "default", "via", "10.250.1.2", ns=r)
        sh("ip", "-6", "route", "add", "default", "via", "fd00:251::2", ns=r)
        # the sink forwards into a blackhole: dropped without an ICMP error
        sh("ip", "route", "add", "blackhole", "default", ns=k)
        sh("ip", "-6", "route", "add", "blackhole", "default", ns=k)

    def delete(self) -> None:
        for ns in self.names():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)


def tx_packets(ns: str, dev: str) -> int:
    return int(
        json.loads(sh("ip", "-s", "-j", "link", "show", "dev", dev, ns=ns))[0]["stats64"]["tx"][
            "packets"
        ]
    )


def ksoftirqd_seconds() -> float:
    """CPU time of every ksoftirqd thread: softirq work not done in the sender's context."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if "(ksoftirqd/" in stat:
                fields = stat.rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def drops(query: Netlink, layout: Layout) -> int:
    """The layout's rule counters, summed (by a rule dump: ``nft list`` reads whole sets)."""
    if layout.table is None:
        return 0
    query.seq += 1
    found = (rule_counters(m) for m in query.dump(getrule_dump(layout.table, query.seq)))
    return sum(f[2] for f in found if f is not None)


# --- traffic -----------------------------------------------------------------------


def destinations(
    prefixes: list[IPNetwork], count: int, rng: random.Random
) -> dict[str, list[bytes]]:
    """Raw destination addresses per traffic class, checked against the workload."""
    hosts = [n for n in prefixes if n.version == 4 and is_host(n)]
    nets = [n for n in prefixes if n.version == 4 and not is_host(n)]
    listed4 = set(prefixes)
    picked_hosts = rng.sample(hosts, min(count, len(hosts)))
    miss4 = [ipaddress.IPv4Address(int(h.network_address) + 1) for h in picked_hosts]
    for a in miss4:  # neither a listed host nor inside a listed /24
        assert ipaddress.IPv4Network((a, 32)) not in listed4
        assert ipaddress.IPv4Network((int(a) & ~0xFF, 24)) not in listed4
    inside = [
        ipaddress.IPv4Address(int(n.network_address) + rng.randrange(256))
        for n in (rng.choice(nets) for _ in range(count))
    ]
    top6 = max((n for n in prefixes if n.version == 6), default=None)
    base6 = int(ipaddress.IPv6Address("2a00:2::"))
    miss6 = [ipaddress.IPv6Address(base6 + rng.getrandbits(96)) for _ in range(count)]
    assert top6 is None or int(top6.broadcast_address) < base6
    return {
        "miss4": [a.packed for a in miss4],
        "miss6": [a.packed for a in miss6],
        "hit4_host": [h.network_address.packed for h in picked_hosts],
        "hit4_prefix": [a.packed for a in inside],
    }


CLASSES = ("miss4", "miss6", "hit4_host", "hit4_prefix")


def compile_sender(workdir: Path) -> Path:
    cc = shutil.which("clang") or shutil.which("clang-14") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (clang) found")
    src, exe = workdir / "sender.c", workdir / "sender"
    src.write_text(SENDER_C)
    sh(cc, "-O2", "-Wall", "-o", str(exe), str(src))
    return exe


def send(
    topo: Topology, exe: Path, family: int, seconds: float, dst_file: Path
) -> tuple[int, int, float, float]:
    """(sent, failed sendmmsg calls, wall seconds, sender CPU seconds)."""
    out = sh(str(exe), str(family), str(seconds), str(dst_file), ns=topo.snd, timeout=seconds + 30)
    sent, failed, elapsed_ns, cpu_ns = out.split()
    return int(sent), int(failed), float(elapsed_ns) / 1e9, float(cpu_ns) / 1e9


def measure(
    topo: Topology,
    query: Netlink,
    exe: Path,
    layout: Layout,
    cls: str,
    dst_file: Path,
    seconds: float,
) -> dict[str, float]:
    family = 6 if cls.endswith("6") else 4
    out_before, drop_before = tx_packets(topo.rtr, "r1"), drops(query, layout)
    soft_before = ksoftirqd_seconds()
    sent, failed, elapsed, cpu = send(topo, exe, family, seconds, dst_file)
    deferred = ksoftirqd_seconds() - soft_before
    forwarded = tx_packets(topo.rtr, "r1") - out_before
    dropped = drops(query, layout) - drop_before
    through = dropped if cls.startswith("hit") else forwarded
    return {
        "pps": through / cpu,
        "wall_pps": through / elapsed,
        "cpu_share": cpu / elapsed,
        "ksoftirqd_share": deferred / cpu,
        "sent": sent,
        "forwarded": forwarded,
        "dropped_by_rules": dropped,
        "lost": sent - forwarded - dropped,
        "send_errors": failed,
    }


# --- the run -----------------------------------------------------------------------


Samples = dict[tuple[str, str], list[dict[str, float]]]


def summarise(samples: Samples, names: list[str]) -> dict[str, Any]:
    """Per class and layout: medians, spread, and ns/packet against the floor and today."""
    med = {k: statistics.median(s["pps"] for s in v) for k, v in samples.items()}
    table: dict[str, Any] = {}
    for cls in CLASSES:
        rows: dict[str, Any] = {}
        for name in names:
            runs = samples.get((name, cls))
            if not runs:
                continue
            pps = [r["pps"] for r in runs]
            row: dict[str, Any] = {
                "pps_median": round(med[(name, cls)]),
                "pps_min": round(min(pps)),
                "pps_max": round(max(pps)),
                "spread_percent": round(100 * (max(pps) - min(pps)) / med[(name, cls)], 1),
                "ns_per_packet": round(1e9 / med[(name, cls)], 1),
                "wall_pps_median": round(statistics.median(r["wall_pps"] for r in runs)),
                "cpu_share_median": round(statistics.median(r["cpu_share"] for r in runs), 2),
                "ksoftirqd_share_max": round(max(r["ksoftirqd_share"] for r in runs), 3),
                "sent": sum(int(r["sent"]) for r in runs),
                "lost": sum(int(r["lost"]) for r in runs),
            }
            for ref in ("floor", "today"):
                if (ref, cls) in med and name != ref:
                    row[f"ratio_to_{ref}"] = round(med[(name, cls)] / med[(ref, cls)], 3)
                    row[f"ns_over_{ref}"] = round(1e9 / med[(name, cls)] - 1e9 / med[(ref, cls)], 1)
            rows[name] = row
        table[cls] = rows
    return table


def load(args: argparse.Namespace, topo: Topology, query: Netlink, workdir: Path) -> dict[str, Any]:
    """Declare and fill every table's sets; write each class's destinations to a file."""
    prefixes = list(make_prefixes(args.elements, refs(1)))
    tables = ["kzb_old", "kzb_new"] + ([] if args.no_sized else ["kzb_sized"])
    nft(topo.rtr, "".join(set_declarations(t, sized=t == "kzb_sized") for t in tables))
    out: dict[str, Any] = {"load": {t: load_table(query, t, prefixes) for t in tables}}
    v4 = [n for n in prefixes if n.version == 4]
    out["hosts_v4"] = sum(1 for n in v4 if is_host(n))
    out["prefixes_v4"] = len(v4) - out["hosts_v4"]
    out["prefixes_v6"] = len(prefixes) - len(v4)
    for cls, addrs in destinations(prefixes, args.destinations, random.Random(15)).items():
        (workdir / f"{cls}.bin").write_bytes(b"".join(addrs))
    return out


def rounds(
    args: argparse.Namespace, topo: Topology, query: Netlink, exe: Path, workdir: Path
) -> tuple[Samples, list[float]]:
    """Every round visits every layout (order rotated per round) and, in each, every class."""
    all_layouts = layouts(sized=not args.no_sized)
    samples: Samples = {}
    current = all_layouts[0]
    switch_s: list[float] = []
    for r in range(args.rounds):
        shift = r % len(all_layouts)
        for lay in all_layouts[shift:] + all_layouts[:shift]:
            t0 = time.perf_counter()
            nft(topo.rtr, current.teardown() + lay.setup())
            switch_s.append(time.perf_counter() - t0)
            current = lay
            for cls in CLASSES:
                if cls.startswith("hit") and not any(rules for _, rules in lay.chains):
                    continue  # nothing drops hits: they would measure forwarding, not the rules
                m = measure(topo, query, exe, lay, cls, workdir / f"{cls}.bin", args.seconds)
                if cls.startswith("hit") and m["dropped_by_rules"] < 0.99 * m["sent"]:
                    raise RuntimeError(
                        f"{lay.name}/{cls}: {m['dropped_by_rules']} of {m['sent']} dropped"
                    )
                if cls.startswith("miss") and m["dropped_by_rules"]:
                    raise RuntimeError(f"{lay.name}/{cls}: {m['dropped_by_rules']} misses dropped")
                samples.setdefault((lay.name, cls), []).append(m)
    return samples, switch_s


def run(args: argparse.Namespace, topo: Topology, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "kernel": platform.release(),
        "nft": sh("nft", "--version").strip(),
        "cpus": os.cpu_count(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "elements": args.elements,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "destinations_per_class": args.destinations,
    }
    exe = compile_sender(workdir)
    topo.create()
    query = Netlink(run_in_netns(topo.rtr, lambda: open_socket(64 << 20)))
    try:
        result |= load(args, topo, query, workdir)
        samples, switch_s = rounds(args, topo, query, exe, workdir)
    finally:
        query.sock.close()
    lays = layouts(sized=not args.no_sized)
    result["layouts"] = {lay.name: {"table": lay.table, "chains": lay.rules()} for lay in lays}
    result["layout_switch_s_median"] = round(statistics.median(switch_s), 3)
    result["results"] = summarise(samples, [lay.name for lay in lays])
    result["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="per run (one layout, one class)"
    )
    parser.add_argument("--destinations", type=int, default=65_536, help="distinct per class")
    parser.add_argument("--no-sized", action="store_true", help="skip the fixed-size hash variant")
    parser.add_argument(
        "--quick", action="store_true", help="100k targets, 3 rounds of 0.25 s runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.elements, args.rounds, args.seconds, args.destinations = 100_000, 3, 0.25, 8192
    topo = Topology.named(os.getpid())

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    try:
        with tempfile.TemporaryDirectory(prefix="kzg-pkt-") as tmp:
            result = run(args, topo, Path(tmp))
    finally:
        with contextlib.suppress(Exception):
            topo.delete()
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
