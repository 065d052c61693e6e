"""The issuers' public keys, each with its validity window, looked up by ``kid``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kzgate.errors import UnknownKey


def _require_aware(value: datetime | None, what: str) -> None:
    # Naive and aware datetimes cannot be compared; fail at load, not per request.
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must carry a UTC offset")


@dataclass(frozen=True)
class IssuerKey:
    """One key of one issuer; valid from ``not_before`` through ``not_after``."""

    kid: str
    issuer: str
    public_key: Ed25519PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked: bool = False

    def __post_init__(self) -> None:
        _require_aware(self.not_before, f"key {self.kid!r}: not_before")
        _require_aware(self.not_after, f"key {self.kid!r}: not_after")


class TrustStore:
    """An immutable set of issuer keys."""

    def __init__(self, keys: Iterable[IssuerKey]) -> None:
        self._keys: dict[str, IssuerKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise ValueError(f"key id {key.kid!r} configured twice")
            self._keys[key.kid] = key

    def key_for(self, kid: str, now: datetime) -> IssuerKey:
        """The usable key named ``kid`` at ``now``, or raise UnknownKey saying why not."""
        _require_aware(now, "now")
        key = self._keys.get(kid)
        if key is None:
            raise UnknownKey(f"kid {kid!r}: unknown key")
        if key.revoked:
            raise UnknownKey(f"kid {kid!r}: key is revoked")
        if key.not_before is not None and now < key.not_before:
            raise UnknownKey(f"kid {kid!r}: key is not yet valid (from {key.not_before})")
        if key.not_after is not None and now > key.not_after:
            raise UnknownKey(f"kid {kid!r}: key expired (at {key.not_after})")
        return key

    def issuers(self) -> frozenset[str]:
        """Every issuer that has at least one configured key."""
        return frozenset(key.issuer for key in self._keys.values())
