"""Run probe targets at every place, at a bounded rate: the edge orchestrator.

Names go to the DNS places (kzgate's own listeners, the operator's resolvers),
addresses to the kernel places (the nftables sets, the routing table, a
connect() from the host). Targets start at most ``rate`` a second; a target's
DNS questions go out together; kernel point queries run in one worker thread
(a netlink socket is not shared between threads), connect() attempts in the
default pool (each has its own socket and may wait its whole timeout).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kzgate.config.hostport import HostPort
from kzgate.config.model import NftConfig, RoutesConfig
from kzgate.probes import dnsprobe
from kzgate.probes.model import Check, Place, ProbeTarget
from kzgate.probes.verdict import BlockAnswer, connect_check, dns_check, kernel_check

_T = TypeVar("_T")
DNS_TIMEOUT = 1.0
MAX_IN_FLIGHT = 256  # targets whose checks are still running (slow resolvers, connects)


@dataclass
class Places:
    """Where a sweep checks: DNS servers, and the kernel places that are configured."""

    kzgate: list[HostPort]
    resolvers: list[HostPort]
    nft: NftConfig | None
    routes: RoutesConfig | None
    connect: bool


class KernelProbe(Protocol):
    """Point queries of the kernel's enforcement (kzgate/probes/kernel.py implements it)."""

    def nft_lookup(self, address: str) -> str | None: ...
    def route_lookup(self, address: str) -> str | None: ...
    def connect_result(self, address: str) -> str: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Run:
    def __init__(
        self,
        places: Places,
        kernel: KernelProbe | None,
        blocks: tuple[BlockAnswer, BlockAnswer],
        lookups: ThreadPoolExecutor,
    ) -> None:
        self.dns = [(Place("kzgate", str(hp)), hp, blocks[0]) for hp in places.kzgate] + [
            (Place("resolver", str(hp)), hp, blocks[1]) for hp in places.resolvers
        ]
        self.kernel = kernel
        self.places = places
        self.lookups = lookups

    async def checks(self, target: ProbeTarget) -> list[Check]:
        if target.kind == "name":
            return list(await asyncio.gather(*(self._dns(target, *p) for p in self.dns)))
        return await self._kernel(target) if self.kernel is not None else []

    async def _dns(
        self, target: ProbeTarget, place: Place, server: HostPort, block: BlockAnswer
    ) -> Check:
        reply = await dnsprobe.ask(server, target.value, "A", DNS_TIMEOUT)
        return dns_check(target, place, reply, block, _now())

    async def _kernel(self, target: ProbeTarget) -> list[Check]:
        kernel = self.kernel
        assert kernel is not None
        out: list[Check] = []
        if self.places.nft is not None:
            nft = await self._call(target, Place("nft", "nft"), self.lookups, kernel.nft_lookup)
            out.append(nft if isinstance(nft, Check) else kernel_check(target, *nft))
        if self.places.routes is not None:
            place = Place("routes", "routes")
            route = await self._call(target, place, self.lookups, kernel.route_lookup)
            out.append(route if isinstance(route, Check) else kernel_check(target, *route))
        if self.places.connect:
            place = Place("connect", "connect")
            conn = await self._call(target, place, None, kernel.connect_result)
            out.append(conn if isinstance(conn, Check) else connect_check(target, *conn))
        return out

    @staticmethod
    async def _call(
        target: ProbeTarget,
        place: Place,
        pool: ThreadPoolExecutor | None,
        fn: Callable[[str], _T],
    ) -> tuple[Place, _T, dt.datetime] | Check:
        """``fn(address)`` in ``pool``, with when it returned; or, when it raised an
        OSError (a netlink or socket failure), the check saying the place could not
        be asked."""
        try:
            value = await asyncio.get_running_loop().run_in_executor(pool, fn, target.value)
        except OSError as exc:
            return Check(target, place, f"error: {exc}", "unreachable", _now())
        return place, value, _now()


async def sweep(
    targets: Iterable[ProbeTarget],
    places: Places,
    kernel: KernelProbe | None,
    blocks: tuple[BlockAnswer, BlockAnswer],
    *,
    rate: float,
    progress: Callable[[int], None] | None = None,
) -> list[Check]:
    """Every target at every place that takes its kind; checks in target order.

    ``blocks`` is (kzgate's block answer, the resolvers' block answer). ``targets``
    may be a stream (a million register targets): it is read as the rate allows.
    ``progress`` is called with the number of targets done after each one.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    loop = asyncio.get_running_loop()
    results: list[list[Check]] = []
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    done = 0

    async def one(index: int, target: ProbeTarget) -> None:
        nonlocal done
        try:
            results[index] = await run.checks(target)
        finally:
            slots.release()
            done += 1
            if progress is not None:
                progress(done)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kzgate-probe") as lookups:
        run = _Run(places, kernel, blocks, lookups)
        tasks: list[asyncio.Task[None]] = []
        start = loop.time()
        try:
            for index, target in enumerate(targets):
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                results.append([])
                tasks.append(asyncio.create_task(one(index, target)))
                if len(tasks) >= 4 * MAX_IN_FLIGHT:  # keep the list short on a long sweep
                    for task in tasks:
                        if task.done():
                            task.result()  # raise what a finished one raised
                    tasks = [t for t in tasks if not t.done()]
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    return [check for per_target in results for check in per_target]
