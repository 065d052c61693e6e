"""Shared test helpers: a development PKI, configs, and a regulator that signs and pushes."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import sqlite3
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kzgate.keys import load_private_key
from kzgate.protocol.build import new_task, sign_task
from kzgate.tls import client_context

NOW = dt.datetime(2026, 11, 22, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5)))


def write_config(
    directory: Path, pki: Path, *, api_port: int = 0, metrics_port: int = 0, **sections: Any
) -> Path:
    """A complete config for tests, pointing at ``pki``; ``sections`` override top-level keys."""
    cfg: dict[str, Any] = {
        "operator": {"id": "op-test", "receipt_key": str(pki / "keys/operator.key")},
        "issuers": [
            {
                "id": "mci",
                "name": "Ministry of Culture and Information of the Republic of Kazakhstan",
                "keys": [{"kid": "mci-dev", "public_key": str(pki / "keys/mci-dev.pub")}],
            },
            {
                "id": "sts",
                "name": "State Technical Service",
                "keys": [{"kid": "sts-dev", "public_key": str(pki / "keys/sts-dev.pub")}],
            },
        ],
        "api": {
            "listen": f"127.0.0.1:{api_port}",
            "tls_cert": str(pki / "tls/server.crt"),
            "tls_key": str(pki / "tls/server.key"),
            "client_ca": str(pki / "tls/ca.crt"),
            "max_body_bytes": 16 * 1024 * 1024,
        },
        "dns": {"listen": ["127.0.0.1:0"], "upstreams": []},
        "register": {"path": str(directory / "kzgate.db")},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "log": {"level": "info", "format": "text"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = directory / "kzgate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Regulator:
    """Builds and signs tasks as an issuer would, with its own gapless sequence."""

    pki: Path
    iss: str = "mci"
    kid: str = "mci-dev"
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def key(self) -> Any:
        return load_private_key(self.pki / f"keys/{self.kid}.key")

    def restrict(self, number: str, *targets: str, **extra: Any) -> dict[str, Any]:
        items = [(t.split(":", 1)[0], t.split(":", 1)[1]) for t in targets]
        return self._task(
            "restrict", number, targets=items, ground="Law On Communications, art. 41-1", **extra
        )

    def resume(self, number: str, **extra: Any) -> dict[str, Any]:
        extra.setdefault("applicant", "the owner")
        extra.setdefault("removed_as_of", "2026-11-20")
        return self._task("resume", number, **extra)

    def _task(self, type_: str, number: str, **extra: Any) -> dict[str, Any]:
        date = extra.pop("date", "2026-11-01")
        seq = extra.pop("seq", None) or next(self.seq)
        return new_task(
            iss=extra.pop("iss", self.iss),
            id=extra.pop("id", f"{type_}-{number}-{seq}"),
            seq=seq,
            type=type_,
            authority="Ministry of Culture and Information of the Republic of Kazakhstan",
            number=number,
            date=date,
            issued_at=NOW,
            **extra,
        )

    def sign(self, task: dict[str, Any]) -> bytes:
        return sign_task(task, self.key(), self.kid).encode()


def client_ssl(pki: Path, with_cert: bool = True) -> ssl.SSLContext:
    if with_cert:
        return client_context(pki / "tls/ca.crt", pki / "tls/client.crt", pki / "tls/client.key")
    return client_context(pki / "tls/ca.crt")


def dump_register(db: Path) -> str:
    """Every row of every table, as one string: equal dumps mean nothing changed."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for t in sorted(tables)}
    finally:
        con.close()
    return hashlib.sha256(json.dumps(out, default=repr).encode()).hexdigest()


async def push_task(port: int, pki: Path, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST a signed task to the API on 127.0.0.1:``port`` with the client certificate."""
    import aiohttp

    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"https://127.0.0.1:{port}/v1/tasks",
            data=body,
            headers={"Content-Type": "application/jose"},
        ) as resp,
    ):
        return resp.status, await resp.json()
