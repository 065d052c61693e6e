"""An in-process enforcer that records what it is asked, for the set's and the pipeline's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping

from kzgate.config import Config
from kzgate.enforce.base import Enforcer, Listener, StartError
from kzgate.model import Diff, State, diff_between


class Recording(Enforcer):
    """Holds a State in memory; ``log`` (shared between fakes) says what happened in which order.

    Knobs: ``fail_applies``/``fail_reconciles`` (that many calls raise), ``hang``
    (apply never returns), ``fail_start``, ``uncarry`` (domains it cannot carry),
    ``delay`` (seconds each apply takes, yielding to the loop; a callable: asked each time).
    """

    def __init__(
        self, name: str, log: list[str] | None = None, *, uncarry: Collection[str] = ()
    ) -> None:
        self.name = name
        self.log = log if log is not None else []
        self.held = State({}, {})
        self.applied: list[Diff] = []
        self.uncarry = set(uncarry)
        self.fail_applies = 0
        self.fail_reconciles = 0
        self.fail_start = False
        self.hang = False
        self.delay: float | Callable[[], float] = 0.0
        self.on_drift: Callable[[], None] | None = None
        self.reloaded: list[tuple[Config, tuple[str, ...]]] = []

    async def start(self, on_drift: Callable[[], None]) -> None:
        self.log.append(f"start {self.name}")
        self.on_drift = on_drift
        if self.fail_start:
            raise StartError(f"{self.name}: cannot start")

    async def serve(self) -> None:
        self.log.append(f"serve {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")

    async def apply(self, diff: Diff) -> None:
        self.log.append(f"apply {self.name}")
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_applies:
            self.fail_applies -= 1
            raise OSError(f"{self.name} is down")
        delay = self.delay() if callable(self.delay) else self.delay
        if delay:
            await asyncio.sleep(delay)
        domains = {d: r for d, r in self.held.domains.items() if d not in diff.domains_removed}
        prefixes = {p: r for p, r in self.held.prefixes.items() if p not in diff.prefixes_removed}
        domains.update(diff.domains_added)
        domains.update(diff.domains_relabelled)
        prefixes.update(diff.prefixes_added)
        self.held = State(domains, prefixes)
        self.applied.append(diff)

    async def reconcile(self, state: State) -> Diff:
        self.log.append(f"reconcile {self.name}")
        if self.fail_reconciles:
            self.fail_reconciles -= 1
            raise OSError(f"{self.name} is down")
        fix = diff_between(self.held, state)
        self.held = state
        return fix

    def uncarried(self, diff: Diff) -> Diff:
        left = {d: r for d, r in diff.domains_added.items() if d in self.uncarry}
        return Diff(domains_added=left)

    def status(self) -> Mapping[str, object]:
        return {self.name: {"held": len(self.held.domains) + len(self.held.prefixes)}}

    def listeners(self) -> Mapping[str, Listener]:
        return {self.name: Listener(("127.0.0.1", 1), lambda: {"acl": 2})}

    async def reload(self, cfg: Config, live: Collection[str]) -> None:
        self.reloaded.append((cfg, tuple(live)))

    def domains(self) -> set[str]:
        """The domains it holds (what a query of its backend would see)."""
        return set(self.held.domains)
