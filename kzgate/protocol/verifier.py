"""The one small interface every signature scheme implements.

Adding a scheme (CMS with national PKI certificates, RSA or GOST through an
external verifier) means adding a class here and registering its ``alg``
values; intake does not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Verifier(Protocol):
    """Checks one signature; never raises for a bad one, returns False."""

    algs: frozenset[str]

    def verify(self, public_key: object, signing_input: bytes, signature: bytes) -> bool: ...


class Ed25519Verifier:
    """Ed25519 (RFC 8037 ``EdDSA``; RFC 9864 ``Ed25519``), by ``cryptography``."""

    algs: frozenset[str] = frozenset({"EdDSA", "Ed25519"})

    def verify(self, public_key: object, signing_input: bytes, signature: bytes) -> bool:
        # A key of another type is a mismatch between alg and key, not a crash.
        if not isinstance(public_key, Ed25519PublicKey) or len(signature) != 64:
            return False
        try:
            public_key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True


def _registry(*verifiers: Verifier) -> Mapping[str, Verifier]:
    table: dict[str, Verifier] = {}
    for verifier in verifiers:
        for alg in verifier.algs:
            if alg in table:
                raise ValueError(f"alg {alg!r} registered twice")
            table[alg] = verifier
    return MappingProxyType(table)


# Only what is listed here is accepted; "none" and HMAC algs never are.
VERIFIERS: Mapping[str, Verifier] = _registry(Ed25519Verifier())
