"""``kzgate verify`` end to end in-process: a fake register (the reads P-daemon adds) and a
fake DNS server as kzgate's own listener; the table, the exit code and the signed report."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord, EDNSOption

from kzgate.cli import build_parser
from kzgate.keys import load_private_key
from kzgate.model import Candidate, InstructionRef, Target
from kzgate.probes import verifycli
from kzgate.probes.report import verify_report
from kzgate.register.state import EffectiveState
from tests.support.dnsfake import FakeDns
from tests.support.kzfixtures import write_config

ACTIVE = InstructionRef("mci", "12", "2026-11-01")
LIFTED = InstructionRef("mci", "7", "2026-10-01")


class FakeRegister:
    """The register reads verify calls, over a real EffectiveState."""

    def __init__(self) -> None:
        self.state = EffectiveState.load([(ACTIVE, [Target("domain", "blocked.kz")])])
        self.closed = False
        self.asked: list[dict[str, Any]] = []
        resumed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        self.candidates = [
            Candidate(Target("domain", "blocked.kz"), ACTIVE),
            Candidate(Target("domain", "open.kz"), LIFTED, resumed_at=resumed),
        ]

    def probe_candidates(
        self, *, resumed_since: dt.datetime, restricted: int, offset: int
    ) -> list[Candidate]:
        self.asked.append({"since": resumed_since, "restricted": restricted, "offset": offset})
        return self.candidates

    def instruction_candidates(self, ref: InstructionRef) -> list[Candidate]:
        return [c for c in self.candidates if c.instruction == ref]

    def all_candidates(self) -> Iterator[Candidate]:
        yield from self.candidates

    def close(self) -> None:
        self.closed = True


class BlockingDns(FakeDns):
    """Answers as kzgate's listener does: NXDOMAIN for a blocked name carries EDE 16."""

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = super().answer(request)
        if reply.header.rcode == RCODE.NXDOMAIN:
            ede = EDNSOption(15, struct.pack("!H", 16) + b"restricted by mci No. 1 of 2026-11-01")
            opts = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
            if opts:
                opts[0].rdata.append(ede)
            else:
                reply.add_ar(EDNS0(udp_len=1232, opts=[ede]))
        return reply


@pytest.fixture
def dns_server() -> Iterator[FakeDns]:
    """A FakeDns on its own loop in a thread (verify runs asyncio.run itself)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = BlockingDns("open.kz. 60 IN A 203.0.113.5\n")
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    yield server
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> FakeRegister:
    fake = FakeRegister()
    monkeypatch.setattr(verifycli, "open_register", lambda cfg: fake)
    return fake


def run(argv: list[str]) -> int:
    args: argparse.Namespace = build_parser().parse_args(["verify", *argv])
    return int(args.func(args))


def config(tmp_path: Path, pki: Path, server: FakeDns) -> Path:
    return write_config(tmp_path, pki, dns={"listen": [f"127.0.0.1:{server.address[1]}"]})


def test_sample_passes_and_writes_a_signed_report(
    tmp_path: Path, pki: Path, dns_server: FakeDns, register: FakeRegister, capsys: Any
) -> None:
    cfg = config(tmp_path, pki, dns_server)
    assert run(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["TARGET", "PLACE", "EXPECTED", "OBSERVED", "OUTCOME"]
    assert any(
        line.split()[0] == "blocked.kz" and line.split()[-2:] == ["NXDOMAIN", "pass"]
        for line in lines
    ), out
    assert any(line.startswith("kzgate-probe-") and line.endswith("pass") for line in lines)
    assert any(line.split()[0] == "open.kz" and "A 203.0.113.5" in line for line in lines)
    assert lines[-1].startswith("3 checks: 3 pass, 0 fail, 0 unreachable; report ")
    (path,) = (tmp_path / "verify").glob("verify-*.json")
    assert str(path) in lines[-1]
    report = json.loads(path.read_text())
    verify_report(report, load_private_key(pki / "keys/operator.key").public_key())
    assert report["scope"] == "sample" and report["operator"] == "op-test"
    assert register.closed and register.asked[0]["restricted"] == 20
    since = register.asked[0]["since"]
    assert dt.timedelta(days=14) < dt.datetime.now(dt.UTC) - since < dt.timedelta(days=40)


def test_a_failed_check_exits_1(
    tmp_path: Path, pki: Path, dns_server: FakeDns, register: FakeRegister, capsys: Any
) -> None:
    dns_server.add("blocked.kz. 60 IN A 203.0.113.66\n")  # the block does not hold
    report = tmp_path / "out" / "r.json"
    assert run(["--config", str(config(tmp_path, pki, dns_server)), "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert any(
        line.split()[0] == "blocked.kz" and line.endswith("fail") and "203.0.113.66" in line
        for line in out.splitlines()
    )
    assert json.loads(report.read_text())["summary"]["fail"] == 1


def test_instruction_and_all(
    tmp_path: Path, pki: Path, dns_server: FakeDns, register: FakeRegister, capsys: Any
) -> None:
    cfg = str(config(tmp_path, pki, dns_server))
    path = tmp_path / "r.json"
    assert run(["--config", cfg, "--instruction", "mci:7/2026-10-01", "--report", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["scope"] == "instruction mci No. 7 of 2026-10-01"
    assert [c["target"] for c in report["checks"]] == ["open.kz"]
    assert run(["--config", cfg, "--all", "--rate", "50", "--report", str(path)]) == 0
    captured = capsys.readouterr()
    assert "did not pass" in captured.out and "targets checked" in captured.err
    assert json.loads(path.read_text())["summary"]["checks"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--instruction", "12"], "expected [ISS:]NUMBER/YYYY-MM-DD"),
        (["--instruction", "12/2026-13-01"], "is not a date"),
        (["--instruction", "12/2026-11-01"], "name the issuer"),  # two issuers configured
        (["--instruction", "mci:99/2026-11-01"], "no such instruction"),
        (["--rate", "0"], "--rate must be a positive number"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path,
    pki: Path,
    dns_server: FakeDns,
    register: FakeRegister,
    capsys: Any,
    argv: list[str],
    message: str,
) -> None:
    assert run(["--config", str(config(tmp_path, pki, dns_server)), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "verify").exists()


def test_config_error_exits_2(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("operator: 1\n")
    assert run(["--config", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_kernel_places_are_skipped_with_a_message_when_the_probe_cannot_open(
    tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kzgate.config import load_config
    from kzgate.probes import kernel, places

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(kernel, "Kernel", refuse)
    cfg = load_config(write_config(tmp_path, pki, nftables={"enabled": True, "hooks": ["output"]}))
    said: list[str] = []
    found, probe = places.places_for(cfg, said.append)
    assert probe is None and found.nft is None and found.routes is None and not found.connect
    kernel_said = [line for line in said if "kernel probe" in line]
    assert kernel_said and "unchecked" in kernel_said[0]
    assert "Operation not permitted" in kernel_said[0]


def test_a_listener_on_port_0_is_not_probed(tmp_path: Path, pki: Path) -> None:
    """The kernel picks that port when the daemon binds: the config cannot say where to ask."""
    from kzgate.config import load_config
    from kzgate.probes import places

    cfg = load_config(write_config(tmp_path, pki, dns={"listen": ["127.0.0.1:0", "[::1]:5353"]}))
    said: list[str] = []
    found, _ = places.places_for(cfg, said.append)
    assert [(hp.host, hp.port) for hp in found.kzgate] == [("::1", 5353)]
    assert said == ["dns.listen 127.0.0.1:0: the daemon's port is not in the config; not checked"]
