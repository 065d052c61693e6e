"""One wiring function: the enforcers a config asks for, in the order they run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kzgate.config import load_config
from kzgate.enforce.base import StartError
from kzgate.policy import PolicyIndex
from kzgate.wiring import build_enforcers
from tests.support.kzfixtures import write_config

RPZ = {"enabled": True, "listen": ["127.0.0.1:0"], "notify": []}


def names(tmp_path: Path, pki: Path, **sections: Any) -> list[str]:
    cfg = load_config(write_config(tmp_path, pki, **sections))
    return [e.name for e in build_enforcers(cfg, index=PolicyIndex()).enforcers]


def test_the_index_comes_first_and_nftables_off_means_the_dry_run(
    tmp_path: Path, pki: Path
) -> None:
    assert names(tmp_path, pki) == ["dns", "dns-workers", "dryrun"]
    assert names(tmp_path, pki, dns={"enabled": False}) == ["dns", "dryrun"]
    assert names(tmp_path, pki, rpz=RPZ) == ["dns", "dns-workers", "rpz", "dryrun"]
    nft = {"enabled": True, "hooks": ["output"]}
    assert names(tmp_path, pki, rpz=RPZ, nftables=nft) == ["dns", "dns-workers", "rpz", "nft"]
    routes = {"enabled": True, "table": 666, "type": "blackhole", "protocol": 252}
    assert names(tmp_path, pki, nftables=nft, routes=routes) == [
        "dns", "dns-workers", "nft", "routes",
    ]  # fmt: skip


def test_the_dns_workers_are_forked_from_the_index_the_first_enforcer_keeps(
    tmp_path: Path, pki: Path
) -> None:
    index = PolicyIndex()
    cfg = load_config(write_config(tmp_path, pki))
    enforcers = build_enforcers(cfg, index=index)
    assert enforcers["dns"].index is index  # type: ignore[attr-defined]
    assert enforcers["dns-workers"].index is index  # type: ignore[attr-defined]


def test_an_rpz_primary_that_cannot_be_made_is_one_line_naming_the_config(
    tmp_path: Path, pki: Path
) -> None:
    secret = tmp_path / "xfr.tsig"
    secret.write_text("not base64!\n")
    rpz = dict(RPZ, tsig={"name": "k.", "algorithm": "hmac-sha256", "secret_file": str(secret)})
    cfg = load_config(write_config(tmp_path, pki, rpz=rpz))
    with pytest.raises(StartError, match=rf"^{cfg.source}: rpz: rpz.tsig.secret_file: "):
        build_enforcers(cfg, index=PolicyIndex())
