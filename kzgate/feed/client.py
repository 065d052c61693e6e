"""PLACEHOLDER, replaced by fserve's branch (i12-fserve): the aiohttp FeedSource.

Only here so that fpull's wiring (feed/pullers.py, daemon.py) imports and type-checks
before that branch lands; the integrator takes fserve's file whole. Constructing it
fails, so a config with a feed cannot silently run without a client.
"""

from __future__ import annotations

from kzgate.config import FeedConfig


class FeedClient:
    """One issuer's feed over HTTPS (task-protocol.md §6): not written in this branch."""

    def __init__(self, cfg: FeedConfig, max_body_bytes: int) -> None:
        raise NotImplementedError("placeholder: kzgate/feed/client.py comes from i12-fserve")

    async def get_head(self) -> bytes:
        raise NotImplementedError

    async def get_tasks(self, after: int, limit: int, wait: float) -> list[bytes]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
