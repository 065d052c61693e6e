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
