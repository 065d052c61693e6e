"""Pre-filling a register for benchmarks: the same restricted names everywhere."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from kzgate.register.store import Register
from tests.support.register_fixtures import restrict

PER_INSTRUCTION = 100_000


def restricted_name(i: int) -> str:
    return f"b{i}.blocked-{i % 1000}.kz"


def fill_register(db: Path, names: int) -> None:
    """``names`` restricted domains as restricts of 100,000 targets each, issued by "mci"."""
    register = Register.open(db)
    try:
        for k, start in enumerate(range(0, names, PER_INSTRUCTION)):
            targets = [
                ("domain", restricted_name(i))
                for i in range(start, min(names, start + PER_INSTRUCTION))
            ]
            register.record(restrict(f"bench-{k}", k + 1, f"BENCH-{k}", targets), datetime.now(UTC))
    finally:
        register.close()
