"""Catch-up benchmark: a feed's tasks taken a page at a time vs the same tasks pushed one by one.

Workload: one issuer's 10,000 restricts of 10 targets each (8 domains, 1
address, 1 /24; all new), signed up front (not timed). Each mode starts a
fresh pipeline in process (``kzgate.pipeline.Pipeline``) with the register on
disk in a temporary directory (WAL, ``synchronous=FULL``) and the dry-run
enforcer, and times the whole run:

* ``take/N``: ``Pipeline.take`` of pages of N tasks (what the feed puller
  does): verify the page off the loop, one register transaction, one combined
  diff, receipts signed per task and stored in one transaction;
* ``submit``: ``Pipeline.submit`` of each task (a pushed task's path, without
  HTTP): one transaction, one apply and one receipt transaction per task.

The per-task log lines go, as JSON, to a file (``--log-level info``, as the
daemon logs), or are off (``--log-level warning``) to see what they cost.
No sockets, no DNS workers, no nftables, no RPZ: this is the register and the
pipeline. The issue's goal for the whole catch-up is 10,000 tasks in <= 30 s.

    .venv/bin/python bench/feed_take.py [--tasks 10000] [--pages 100,500] [--no-submit]
                                        [--log-level info]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support, the tests' own harness

from kzgate.config import load_config  # noqa: E402
from kzgate.daemon import build_trust  # noqa: E402
from kzgate.devpki import ensure_dev_material  # noqa: E402
from kzgate.enforce.dryrun import DryRunEnforcer  # noqa: E402
from kzgate.enforce.set import EnforcerSet  # noqa: E402
from kzgate.keys import load_private_key  # noqa: E402
from kzgate.logs import JsonFormatter  # noqa: E402
from kzgate.metrics import Metrics  # noqa: E402
from kzgate.pipeline import Pipeline  # noqa: E402
from kzgate.protocol.build import sign_task  # noqa: E402
from kzgate.register.store import Register  # noqa: E402
from tests.support.kzfixtures import Regulator, write_config  # noqa: E402


def ten_targets(n: int) -> list[str]:
    return [f"domain:s{n}-{i}.bench.kz" for i in range(8)] + [
        f"ip:10.{n // 250 % 250}.{n % 250}.1",
        f"cidr:10.200.{n % 250}.0/24",
    ]


def signed_tasks(pki: Path, n: int) -> list[bytes]:
    mci = Regulator(pki)
    key = mci.key()
    return [
        sign_task(mci.restrict(str(i), *ten_targets(i)), key, mci.kid).encode()
        for i in range(n)
    ]


def pipeline(directory: Path, pki: Path) -> Pipeline:
    cfg = load_config(write_config(directory, pki))
    return Pipeline(
        register=Register.open(directory / "kzgate.db"),
        enforcers=EnforcerSet([DryRunEnforcer()]),
        trust=build_trust(cfg),
        operator_id="op-test",
        receipt_key=load_private_key(pki / "keys/operator.key"),
        metrics=Metrics(),
        clock=lambda: dt.datetime.now(dt.UTC),
    )


async def run(mode: str, bodies: list[bytes], directory: Path, pki: Path) -> float:
    directory.mkdir()
    pipe = pipeline(directory, pki)
    await pipe.start()
    try:
        started = time.perf_counter()
        if mode == "submit":
            for body in bodies:
                await pipe.submit(body)
        else:
            size = int(mode.split("/")[1])
            for first in range(0, len(bodies), size):
                taken = await pipe.take("mci", bodies[first : first + size], None)
                bad = [t for t in taken if t.outcome != "applied"]
                if bad:
                    raise SystemExit(f"{mode}: not applied: {bad[:3]}")
        elapsed = time.perf_counter() - started
        held = await pipe.held_through("mci")
        if held != len(bodies):
            raise SystemExit(f"{mode}: held through {held}, not {len(bodies)}")
        return elapsed
    finally:
        await pipe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--pages", default="100,500", help="page sizes for take, comma-separated")
    parser.add_argument("--no-submit", action="store_true", help="skip the one-by-one run")
    parser.add_argument("--log-level", default="info", choices=["info", "warning"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kzgate-feed-bench-") as tmp:
        base = Path(tmp)
        handler = logging.FileHandler(base / "kzgate.log")
        handler.setFormatter(JsonFormatter())
        logging.getLogger().handlers[:] = [handler]
        logging.getLogger().setLevel(args.log_level.upper())
        ensure_dev_material(base / "pki")
        began = time.perf_counter()
        bodies = signed_tasks(base / "pki", args.tasks)
        print(f"signed {len(bodies)} tasks of 10 targets in {time.perf_counter() - began:.1f} s")
        modes = [f"take/{n}" for n in args.pages.split(",")]
        modes += [] if args.no_submit else ["submit"]
        for i, mode in enumerate(modes):
            elapsed = asyncio.run(run(mode, bodies, base / f"run{i}", base / "pki"))
            print(
                f"{mode:>10}: {elapsed:7.2f} s  {len(bodies) / elapsed:8.0f} tasks/s"
                f"  (log level {args.log_level})"
            )


if __name__ == "__main__":
    main()
