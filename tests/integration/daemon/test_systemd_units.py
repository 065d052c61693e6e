"""The systemd unit, sysusers.d and tmpfiles.d files, checked by systemd's own tools.

Needs the Debian package ``systemd`` (systemd-analyze, systemd-sysusers,
systemd-tmpfiles); systemd need not be PID 1. Every check runs offline
against copies in a temporary directory: nothing on the host is changed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kzgate.config import ApiConfig

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "systemd" / "kzgate.service"
SYSUSERS = ROOT / "systemd" / "kzgate.sysusers"
TMPFILES = ROOT / "systemd" / "kzgate.tmpfiles"
EXPOSURE_GOAL = 2.0
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package: systemd)")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def directives(unit: Path) -> dict[tuple[str, str], list[str]]:
    """(section, key) → every value, in order, as systemd reads a unit (no continuations)."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def service(key: str) -> list[str]:
    return directives(UNIT).get(("Service", key), [])


def runnable_copy(unit_text: str, tmp_path: Path) -> Path:
    """The unit in tmp_path, with /usr/bin/kzgate pointing at a stub executable.

    verify checks that every Exec path exists; kzgate is not installed in
    /usr/bin on a development machine or in CI.
    """
    stub = tmp_path / "kzgate-stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / "kzgate.service"
    copy.write_text(unit_text.replace("/usr/bin/kzgate", str(stub)))
    return copy


def verify_findings(unit: Path) -> list[str]:
    """What systemd-analyze verify says about this unit (it exits 0 on mere warnings)."""
    result = run(tool("systemd-analyze"), "verify", str(unit))
    lines = (result.stdout + result.stderr).splitlines()
    mine = [line for line in lines if unit.name in line or str(unit.parent) in line]
    if result.returncode != 0:
        mine.append(f"exit status {result.returncode}: {result.stderr.strip()}")
    return mine


def exposure(unit: Path) -> float:
    result = run(tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit))
    match = EXPOSURE.search(result.stdout + result.stderr)
    assert match, f"no exposure score in:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1))


# --- the unit ------------------------------------------------------------------


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    assert verify_findings(runnable_copy(UNIT.read_text(), tmp_path)) == []


def test_verify_findings_do_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictest")
    broken = broken.replace("Type=notify", "Type=notify\nWatchdogSeconds=30")
    findings = verify_findings(runnable_copy(broken, tmp_path))
    assert any("strictest" in line for line in findings), findings
    assert any("WatchdogSeconds" in line for line in findings), findings


def test_exposure_below_goal(tmp_path: Path) -> None:
    score = exposure(runnable_copy(UNIT.read_text(), tmp_path))
    assert score < EXPOSURE_GOAL, f"systemd-analyze security exposure {score} ≥ {EXPOSURE_GOAL}"


def test_exposure_of_an_unhardened_unit_is_high(tmp_path: Path) -> None:
    # The parser and the scale: the same daemon with no sandboxing scores far worse.
    bare = "[Service]\nType=notify\nExecStart=/usr/bin/kzgate run --config /etc/kzgate/k.yaml\n"
    assert exposure(runnable_copy(bare, tmp_path)) > 8.0


