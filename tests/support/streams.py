"""TCP clients on loopback, as the listener-limit tests attack with: each from its own address.

Linux routes all of 127.0.0.0/8 to lo, so a client bound to 127.0.0.N is a distinct
peer to a server's per-client caps without any set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as tls

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def sources(count: int, start: int = 2) -> list[str]:
    """``count`` client addresses, 127.0.0.``start`` on (127.0.0.1 is the honest client's)."""
    return [f"127.0.0.{i}" for i in range(start, start + count)]


async def connect(port: int, source: str, *, ssl: tls.SSLContext | None = None) -> Stream:
    """A connection to 127.0.0.1:``port`` from ``source``."""
    return await asyncio.open_connection("127.0.0.1", port, ssl=ssl, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, wait: float) -> bool:
    """The server closed it within ``wait`` seconds: EOF or reset (data before that is skipped)."""
    try:
        async with asyncio.timeout(wait):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:  # before ConnectionError: both are OSErrors
        return False
    except ConnectionError:  # reset
        return True


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        with contextlib.suppress(Exception):  # a server may have closed it first
            writer.close()
