"""The command line as an operator meets it: start-up faults, check-config, task tools, audit."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.kzfixtures import write_config


def kzgate(
    *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kzgate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_check_config_lists_every_error_and_exits_non_zero(tmp_path: Path, pki: Path) -> None:
    config = write_config(tmp_path, pki)
    data = yaml.safe_load(config.read_text())
    data["dns"]["block_mode"] = "blackhole"
    data["api"]["lisen"] = "127.0.0.1:1"
    data["operator"]["receipt_key"] = str(tmp_path / "missing.key")
    config.write_text(yaml.safe_dump(data))
    result = kzgate("check-config", str(config))
    assert result.returncode != 0
    assert "dns.block_mode" in result.stderr and "api.lisen" in result.stderr
    assert str(config) in result.stderr


def test_check_config_names_a_missing_key_file(tmp_path: Path, pki: Path) -> None:
    config = write_config(
        tmp_path, pki, operator={"id": "op", "receipt_key": str(tmp_path / "nope.key")}
    )
    result = kzgate("check-config", str(config))
    assert result.returncode != 0
    assert "operator.receipt_key" in result.stderr and "nope.key" in result.stderr
    assert kzgate("check-config", str(write_config(tmp_path, pki))).returncode == 0


def test_corrupt_register_stops_the_daemon_and_is_not_replaced(tmp_path: Path, pki: Path) -> None:
    config = write_config(tmp_path, pki)
    db = tmp_path / "kzgate.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = kzgate("run", "--config", str(config))
    assert result.returncode != 0
    assert str(db) in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_port_in_use_is_one_clear_line(tmp_path: Path, pki: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = kzgate("run", "--config", str(write_config(tmp_path, pki, api_port=port)))
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_key_file_at_start_names_the_file(tmp_path: Path, pki: Path) -> None:
    config = write_config(tmp_path, pki)
    data = yaml.safe_load(config.read_text())
    data["issuers"][0]["keys"][0]["public_key"] = str(tmp_path / "gone.pub")
    config.write_text(yaml.safe_dump(data))
    result = kzgate("run", "--config", str(config))
    assert result.returncode != 0
    assert "gone.pub" in result.stderr and "Traceback" not in result.stderr


def test_task_new_sign_validate_before_signing(tmp_path: Path, pki: Path) -> None:
    new = kzgate(
        "task",
        "new",
        "--type",
        "restrict",
        "--iss",
        "mci",
        "--id",
        "t1",
        "--seq",
        "1",
        "--number",
        "1",
        "--date",
        "2026-11-01",
        "--target",
        "domain:-bad-.kz",
    )
    assert new.returncode == 0, new.stderr
    signed = kzgate(
        "task", "sign", "--key", str(pki / "keys/mci-dev.key"), "--kid", "mci-dev", stdin=new.stdout
    )
    assert signed.returncode != 0
    assert "targets[0].value" in signed.stderr


def test_audit_verify_and_export(tmp_path: Path, pki: Path) -> None:
    import datetime as dt

    from kzgate.register.store import Register
    from tests.support.register_fixtures import restrict, resume

    config = write_config(tmp_path, pki)
    register = Register.open(tmp_path / "kzgate.db")
    now = dt.datetime.now(dt.UTC)
    register.record(restrict("t1", 1, "1", [("domain", "a.kz")]), now)
    register.record(resume("t2", 2, "1"), now)
    register.close()
    verify = kzgate("audit", "verify", "--config", str(config))
    assert verify.returncode == 0 and "audit chain ok: 4 rows" in verify.stdout, verify
    exported = json.loads(kzgate("audit", "export", "--config", str(config)).stdout)
    assert [row["event"] for row in exported] == [
        "task_received",
        "instruction_activated",
        "task_received",
        "instruction_resumed",
    ]
    csv_out = kzgate("audit", "export", "--config", str(config), "--format", "csv").stdout
    assert len(csv_out.strip().splitlines()) == 5  # header and four rows

    # Break the chain underneath: verify must say where, and exit non-zero.
    import sqlite3

    con = sqlite3.connect(tmp_path / "kzgate.db")
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        con.execute(f'DROP TRIGGER "{name}"')
    con.execute("UPDATE audit SET at = '2000-01-01T00:00:00+00:00' WHERE seq = 2")
    con.commit()
    con.close()
    broken = kzgate("audit", "verify", "--config", str(config))
    assert broken.returncode != 0 and "row 2" in broken.stderr, broken


def test_export_rpz_leaves_out_and_names_a_domain_too_long_for_the_zone(
    tmp_path: Path, pki: Path
) -> None:
    import datetime as dt

    import dns.zone

    from kzgate.register.store import Register
    from tests.support.register_fixtures import restrict

    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 48]) + ".kz"  # 243 characters
    config = write_config(tmp_path, pki)
    register = Register.open(tmp_path / "kzgate.db")
    targets = [("domain", long_name), ("domain", "a.kz")]
    register.record(restrict("t1", 1, "1", targets), dt.datetime.now(dt.UTC))
    register.close()
    out = tmp_path / "rpz.zone"
    result = kzgate("export", "rpz", str(out), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "4 records" in result.stdout
    assert f"not in the zone (owner name over 255 octets): {long_name}" in result.stderr
    zone = dns.zone.from_text(out.read_text(), origin="rpz.kzgate.", relativize=False)
    assert {str(name) for name, _ in zone.items()} == {
        "rpz.kzgate.",
        "a.kz.rpz.kzgate.",
        "*.a.kz.rpz.kzgate.",
    }


def test_nftables_in_a_missing_namespace_is_one_clear_line(tmp_path: Path, pki: Path) -> None:
    nft = {"enabled": True, "netns": "kzg-no-such-namespace"}
    result = kzgate("run", "--config", str(write_config(tmp_path, pki, nftables=nft)))
    assert result.returncode != 0
    assert "nftables" in result.stderr and "kzg-no-such-namespace" in result.stderr
    assert "Traceback" not in result.stderr


async def test_status_summarises_a_running_daemon(tmp_path: Path, pki: Path) -> None:
    from tests.support.daemon_proc import DaemonProcess

    config = write_config(tmp_path, pki, metrics_port=0)
    daemon = DaemonProcess(config)
    await daemon.start()
    try:
        # The metrics listener's port is only known now: point the config at it.
        data = yaml.safe_load(config.read_text())
        data["metrics"]["listen"] = f"127.0.0.1:{daemon.ports['metrics']}"
        config.write_text(yaml.safe_dump(data))
        result = kzgate("status", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "running, ready" in result.stdout
        assert "dns ok" in result.stdout and "dryrun ok" in result.stdout
        assert "last task     none yet" in result.stdout
        assert "not enforced  none" in result.stdout
    finally:
        daemon.kill()
        await daemon.wait()
    stopped = kzgate("status", "--config", str(config))
    assert "NOT RUNNING" in stopped.stdout


def test_unusable_state_directory_is_one_clear_line(tmp_path: Path, pki: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = write_config(tmp_path, pki, register={"path": str(blocker / "kzgate.db")})
    result = kzgate("run", "--config", str(config))
    assert result.returncode != 0
    assert "state directory" in result.stderr and str(blocker) in result.stderr
    assert "Traceback" not in result.stderr
