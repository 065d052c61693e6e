"""A register file per test, opened and closed (a test module may override ``db``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kzgate.register.store import Register


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kzgate.db"


@pytest.fixture
def reg(db: Path) -> Iterator[Register]:
    r = Register.open(db)
    yield r
    r.close()
