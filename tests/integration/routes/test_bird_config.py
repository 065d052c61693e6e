"""The shipped BIRD configs parse (``bird -p``), and the test helpers read them as they are."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import birdnet


@pytest.mark.parametrize(
    "config", [birdnet.HOST_CONFIG, birdnet.ROUTER_CONFIG], ids=lambda p: p.name
)
def test_bird_parses_the_shipped_config(config: Path) -> None:
    birdnet.require_bird()
    done = subprocess.run(
        [birdnet.which("bird") or "bird", "-p", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def test_bird_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: the host config with its filter's closing brace removed."""
    birdnet.require_bird()
    broken = tmp_path / "broken.conf"
    broken.write_text(birdnet.HOST_CONFIG.read_text().replace("  accept;\n}", "  accept;\n", 1))
    done = subprocess.run(
        [birdnet.which("bird") or "bird", "-p", "-c", str(broken)], capture_output=True, timeout=30
    )
    assert done.returncode != 0


def test_the_templated_configs_parse(tmp_path: Path) -> None:
    """The copies birdnet starts differ only in SITE values and the log file, and still parse."""
    birdnet.require_bird()
    rendered = birdnet.render(
        birdnet.HOST_CONFIG, {"KZGATE_ROUTER_ID": "10.99.0.1", "BORDER_ADDR": "10.99.0.2"},
        tmp_path / "host.log",
    )  # fmt: skip
    original = birdnet.HOST_CONFIG.read_text().splitlines()
    changed = [a for a, b in zip(original, rendered.splitlines(), strict=True) if a != b]
    assert len(changed) == 3, changed
    (tmp_path / "host.conf").write_text(rendered)
    done = subprocess.run(
        [birdnet.which("bird") or "bird", "-p", "-c", str(tmp_path / "host.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def test_render_refuses_a_missing_define(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="NO_SUCH"):
        birdnet.render(birdnet.HOST_CONFIG, {"NO_SUCH": "1"}, tmp_path / "x.log")


def test_parse_routes_reads_birdc_output() -> None:
    text = (
        "BIRD 2.0.12 ready.\n"
        "Table master4:\n"
        "10.66.0.1/32         blackhole [kzgate 10:00:00.000 from 10.99.0.1] * (100/-) [AS65001i]\n"
        "\tType: BGP univ\n"
        "\tBGP.next_hop: 192.0.2.1\n"
        "\tBGP.community: (65535,666) (65535,65281)\n"
        "10.66.0.0/24         unicast [kzgate 10:00:00.000 from 10.99.0.1] * (100/?) [AS65001i]\n"
        "\tBGP.next_hop: 10.99.0.1\n"
    )
    routes = birdnet.parse_routes(text)
    assert routes["10.66.0.1/32"] == birdnet.Route(
        "10.66.0.1/32", "blackhole", frozenset({(65535, 666), (65535, 65281)}), "192.0.2.1"
    )
    assert routes["10.66.0.0/24"].communities == frozenset()
    assert routes["10.66.0.0/24"].dest == "unicast"
