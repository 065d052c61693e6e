"""The skip gate (tests/support/skipgate.py), in small pytest sessions run as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.skipgate import Entry, Skip, parse_allow_list, unlisted

ROOT = Path(__file__).resolve().parents[3]  # where the package tests.support is

SAMPLE = """
import pytest

def test_passes():
    pass

@pytest.mark.skipif(True, reason="frob is not installed")
def test_tool():
    pass

def test_runtime_skip():
    pytest.skip("no frobnicator here")

@pytest.mark.privileged(check=lambda: "needs root for this")
def test_privileged():
    pass

@pytest.mark.privileged(check=lambda: None)
def test_privileged_can_run():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_xfail():
    assert False
"""

CONFTEST = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from tests.support.skipgate import MARKER_HELP, STRICT_ENV, SkipGate

def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_HELP)
    strict = os.environ.get(STRICT_ENV) == "1"
    gate = SkipGate(Path(__file__).parent / "allowed.txt", strict=strict)
    config.pluginmanager.register(gate, "gate")
"""


def session(
    tmp_path: Path, *args: str, strict: bool, allowed: str = ""
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n", encoding="utf-8"
    )
    (tmp_path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    (tmp_path / "allowed.txt").write_text(allowed, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "KZGATE_STRICT_SKIPS"}
    if strict:
        env["KZGATE_STRICT_SKIPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


BOTH_ALLOWED = """
# a comment
test_sample.py::test_tool | frob is not installed | the sample's reason
test_sample.py::test_runtime_* | no frobnicator | the sample's reason
"""


def test_without_strict_skips_stay_skips(tmp_path: Path) -> None:
    done = session(tmp_path, strict=False)
    assert done.returncode == 0, done.stdout
    assert "2 passed, 3 skipped, 1 xfailed" in done.stdout
    assert "needs root for this" in done.stdout  # the privileged test's reason, as a skip


def test_strict_fails_on_an_unlisted_skip(tmp_path: Path) -> None:
    done = session(tmp_path, "-k", "not privileged", strict=True)
    assert done.returncode == 1, done.stdout
    assert "2 skips not on the allow-list" in done.stdout
    assert "test_sample.py::test_tool: frob is not installed" in done.stdout
    assert "test_sample.py::test_runtime_skip: no frobnicator here" in done.stdout


def test_strict_accepts_listed_skips(tmp_path: Path) -> None:
    done = session(tmp_path, "-k", "not privileged", strict=True, allowed=BOTH_ALLOWED)
    assert done.returncode == 0, done.stdout
    assert "not on the allow-list" not in done.stdout


def test_an_entry_with_another_reason_does_not_allow_the_skip(tmp_path: Path) -> None:
    allowed = BOTH_ALLOWED.replace("frob is not installed", "frob is too old")
    done = session(tmp_path, "-k", "not privileged", strict=True, allowed=allowed)
    assert done.returncode == 1, done.stdout
    assert "1 skips not on the allow-list" in done.stdout


def test_strict_fails_a_privileged_test_that_cannot_run(tmp_path: Path) -> None:
    done = session(tmp_path, "-k", "privileged", strict=True)
    assert done.returncode == 1, done.stdout
    assert "1 passed" in done.stdout and "1 error" in done.stdout
    assert "privileged test cannot run here: needs root for this" in done.stdout


def test_a_filtered_strict_run_is_judged_on_what_it_selected(tmp_path: Path) -> None:
    done = session(tmp_path, "-k", "passes", strict=True)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 5 deselected" in done.stdout


def test_a_malformed_allow_list_is_a_usage_error(tmp_path: Path) -> None:
    done = session(tmp_path, strict=True, allowed="test_sample.py::test_tool | no reason\n")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "allowed.txt:1: expected 'NODEID-GLOB | REASON-SUBSTRING | WHY'" in done.stderr


def test_parse_and_match() -> None:
    entries = parse_allow_list("a/*::t | needs x | why\n\n# c\n", "f")
    assert entries == [Entry("a/*::t", "needs x", "why", 1)]
    skips = [Skip("a/b.py::t", "it needs x here"), Skip("a/b.py::u", "needs x")]
    assert unlisted(skips, entries) == [skips[1]]
    with pytest.raises(ValueError, match="f:1: "):
        parse_allow_list("a | | why", "f")


def test_the_projects_allow_list_parses() -> None:
    allowed = ROOT / "tests" / "skips-allowed.txt"
    parse_allow_list(allowed.read_text(encoding="utf-8"), "skips-allowed")
