"""dns/workers.py: the pool of DNS worker processes, seen through WorkerPool alone.

Without a process: the sockets the control process binds and keeps, a start that
cannot bind, the status and metrics of a pool, and what the pool sends its
workers and when it returns, against stand-in workers put in ``pool.workers``
that take each frame (a 4-byte big-endian length and a pickled ``(kind, seq,
payload)``) and acknowledge it as a worker does. With real forks, because only a
worker process can show it: the frames reach it and it acts on them before its
acknowledgement lets ``apply`` return, and ``close`` leaves no process and no
socket behind. (The daemon's workers, SO_REUSEPORT spreading and crash
replacement: tests/integration/dns/test_workers.py and daemon/test_dns_isolation.py.)
"""

from __future__ import annotations

import asyncio
import errno
import gc
import ipaddress
import os
import pickle
import socket
import struct
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dnslib
import pytest

from kzgate.config import DnsConfig, HostPort, load_config
from kzgate.dns.fastpath import FAST
from kzgate.dns.local import block_settings
from kzgate.dns.telemetry import DnsSnapshot
from kzgate.dns.types import BlockSettings
from kzgate.dns.workers import WorkerPool
from kzgate.enforce.base import StartError
from kzgate.model import Diff, InstructionRef, State
from kzgate.names import IPNetwork
from kzgate.policy import PolicyIndex
from tests.support.dnsmsg import query, udp_exchange
from tests.support.kzfixtures import write_config

REF = InstructionRef("mci", "1", "2026-11-01")
OTHER = InstructionRef("mci", "2", "2026-11-02")
NET: IPNetwork = ipaddress.ip_network("203.0.113.0/24")
ENGINE = "c" if FAST is not None else "python"
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


def config(*listen: str, workers: int = 1, **more: Any) -> DnsConfig:
    where = tuple(HostPort(h, int(p)) for h, p in (a.rsplit(":", 1) for a in listen))
    return DnsConfig(listen=where or (HostPort("127.0.0.1", 0),), workers=workers, **more)


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def port_taken(host: str, port: int, kind: socket.SocketKind) -> bool:
    """Is ``port`` bound for ``kind`` (binding it again without SO_REUSEPORT fails)?"""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
            return True
        return False


def decode(frame: bytes) -> tuple[Any, ...]:
    """A frame as the pool writes it: a 4-byte big-endian length, then the pickled message."""
    (size,) = struct.unpack("!I", frame[:4])
    assert size == len(frame) - 4, "one frame per send, its length first"
    message = pickle.loads(frame[4:])
    assert isinstance(message, tuple)
    return message


