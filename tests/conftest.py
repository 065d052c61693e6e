from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kzgate.devpki import ensure_dev_material


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Development keys and certificates, made once per test session."""
    base = tmp_path_factory.mktemp("pki")
    ensure_dev_material(base)
    return base
