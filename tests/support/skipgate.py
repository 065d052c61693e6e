"""The skip gate: a strict run fails on a skip nobody agreed to, or a privileged test it cannot run.

A skipped test proves nothing, and a suite that skips quietly (a tool not
installed, not run as root) looks green while it tests half of what it
claims. ``scripts/test`` therefore sets ``KZGATE_STRICT_SKIPS=1``, and then:

* every skip (``skipif``, ``pytest.skip`` in a test or fixture, a skipped
  module) must match an entry of the allow-list (``tests/skips-allowed.txt``),
  or the session fails after listing the unlisted skips;
* a test marked ``privileged(check=...)`` (``netns.required``) whose check
  names a reason it cannot run fails at once, with that reason, instead of
  skipping.

Without the variable (a developer's plain ``pytest``) skips stay skips.
Deselected tests (``-k``, ``-m``, a path) are not skips: a filtered run is
judged only on what it selected.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

STRICT_ENV = "KZGATE_STRICT_SKIPS"
MARKER = "privileged"
MARKER_HELP = (
    "privileged(check): needs rights or kernel features the machine may lack; "
    "check() returns why it cannot run, or None (skipped, or failed under KZGATE_STRICT_SKIPS=1)"
)


@dataclass(frozen=True)
class Entry:
    """An allowed skip: ids matching ``pattern`` skipped for a reason containing ``reason``."""

    pattern: str
    reason: str
    why: str
    line: int

    def matches(self, skip: Skip) -> bool:
        return fnmatch.fnmatchcase(skip.nodeid, self.pattern) and self.reason in skip.reason


@dataclass(frozen=True)
class Skip:
    nodeid: str
    reason: str


def parse_allow_list(text: str, source: str) -> list[Entry]:
    """Entries of ``NODEID-GLOB | REASON-SUBSTRING | WHY`` lines; ``#`` starts a comment line."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3 or not all(fields):
            raise ValueError(
                f"{source}:{number}: expected 'NODEID-GLOB | REASON-SUBSTRING | WHY',"
                f" three non-empty fields, got {raw!r}"
            )
        entries.append(Entry(fields[0], fields[1], fields[2], number))
    return entries


def unlisted(skips: Iterable[Skip], entries: Iterable[Entry]) -> list[Skip]:
    """The skips no entry allows."""
    allowed = list(entries)
    return [s for s in skips if not any(e.matches(s) for e in allowed)]


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason pytest recorded for a skip (its longrepr is ``(path, line, "Skipped: why")``)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipGate:
    """A pytest plugin: collects the session's skips and fails it on an unlisted one when strict."""

    def __init__(self, allow_list: Path, *, strict: bool) -> None:
        self.allow_list = allow_list
        self.strict = strict
        try:
            self.entries = parse_allow_list(allow_list.read_text(encoding="utf-8"), str(allow_list))
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(f"skip allow-list: {exc}") from exc
        self.skips: list[Skip] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            return
        check: Callable[[], str | None] = marker.kwargs["check"]
        why = check()
        if why is None:
            return
        if self.strict:
            pytest.fail(
                f"privileged test cannot run here: {why}. {STRICT_ENV}=1 (scripts/test) runs"
                " every test: run it as root on a machine that can make network namespaces",
                pytrace=False,
            )
        pytest.skip(why)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append(Skip(report.nodeid, skip_reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.skips.append(Skip(report.nodeid, skip_reason(report)))

    def unlisted(self) -> list[Skip]:
        return unlisted(self.skips, self.entries) if self.strict else []

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unlisted() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        bad = self.unlisted()
        if not bad:
            return
        terminalreporter.section(f"{len(bad)} skips not on the allow-list", sep="=", red=True)
        for skip in bad:
            terminalreporter.line(f"{skip.nodeid}: {skip.reason}")
        terminalreporter.line(
            f"{STRICT_ENV}=1: a skip fails the run unless {self.allow_list} allows it"
            " (install the missing tool, run as root, or add an entry with the reason why)",
            red=True,
            bold=True,
        )
