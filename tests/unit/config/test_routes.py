"""The routes section (issue 13): its defaults, the keys BIRD's config relies on, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzgate.config import ConfigError, RoutesConfig, load_config

MINIMAL = """\
operator: {id: op, receipt_key: k/op.key}
issuers:
  - id: mci
    keys: [{kid: k1, public_key: k/k1.pub}]
api: {tls_cert: t/s.crt, tls_key: t/s.key}
"""


def routes(tmp_path: Path, section: str) -> RoutesConfig:
    return load_config(_write(tmp_path, MINIMAL + section)).routes


def errors_of(tmp_path: Path, section: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL + section))
    return info.value.errors


def test_defaults_are_the_design_cards(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL)).routes
    assert (cfg.enabled, cfg.table, cfg.type, cfg.protocol, cfg.netns) == (
        False, 666, "blackhole", 252, None,
    )  # fmt: skip


def test_the_keys_the_bird_helper_writes(tmp_path: Path) -> None:
    text = "routes: {enabled: true, table: 666, type: blackhole, protocol: 252, netns: kzg-1.h}\n"
    cfg = load_config(_write(tmp_path, MINIMAL + text)).routes
    assert (cfg.enabled, cfg.table, cfg.type, cfg.protocol, cfg.netns) == (
        True, 666, "blackhole", 252, "kzg-1.h",
    )  # fmt: skip


@pytest.mark.parametrize("rtype", ["blackhole", "unreachable", "prohibit"])
def test_each_sink_type(tmp_path: Path, rtype: str) -> None:
    assert routes(tmp_path, f"routes: {{type: {rtype}}}\n").type == rtype


@pytest.mark.parametrize("table", [1, 252, 256, 666, 2**32 - 1])
def test_tables_outside_the_kernels_own(tmp_path: Path, table: int) -> None:
    assert routes(tmp_path, f"routes: {{table: {table}}}\n").table == table


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kzgate.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("routes", "error"),
    [
        ("table: 254", "routes.table: must not be 254: the kernel's main table"),
        ("table: 253", "routes.table: must not be 253: the kernel's default table"),
        ("table: 255", "routes.table: must not be 255: the kernel's local table"),
        ("table: 0", "routes.table: must be an integer 1-4294967295 (got 0)"),
        ("table: 4294967296", "routes.table: must be an integer 1-4294967295 (got 4294967296)"),
        ("table: main", "routes.table: must be an integer 1-4294967295 (got 'main')"),
        (
            "type: throw",
            "routes.type: must be one of blackhole, unreachable, prohibit (got 'throw'",
        ),
        ("protocol: 0", "routes.protocol: must not be 0 (unspec: BIRD skips such routes); 252"),
        ("protocol: 1", "routes.protocol: must not be 1 (redirect: BIRD deletes such routes)"),
        ("protocol: 2", "routes.protocol: must not be 2 (kernel: the kernel's own routes"),
        ("protocol: 3", "routes.protocol: must not be 3 (boot: what `ip route add` uses"),
        ("protocol: 12", "routes.protocol: must not be 12 (bird: BIRD treats such routes as"),
        ("protocol: 256", "routes.protocol: must be an integer 0-255 (got 256)"),
        ("netns: a/b", "routes.netns: must be a network namespace name"),
        ("enabled: yes please", "routes.enabled: must be true or false"),
        ("tabel: 666", "routes.tabel: unknown key"),
    ],
)
def test_refusals_name_the_file_and_the_key(tmp_path: Path, routes: str, error: str) -> None:
    errs = errors_of(tmp_path, f"routes: {{{routes}}}\n")
    assert len(errs) == 1, errs
    assert errs[0].startswith(f"{tmp_path / 'kzgate.yaml'}: {error}"), errs
