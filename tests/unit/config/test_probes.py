"""The probes section (issue 14): its defaults, its keys, refusals naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzgate.config import ConfigError, HostPort, ProbesConfig, load_config

MINIMAL = """\
operator: {id: op, receipt_key: k/op.key}
issuers:
  - id: mci
    keys: [{kid: k1, public_key: k/k1.pub}]
api: {tls_cert: t/s.crt, tls_key: t/s.key}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kzgate.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def probes(tmp_path: Path, section: str) -> ProbesConfig:
    return load_config(_write(tmp_path, MINIMAL + section)).probes


def test_defaults_are_the_designs(tmp_path: Path) -> None:
    cfg = probes(tmp_path, "")
    assert (cfg.enabled, cfg.resolvers, cfg.interval, cfg.sample) == (False, (), 60.0, 20)


def test_every_key(tmp_path: Path) -> None:
    text = (
        "probes: {enabled: true, resolvers: [10.0.0.53:53, '[::1]:5301'], interval: 5, sample: 3}\n"
    )
    cfg = probes(tmp_path, text)
    assert cfg == ProbesConfig(
        enabled=True,
        resolvers=(HostPort("10.0.0.53", 53), HostPort("::1", 5301)),
        interval=5.0,
        sample=3,
    )


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("interval: 0", "probes.interval: must be a number >= 1 (got 0)"),
        ("sample: 0", "probes.sample: must be an integer 1-10000 (got 0)"),
        ("sample: many", "probes.sample: must be an integer 1-10000 (got 'many')"),
        ("enabled: maybe", "probes.enabled:"),
        ("resolvers: [nonsense]", "probes.resolvers[0]:"),
        ("resolvers: [10.0.0.1:53, 10.0.0.1:53]", "probes.resolvers: lists a resolver twice"),
        ("rounds: 3", "probes.rounds:"),
    ],
)
def test_refusals_name_the_file_and_the_key(tmp_path: Path, section: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL + f"probes: {{{section}}}\n"))
    assert any(str(tmp_path / "kzgate.yaml") in e and error in e for e in info.value.errors), (
        info.value.errors
    )
