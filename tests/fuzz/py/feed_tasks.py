"""Fuzz the task list a feed server sends (kzgate/feed/client.py: parse_tasks).

The bytes are the body of ``GET {feed}/tasks`` (task-protocol.md §6), from a server kzgate
trusts only to be reachable. Only ``FeedError`` may escape, and of kind "garbage"; what it
accepts is a list of byte strings, each the UTF-8 of a JSON string of that list, in order.
"""

from __future__ import annotations

import json

from _harness import fuzz, instrumented

with instrumented(__name__):
    from kzgate.feed.client import parse_tasks
    from kzgate.feed.ports import FeedError

# The client reads at most api.max_body_bytes (16 MiB) before parse_tasks sees it; json is C
# code and linear, so the fuzzer works up to 1 MiB (json_strict.py covers the reader at 12 MiB).
MAX_LEN = 1 << 20
TIMEOUT = 10  # seconds per input


def target(data: bytes) -> None:
    try:
        tasks = parse_tasks(data)
    except FeedError as exc:
        assert exc.kind == "garbage", exc
        return
    assert isinstance(tasks, list) and all(isinstance(t, bytes) for t in tasks)
    assert [t.decode("utf-8") for t in tasks] == json.loads(data)["tasks"]


if __name__ == "__main__":
    fuzz(target)
