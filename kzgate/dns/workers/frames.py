"""What the control process and a worker say over their socketpair, one frame at a time.

A frame is a 4-byte big-endian length and a pickled tuple. Control → worker:
``(kind, seq, payload)`` with kind ``diff``, ``state``, ``settings``,
``upstreams`` or ``poll``, each answered by a ``stats`` frame and then
``("ack", seq)``. Worker → control: ``("ready", bound addresses)`` once it
listens, and ``("stats", DnsSnapshot)`` every STATS_INTERVAL_SECONDS.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

_LEN = struct.Struct("!I")


def frame(message: object) -> bytes:
    # Both ends are this program, over a private socketpair: pickle is safe here.
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    return pickle.loads(await reader.readexactly(size))
