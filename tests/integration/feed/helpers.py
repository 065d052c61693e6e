"""What the feed tests share: the issuer's tasks and trust, a plain HTTPS GET, a head read."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import aiohttp

from kzgate.config.model import FeedConfig
from kzgate.feed.head import Head, verify_head
from kzgate.feed.issuerlog import Signer
from kzgate.keys import load_private_key, load_public_key
from kzgate.protocol.jws import parse_compact
from kzgate.protocol.trust import IssuerKey, TrustStore
from tests.support.kzfixtures import Regulator, client_ssl


def signer(pki: Path, ttl: float = 600.0) -> Signer:
    return Signer(
        "mci", load_private_key(pki / "keys/mci-dev.key"), "mci-dev", dt.timedelta(seconds=ttl)
    )


def trust(pki: Path) -> TrustStore:
    return TrustStore(
        [
            IssuerKey("mci-dev", "mci", load_public_key(pki / "keys/mci-dev.pub")),
            IssuerKey("sts-dev", "sts", load_public_key(pki / "keys/sts-dev.pub")),
        ]
    )


def tasks(pki: Path, first: int, last: int) -> list[bytes]:
    """Signed restricts of mci with seq first..last (the same bytes every call)."""
    regulator = Regulator(pki)
    return [
        regulator.sign(regulator.restrict(f"04-{n}", f"domain:t{n}.kz", seq=n))
        for n in range(first, last + 1)
    ]


def seq_of(body: bytes) -> int:
    return int(json.loads(parse_compact(body).payload)["seq"])


def payload_hash(body: bytes) -> bytes:
    return hashlib.sha256(parse_compact(body).payload).digest()


def read_head(pki: Path, body: bytes) -> Head:
    return verify_head(body, "mci", trust(pki), dt.datetime.now(dt.UTC))


async def get(
    pki: Path, url: str, *, timeout: float = 10.0, **params: object
) -> tuple[int, str, bytes]:
    """(status, content type, body) of a plain GET with the development client cert."""
    connector = aiohttp.TCPConnector(ssl=client_ssl(pki))
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as s,
        s.get(url, params={k: str(v) for k, v in params.items()}) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


def feed_config(
    url: str, pki: Path, *, client_cert: bool = True, ca: Path | None = None
) -> FeedConfig:
    """A FeedConfig for ``url`` with the development CA (or ``ca``) and client certificate."""
    tls = pki / "tls"
    cert, key = (tls / "client.crt", tls / "client.key") if client_cert else (None, None)
    return FeedConfig(url, ca or tls / "ca.crt", cert, key, 30.0, 0.0)
