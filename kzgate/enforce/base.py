"""The one interface every enforcement backend implements."""

from __future__ import annotations

from typing import Protocol

from kzgate.model import Diff, State


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