def test_lifecycle_settings() -> None:
    assert service("Type") == ["notify"]
    assert service("NotifyAccess") == ["main"]  # forked DNS workers cannot claim READY
    assert service("ExecStartPre") == ["/usr/bin/kzgate check-config /etc/kzgate/kzgate.yaml"]
    assert service("ExecStart") == ["/usr/bin/kzgate run --config /etc/kzgate/kzgate.yaml"]
    assert service("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert service("Restart") == ["on-failure"]
    assert service("WatchdogSec") == ["30s"]


def test_stop_timeout_outlasts_the_drain() -> None:
    (value,) = service("TimeoutStopSec")
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    default_drain = ApiConfig.__dataclass_fields__["drain_seconds"].default
    assert isinstance(default_drain, float)
    assert int(match.group(1)) > default_drain + 5


def test_privileges_are_exactly_two_capabilities() -> None:
    wanted = {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}
    assert service("User") == ["kzgate"] and service("Group") == ["kzgate"]
    assert {c for v in service("AmbientCapabilities") for c in v.split()} == wanted
    assert {c for v in service("CapabilityBoundingSet") for c in v.split()} == wanted
    assert service("NoNewPrivileges") == ["yes"]


def test_sandbox_settings() -> None:
    for key, value in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("StateDirectory", "kzgate"),
        ("ConfigurationDirectory", "kzgate"),
    ]:
        assert service(key) == [value], key
    families = {f for v in service("RestrictAddressFamilies") for f in v.split()}
    assert families == {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}
    assert service("SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    # EPERM instead of SIGSYS: a library probing a filtered call gets an error, not a kill.
    assert service("SystemCallErrorNumber") == ["EPERM"]


def test_directory_modes_agree_with_tmpfiles() -> None:
    # systemd warns on every start when an existing directory's mode differs.
    modes = {line.split()[1]: line.split()[2] for line in tmpfiles_lines()}
    assert service("ConfigurationDirectoryMode") == [modes["/etc/kzgate"]]
    assert service("StateDirectoryMode") == [modes["/var/lib/kzgate"]]


def test_syscalls_the_daemon_needs_pass_the_filter() -> None:
    # fork (dns.workers), prctl (PR_SET_PDEATHSIG), socketpair, netlink,
    # sqlite's fdatasync, execve of nft, io_uring (uvloop/libuv).
    allowed = resolve_group("@system-service") - (
        resolve_group("@privileged") | resolve_group("@resources")
    )
    needed = {
        "clone", "clone3", "execve", "prctl", "socket", "socketpair", "bind", "setsockopt",
        "sendmsg", "recvmsg", "fdatasync", "fsync", "ftruncate", "pwrite64", "wait4",
        "io_uring_setup", "io_uring_enter", "epoll_pwait", "getrandom", "mremap",
        # a DNS worker: its crash pipe and fault handler, no core after a first
        # crash, /dev/null over inherited descriptors found in /proc/self/fd
        "pipe2", "sigaltstack", "prlimit64", "dup3", "getdents64", "newfstatat",
    }  # fmt: skip
    assert needed - allowed == set()


def resolve_group(group: str) -> set[str]:
    result = run(tool("systemd-analyze"), "syscall-filter", "--no-pager", group)
    assert result.returncode == 0, result.stderr
    names: set[str] = set()
    for line in result.stdout.splitlines()[1:]:
        for word in line.split():
            if word.startswith("#"):
                break
            names |= resolve_group(word) if word.startswith("@") else {word}
    return names


# --- sysusers.d and tmpfiles.d -----------------------------------------------


def tmpfiles_lines() -> list[str]:
    return [
        line
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def make_user(root: Path) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    result = run(tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS))
    assert result.returncode == 0, result.stderr


def test_sysusers_creates_the_system_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    dry = run(tool("systemd-sysusers"), "--dry-run", f"--root={tmp_path}", str(SYSUSERS))
    assert dry.returncode == 0, dry.stderr
    assert "Creating user 'kzgate'" in dry.stdout + dry.stderr
    make_user(tmp_path)
    (entry,) = [
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("kzgate:")
    ]
    uid = int(entry[2])
    assert 0 < uid < 1000  # a system user
    assert entry[5] == "/var/lib/kzgate"
    assert entry[6].endswith("nologin")


def test_sysusers_rejects_a_broken_line(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    broken = tmp_path / "broken.conf"
    broken.write_text('x kzgate - "not a type"\n')
    result = run(tool("systemd-sysusers"), "--dry-run", f"--root={tmp_path}", str(broken))
    assert result.returncode != 0
    assert "Unknown command type" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles must chown: run as root")
def test_tmpfiles_creates_the_directories(tmp_path: Path) -> None:
    make_user(tmp_path)
    result = run(tool("systemd-tmpfiles"), "--create", f"--root={tmp_path}", str(TMPFILES))
    assert result.returncode == 0, result.stderr
    ids = {
        line.split(":")[0]: int(line.split(":")[2])
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
    }
    kzgate_gid = ids["kzgate"]
    kzgate_uid = next(
        int(line.split(":")[2])
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("kzgate:")
    )
    expected = {
        "etc/kzgate": (0o750, 0, kzgate_gid),
        "etc/kzgate/keys": (0o750, 0, kzgate_gid),
        "etc/kzgate/tls": (0o750, 0, kzgate_gid),
        "var/lib/kzgate": (0o750, kzgate_uid, kzgate_gid),
    }
    for rel, (mode, uid, gid) in expected.items():
        st = (tmp_path / rel).stat()
        assert stat.S_ISDIR(st.st_mode), rel
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), rel


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("d /etc/kzgate 0750 root nosuchgroup-kzgate -", "Failed to resolve group"),
        ("d /etc/kzgate 07z0 root root -", "Invalid mode"),
        ("~ /etc/kzgate 0750 root root -", "Unknown command type"),
    ],
)
def test_tmpfiles_rejects_a_broken_line(tmp_path: Path, line: str, complaint: str) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text(line + "\n")
    (tmp_path / "etc").mkdir()
    result = run(tool("systemd-tmpfiles"), "--create", f"--root={tmp_path}", str(broken))
    assert result.returncode != 0
    assert complaint in result.stderr
