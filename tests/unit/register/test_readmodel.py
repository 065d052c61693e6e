"""The register's read side: what the API, the status and the scrape ask, on the register thread."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from kzgate.model import InstructionRef
from kzgate.register.readmodel import RegisterReader
from kzgate.register.store import Register
from kzgate.register.thread import RegisterThread
from tests.support.register_fixtures import T0, restrict

REF = InstructionRef("mci", "77-1", "2026-11-01")


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[RegisterReader]:
    register = Register.open(tmp_path / "kzgate.db")
    thread = RegisterThread()
    targets = [("domain", "a.kz"), ("cidr", "10.0.0.0/24"), ("url", "https://a.kz/x")]
    await thread.run(register.record, restrict("t-1", 1, "77-1", targets), T0)
    await thread.run(register.record, restrict("t-4", 4, "77-4", [("domain", "b.kz")]), T0)
    yield RegisterReader(register, thread)
    await thread.run(register.close)
    thread.shutdown()


async def test_lookups_name_the_instructions_behind_a_verdict(reader: RegisterReader) -> None:
    assert await reader.covering_name("www.a.kz") == [("a.kz", REF)]
    assert await reader.covering_name("c.kz") == []
    assert await reader.covering_ip("10.0.0.5") == [(ipaddress.ip_network("10.0.0.0/24"), REF)]
    assert await reader.covering_ip("10.0.1.5") == []


async def test_instructions_are_listed_oldest_first(reader: RegisterReader) -> None:
    rows = await reader.instructions(status="active", limit=10, offset=0, targets_limit=1)
    assert [(r["number"], r["targets_total"], len(r["targets"])) for r in rows] == [
        ("77-1", 3, 1),
        ("77-4", 1, 1),
    ]
    assert await reader.instructions(status="resumed", limit=10, offset=0, targets_limit=1) == []


async def test_the_stored_state_gauges_follow_a_refresh(reader: RegisterReader) -> None:
    registry = CollectorRegistry()
    for collector in reader.collectors():
        registry.register(collector)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("kzgate_instructions_active") == 0  # nothing read yet
    await reader.refresh(["mci", "sts"])
    assert value("kzgate_instructions_active") == 2
    assert value("kzgate_targets_active", kind="domain") == 2
    assert value("kzgate_targets_active", kind="url") == 1
    assert value("kzgate_targets_active", kind="app") == 0
    assert value("kzgate_seq_gaps", issuer="mci") == 2  # 2 and 3 are missing
    assert value("kzgate_seq_gaps", issuer="sts") == 0  # configured, nothing missing
