"""The metric pattern: families declared once in kzgate/metrics.py, values reach them one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from kzgate import metrics
from kzgate.metrics import APPLY_BUCKETS, TASK_APPLY_SECONDS, TASKS, Counts, Family, Timings

PACKAGE = Path(metrics.__file__).parent


def exposition(*collectors: object) -> list[str]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_timings_expose_what_the_client_librarys_histogram_would() -> None:
    ours = Timings(TASK_APPLY_SECONDS)
    theirs = Histogram(
        TASK_APPLY_SECONDS.name,
        TASK_APPLY_SECONDS.help,
        buckets=APPLY_BUCKETS,
        registry=None,
    )
    # zero, on a bound (le: counted in it), between bounds, past the last
    for seconds in (0.0, 0.001, 0.0011, 0.0025, 0.3, 10.0, 10.5, 1e6):
        ours.observe(seconds)
        theirs.observe(seconds)
    assert exposition(ours) == exposition(theirs)


def test_counts_expose_what_the_client_librarys_counter_would() -> None:
    ours = Counts(TASKS)
    theirs = Counter(TASKS.name, TASKS.help, TASKS.labels, registry=None)
    for labels in [("restrict", "applied")] * 3 + [("unknown", "bad_signature")]:
        ours.inc(*labels)
        theirs.labels(*labels).inc()
    assert sorted(exposition(ours)) == sorted(exposition(theirs))
    assert ours.value("restrict", "applied") == 3 and ours.value("resume", "applied") == 0


def test_zeros_are_exported_before_the_first_event() -> None:
    family = Family("kzgate_x", "X.", "counter", ("enforcer",))
    assert 'kzgate_x_total{enforcer="dns"} 0.0' in exposition(Counts(family, [("dns",)]))


def test_a_family_refuses_values_of_another_kind() -> None:
    with pytest.raises(TypeError):
        TASKS.histogram({})
    with pytest.raises(TypeError):
        TASK_APPLY_SECONDS.metric({})


def declared_families() -> list[Family]:
    return [value for value in vars(metrics).values() if isinstance(value, Family)]


def test_every_family_is_declared_once_with_a_name_of_the_contract() -> None:
    families = declared_families()
    names = [family.name for family in families]
    assert len(names) == len(set(names)) and len(names) >= 20
    for family in families:
        assert family.name.startswith("kzgate_"), family.name
        if family.kind == "counter":
            assert not family.name.endswith("_total"), f"{family.name}: _total is added"
        assert (family.kind == "histogram") == bool(family.buckets), family.name


def test_no_other_module_names_a_metric_or_speaks_to_the_client_library() -> None:
    """Metric names live in metrics.py only; so does prometheus_client (re-exported types)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "metrics.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith("kzgate_"), f"{path}: {node.value!r}"
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                modules += [alias.name for alias in getattr(node, "names", [])]
                assert not any(m.startswith("prometheus_client") for m in modules), path
