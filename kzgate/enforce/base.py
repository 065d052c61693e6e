"""The one interface every enforcement backend implements, and how to add one.

An enforcer keeps one backend (the DNS index, the DNS workers, the RPZ zone,
nftables, ...) equal to the register's effective state. Its life, driven by
the enforcer set (enforce/set.py) in this order:

1. ``start(on_drift)``: acquire what it needs (bind sockets, open netlink,
   create its table). Nothing is served yet and it holds no state.
2. ``reconcile(state)``: made equal to the register's state.
3. ``serve()``: begin serving what it now holds (fork the DNS workers, bind
   the RPZ listener). Never before 2: a client must never see an empty policy.
4. ``apply(diff)`` for every committed change, in commit order; a failure
   marks it dirty and the set repairs it with ``reconcile``. So does a call of
   ``on_drift`` (someone changed the backend under it).
5. ``close()`` on stop. Fail closed: what it enforces outside this process
   (nftables elements) stays in place.

Around that: ``collectors()`` (its metrics), ``status()`` (its fields in
``GET /status``), ``refresh()`` (called before a scrape), ``listeners()``
(where it listens and what its limits refused), ``reload(plan)`` (SIGHUP).
This is cs-firewall-bouncer's Backend (Init, Set, Add/Delete/Commit, ShutDown,
CollectMetrics) with the diff as the unit of change.

How to add an enforcer
----------------------
Write one module and one line of wiring. The dry-run twin of nftables
(enforce/dryrun.py, the enforcer used when ``nftables.enabled`` is false) is
the smallest complete example::

    class DryRunEnforcer(Enforcer):
        name = "dryrun"                     # its label in metrics, logs, receipts

        async def apply(self, diff: Diff) -> None:
            ...                             # add and remove exactly what diff says

        async def reconcile(self, state: State) -> Diff:
            ...                             # make it equal state; return the change

        def uncarried(self, diff: Diff) -> Diff:
            return Diff()                   # what it cannot represent (pure)

Subclass ``Enforcer`` (explicitly: that gives you the no-op lifecycle hooks
below, and mypy refuses the class if a required method is missing), override
only the hooks you need (a listener binds in ``serve``, a kernel handle opens
in ``start``; raise ``StartError`` with one line for the operator when it
cannot), then add it in ``build_enforcers`` (kzgate/wiring.py)::

    enforcers.append(DryRunEnforcer())

Order in that list is the order of start, reconcile, serve and apply. Its
metric families go in kzgate/metrics.py (names are a contract), its values
reach them through ``collectors()``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kzgate.config import Config
from kzgate.metrics import Collector
from kzgate.model import Diff, State


class StartError(Exception):
    """An enforcer cannot start or serve; the message is one line for the operator."""


@dataclass(frozen=True)
class Listener:
    """A socket an enforcer serves on (after ``serve``), for the log, tests and metrics."""

    address: tuple[str, int]  # the first address bound
    refusals: Callable[[], Mapping[str, int]]  # reason -> count (kzgate_listener_refusals_total)


class Enforcer(Protocol):
    """Applies exact diffs; reconciles reality to a full state on start and after drift."""

    name: str

    async def apply(self, diff: Diff) -> None:
        """Add and remove exactly what ``diff`` says."""
        ...

    async def reconcile(self, state: State) -> Diff:
        """Make reality equal ``state``; return what had to change."""
        ...

    def uncarried(self, diff: Diff) -> Diff:
        """Of what ``diff`` adds, the targets this enforcer cannot represent (pure).

        ``apply`` and ``reconcile`` leave exactly these out and never fail over
        them; the pipeline names them (receipt status ``partial``, a metric, the
        status). Only ``domains_added`` and ``prefixes_added`` of the answer are set.
        """
        ...

    # -- the lifecycle: each hook has a default that does nothing ---------------

    async def start(self, on_drift: Callable[[], None]) -> None:
        """Acquire what it needs, before the first reconcile; StartError if it cannot.

        ``on_drift`` (call it on the event loop) asks for a reconcile soon.
        """
        return None

    async def serve(self) -> None:
        """Begin serving, after the first reconcile; StartError if it cannot."""
        return None

    async def close(self) -> None:
        """Let go of what ``start`` and ``serve`` took (what it enforces may stay).

        Also called after a ``start`` that failed half-way, or never ran.
        """
        return None

    def collectors(self) -> Sequence[Collector]:
        """Its metrics, read at scrape time (families from kzgate/metrics.py)."""
        return ()

    async def refresh(self) -> None:
        """Bring what ``collectors`` read up to date; called before each scrape."""
        return None

    def status(self) -> Mapping[str, object]:
        """Its fields in ``GET /status`` (`kzgate status`), beside the set's ok/repairing."""
        return {}

    def listeners(self) -> Mapping[str, Listener]:
        """What it listens on once serving: listener name (a metric label) -> Listener."""
        return {}

    async def reload(self, cfg: Config, live: Collection[str]) -> None:
        """SIGHUP: take over the settings of ``cfg`` that change live (``live`` names
        the changed ones: ``dns.upstreams``, ...); the others wait for a restart."""
        return None