def no_such_pid(slot: int) -> int:
    """A pid no process has (above pid_max): the pool never signals a stand-in by mistake."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1 + slot


@dataclass
class StandIn:
    """A worker as the pool sees one: frames in; acknowledgements (at once, or on ``ack``)."""

    slot: int
    ready: asyncio.Future[list[tuple[str, int]]]
    acks: bool = True
    dead: bool = False
    retired: bool = False
    pid: int = 0
    snapshot: DnsSnapshot = field(default_factory=DnsSnapshot.zero)
    pending: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    got: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pid = no_such_pid(self.slot)

    def send(self, frame: bytes) -> None:
        self.got.append(decode(frame))
        if self.acks:
            self.ack()

    def ack(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_result(None)


def stand_ins(pool: WorkerPool, *, ready: bool = True) -> list[StandIn]:
    loop = asyncio.get_running_loop()
    workers = []
    for slot in range(pool.count):
        worker = StandIn(slot, loop.create_future())
        if ready:
            worker.ready.set_result([("127.0.0.1", 53)])
        pool.workers[slot] = worker  # type: ignore[assignment]
        workers.append(worker)
    return workers


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(PolicyIndex(), config(workers=3))
    yield pool
    pool.workers.clear()  # stand-ins have no process to stop


# -- without a process: sockets ---------------------------------------------------------


async def test_bind_keeps_a_udp_and_tcp_socket_per_worker_and_address_on_one_port() -> None:
    pool = WorkerPool(PolicyIndex(), config("127.0.0.1:0", "127.0.0.2:0", workers=3))
    assert pool.listeners() == {}  # nothing bound yet
    before = open_fds()
    await pool.start()
    try:
        assert len(open_fds() - before) == 3 * 2 * 2  # workers x addresses x (UDP, TCP)
        assert [host for host, _ in pool.bound] == ["127.0.0.1", "127.0.0.2"]
        for host, port in pool.bound:
            assert port != 0  # the first bind picked it; the other workers share it
            assert port_taken(host, port, socket.SOCK_DGRAM)
            assert port_taken(host, port, socket.SOCK_STREAM)
        assert pool.listeners()["dns"].address == pool.bound[0]
        assert pool.listeners()["dns"].refusals() == {}
    finally:
        await pool.close()
    assert open_fds() == before
    for host, port in pool.bound:
        assert not port_taken(host, port, socket.SOCK_DGRAM)
        assert not port_taken(host, port, socket.SOCK_STREAM)


async def test_a_port_in_use_fails_the_start_in_one_line_and_leaves_nothing_open() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:  # no SO_REUSEPORT
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        pool = WorkerPool(PolicyIndex(), config("127.0.0.2:0", f"127.0.0.1:{port}", workers=2))
        before = open_fds()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(StartError, match=rf"^dns: cannot listen on 127\.0\.0\.1:{port}: "):
                await pool.start()
            gc.collect()
        # The sockets of the first address were closed again, not left to the collector.
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert open_fds() == before
        assert pool.bound == [] and pool.listeners() == {}


# -- without a process: status and metrics ---------------------------------------------


def test_status_before_the_workers_are_forked(pool: WorkerPool) -> None:
    assert pool.status() == {
        "dns": {
            "fast_path": "built" if FAST is not None else "not built",
            "crash_limit": 5,
            "crash_window": 60.0,
            "workers": [
                {"slot": s, "pid": None, "engine": ENGINE, "state": "down", "crashes": 0}
                for s in range(3)
            ],
        }
    }


async def test_status_says_which_workers_are_up_starting_or_down(pool: WorkerPool) -> None:
    up, starting, dead = stand_ins(pool)
    starting.ready = asyncio.get_running_loop().create_future()
    dead.dead = True
    rows = pool.status()["dns"]["workers"]  # type: ignore[index]
    assert [(r["slot"], r["pid"], r["state"]) for r in rows] == [
        (0, up.pid, "up"),
        (1, starting.pid, "starting"),
        (2, dead.pid, "down"),
    ]


def metric_values(pool: WorkerPool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for collector in pool.collectors():
        for family in collector.collect():
            for sample in family.samples:
                out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_count_the_slots_by_engine_and_no_crash_yet(pool: WorkerPool) -> None:
    values = metric_values(pool)
    assert values["kzgate_dns_workers", (("engine", ENGINE),)] == 3
    other = "python" if ENGINE == "c" else "c"
    assert values["kzgate_dns_workers", (("engine", other),)] == 0
    assert values["kzgate_dns_worker_crashes_total", ()] == 0
    assert pool.counts().crashes == 0 and pool.counts().engines == {ENGINE: 3}


async def test_the_counters_are_every_workers_summed(pool: WorkerPool) -> None:
    workers = stand_ins(pool)
    for n, worker in enumerate(workers, start=1):
        snap = DnsSnapshot.zero()
        snap.verdicts["blocked"] = n
        snap.refusals["tcp_per_client"] = 10 * n
        worker.snapshot = snap
    total = pool.snapshot()
    assert total.verdicts["blocked"] == 1 + 2 + 3
    assert total.refusals == {"tcp_per_client": 60}
    values = metric_values(pool)
    assert values["kzgate_dns_queries_total", (("verdict", "blocked"),)] == 6


# -- without a process: what the workers are sent ----------------------------------------


async def test_apply_sends_every_worker_the_domain_part_of_a_diff(pool: WorkerPool) -> None:
    workers = stand_ins(pool)
    diff = Diff(
        domains_added={"new.kz": REF},
        domains_removed=frozenset({"old.kz"}),
        domains_relabelled={"kept.kz": OTHER},
        prefixes_added={NET: REF},
        prefixes_removed=frozenset({NET}),
    )
    await pool.apply(diff)
    domains_only = Diff(
        domains_added={"new.kz": REF},
        domains_removed=frozenset({"old.kz"}),
        domains_relabelled={"kept.kz": OTHER},
    )
    sent = [worker.got for worker in workers]
    assert sent[0] == [("diff", sent[0][0][1], domains_only)]
    assert sent[0] == sent[1] == sent[2]  # one frame, the same sequence number, to each


async def test_a_diff_of_addresses_only_is_sent_to_no_worker(pool: WorkerPool) -> None:
    workers = stand_ins(pool)
    await pool.apply(Diff(prefixes_added={NET: REF}))
    await pool.apply(Diff(prefixes_removed=frozenset({NET})))
    assert [w.got for w in workers] == [[], [], []]


async def test_apply_returns_only_once_every_worker_has_acknowledged(pool: WorkerPool) -> None:
    first, slow, third = stand_ins(pool)
    slow.acks = False
    applying = asyncio.create_task(pool.apply(Diff(domains_added={"new.kz": REF})))
    await asyncio.sleep(0.2)
    assert [len(w.got) for w in (first, slow, third)] == [1, 1, 1]
    assert not applying.done()  # a receipt must not say "applied" before the slow one has it
    slow.ack()
    await asyncio.wait_for(applying, 1)


async def test_reconcile_before_the_workers_exist_sends_nothing(pool: WorkerPool) -> None:
    # serve() forks them from the index, which the DNS index enforcer reconciled already.
    assert await pool.reconcile(State(domains={"a.kz": REF}, prefixes={NET: REF})) == Diff()


async def test_reconcile_sends_the_domains_of_the_state_and_has_nothing_to_fix(
    pool: WorkerPool,
) -> None:
    workers = stand_ins(pool)
    fixed = await pool.reconcile(State(domains={"a.kz": REF}, prefixes={NET: REF}))
    assert fixed == Diff()
    for worker in workers:
        ((kind, _, state),) = worker.got
        assert kind == "state" and state == State(domains={"a.kz": REF}, prefixes={})
    assert pool.uncarried(Diff(domains_added={"a.kz": REF}, prefixes_added={NET: REF})) == Diff()


async def test_each_message_has_a_sequence_number_of_its_own(pool: WorkerPool) -> None:
    (worker, *_) = stand_ins(pool)
    await pool.apply(Diff(domains_added={"a.kz": REF}))
    await pool.reconcile(State(domains={}, prefixes={}))
    await pool.apply(Diff(domains_removed=frozenset({"a.kz"})))
    seqs = [seq for _, seq, _ in worker.got]
    assert seqs == sorted(set(seqs)) and len(seqs) == 3


async def test_a_reload_sends_the_block_answers_and_new_upstreams_only_when_they_changed(
    pool: WorkerPool, tmp_path: Path, pki: Path
) -> None:
    workers = stand_ins(pool)
    upstream = HostPort("192.0.2.53", 53)
    dns = {"upstreams": [str(upstream)], "block_mode": "sinkhole", "block_ttl": 30}
    whole = load_config(write_config(tmp_path, pki, dns={"listen": ["127.0.0.1:0"], **dns}))
    await pool.reload(whole, live=set())
    settings = block_settings(whole.dns)
    assert settings == BlockSettings(mode="sinkhole", ttl=30)
    assert [(kind, payload) for kind, _, payload in workers[0].got] == [("settings", settings)]
    assert pool.cfg.upstreams == ()  # not live-reloaded: not changed

    await pool.reload(whole, live={"dns.upstreams"})
    assert [(kind, payload) for kind, _, payload in workers[0].got[1:]] == [
        ("settings", settings),
        ("upstreams", (upstream,)),
    ]
    assert pool.cfg.upstreams == (upstream,)  # a worker forked from now on starts with them


async def test_refresh_asks_only_the_workers_that_are_serving(pool: WorkerPool) -> None:
    up, starting, dead = stand_ins(pool)
    starting.ready = asyncio.get_running_loop().create_future()
    dead.dead = True
    await asyncio.wait_for(pool.refresh(), 1)
    ((kind, _, payload),) = up.got
    assert (kind, payload) == ("poll", None)
    assert starting.got == [] and dead.got == []
    assert all(not w.pending for w in (up, starting, dead))  # nothing left owed


async def test_refresh_does_not_wait_forever_for_a_silent_worker(pool: WorkerPool) -> None:
    workers = stand_ins(pool)
    for worker in workers:
        worker.acks = False
    await asyncio.wait_for(pool.refresh(), 3)  # a scrape gets older counters, it is not stuck
    assert all(len(w.got) == 1 and not w.pending for w in workers)


# -- with real forks: what only a worker process shows ------------------------------------


@dataclass
class Served:
    pool: WorkerPool
    port: int

    async def rcodes(self, name: str, tries: int = 30) -> set[int]:
        """The answers to ``name`` from fresh source ports: SO_REUSEPORT spreads them, and
        30 leave both workers unasked with a chance of 2 in a billion."""
        answers = [await udp_exchange(self.port, query(name, qid=i)) for i in range(tries)]
        assert all(a is not None for a in answers), "a worker did not answer"
        return {a[3] & 0x0F for a in answers if a is not None}


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    index = PolicyIndex()
    index.set_domain("blocked.kz", REF)
    pool = WorkerPool(index, config(workers=2))  # no upstreams: an allowed name is SERVFAIL
    await pool.start()
    await pool.serve()
    yield Served(pool, pool.bound[0][1])
    await pool.close()


async def test_forked_workers_serve_the_index_they_were_forked_from(served: Served) -> None:
    rows = served.pool.status()["dns"]["workers"]  # type: ignore[index]
    assert [r["state"] for r in rows] == ["up", "up"]
    pids = {r["pid"] for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    assert await served.rcodes("www.blocked.kz") == {NXDOMAIN}
    assert await served.rcodes("allowed.kz") == {SERVFAIL}


async def test_each_worker_holds_a_diff_by_the_time_apply_returns(served: Served) -> None:
    await served.pool.apply(Diff(domains_added={"new.kz": REF}))
    assert await served.rcodes("a.new.kz") == {NXDOMAIN}  # no wait: the ack means applied
    await served.pool.apply(Diff(domains_removed=frozenset({"blocked.kz"})))
    assert await served.rcodes("blocked.kz") == {SERVFAIL}


async def test_a_reconciled_state_replaces_what_each_worker_holds(served: Served) -> None:
    await served.pool.reconcile(State(domains={"other.kz": REF}, prefixes={NET: REF}))
    assert await served.rcodes("blocked.kz") == {SERVFAIL}
    assert await served.rcodes("other.kz") == {NXDOMAIN}


async def test_new_block_answers_reach_each_worker(served: Served) -> None:
    sinkhole = ipaddress.IPv4Address("192.0.2.99")
    await served.pool.set_settings(BlockSettings(mode="sinkhole", ttl=7, sinkhole_ipv4=sinkhole))
    for i in range(30):  # both workers (see Served.rcodes)
        answer = await udp_exchange(served.port, query("blocked.kz", qid=i))
        assert answer is not None
        record = dnslib.DNSRecord.parse(answer)
        assert record.header.rcode == NOERROR
        assert [(str(rr.rdata), rr.ttl) for rr in record.rr] == [(str(sinkhole), 7)]


async def test_refresh_brings_each_workers_counters(served: Served) -> None:
    before = served.pool.snapshot().verdicts["blocked"]
    await served.rcodes("blocked.kz", tries=10)
    await served.pool.refresh()  # no waiting for the twice-a-second report
    assert served.pool.snapshot().verdicts["blocked"] - before == 10


async def test_close_stops_every_worker_and_frees_the_port() -> None:
    pool = WorkerPool(PolicyIndex(), config(workers=2))
    before = open_fds()
    await pool.start()
    await pool.serve()
    pids = [w.pid for w in pool.workers.values()]
    host, port = pool.bound[0]
    await pool.close()
    await asyncio.sleep(0.05)  # the transports to the workers close on the next loop turns
    for pid in pids:
        with pytest.raises(ChildProcessError):  # exited and reaped: no zombie left
            os.waitpid(pid, os.WNOHANG)
    assert not port_taken(host, port, socket.SOCK_DGRAM)
    assert not port_taken(host, port, socket.SOCK_STREAM)
    assert open_fds() == before
