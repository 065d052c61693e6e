from __future__ import annotations

import os
from pathlib import Path

import pytest

from kzgate.devpki import ensure_dev_material
from tests.support.skipgate import MARKER_HELP, STRICT_ENV, SkipGate

# Skips a strict run (scripts/test) accepts, each with the reason why: see support/skipgate.py.
SKIPS_ALLOWED = Path(__file__).parent / "skips-allowed.txt"


def pytest_configure(config: pytest.Config) -> None:
    if missing := folders_without_init(Path(__file__).parent):
        names = ", ".join(str(d) for d in missing)
        raise pytest.UsageError(f"test folders without an __init__.py (tests/__init__.py): {names}")
    config.addinivalue_line("markers", MARKER_HELP)
    strict = os.environ.get(STRICT_ENV) == "1"
    config.pluginmanager.register(SkipGate(SKIPS_ALLOWED, strict=strict), "kzgate-skip-gate")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Development keys and certificates, made once per test session."""
    base = tmp_path_factory.mktemp("pki")
    ensure_dev_material(base)
    return base


def folders_without_init(tests: Path) -> list[Path]:
    """Folders of test code outside fuzz/ (which is not a package) that are not packages."""
    return sorted(
        folder
        for folder in tests.rglob("*")
        if folder.is_dir()
        and folder.name != "__pycache__"
        and "fuzz" not in folder.relative_to(tests).parts
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    )
