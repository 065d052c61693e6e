"""Development key material, so that a fresh checkout runs with ``configs/dev.yaml``.

Never for production: the CA key sits next to the certificates it signs.

TLS keys are ECDSA P-256, not Ed25519, because not every TLS client (browsers,
some curl builds, Go's older stacks) accepts Ed25519 certificates. Task and
receipt signing keys are Ed25519, as the protocol says.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kzgate.keys import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    KeyFileError,
    atomic_write,
    load_private_key,
    private_pem,
    save_private_key,
    save_public_key,
)

# operator: signs receipts; mci, sts: stand-ins for the two issuers' signing keys
ED25519_PAIRS = ("operator", "mci-dev", "sts-dev")
VALIDITY = dt.timedelta(days=825)
BACKDATE = dt.timedelta(hours=1)  # tolerate clocks a little behind ours
RENEW_BEFORE = dt.timedelta(days=1)

_Extensions = Callable[[x509.CertificateBuilder], x509.CertificateBuilder]


def ensure_dev_material(base: Path) -> list[Path]:
    """Create what is missing under ``base``; return the files written.

    A certificate whose key was just created, that no longer chains to the CA
    key on disk, or that is about to expire, is issued again (and returned).
    """
    keys_dir, tls_dir = base / "keys", base / "tls"
    for directory in (keys_dir, tls_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    for name in ED25519_PAIRS:
        written += _ensure_ed25519(keys_dir / f"{name}.key", keys_dir / f"{name}.pub")
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert, ca_written = _ensure_ca(tls_dir, now)
    written += ca_written
    for name, extensions in (("server", _server_extensions), ("client", _client_extensions)):
        written += _ensure_leaf(tls_dir, name, extensions, ca_key, ca_cert, now)
    return written


def _ensure_ed25519(key_path: Path, pub_path: Path) -> list[Path]:
    if key_path.exists():
        if pub_path.exists():
            return []
        save_public_key(load_private_key(key_path).public_key(), pub_path)
        return [pub_path]
    # a public key whose private half is gone is useless: replace it too
    key = Ed25519PrivateKey.generate()
    save_private_key(key, key_path)
    save_public_key(key.public_key(), pub_path)
    return [key_path, pub_path]


def _ec_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The P-256 key at ``path``, created if missing; the flag says it was created."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyFileError(f"{path}: TLS key: not an EC private key")
        return key, False
    key = ec.generate_private_key(ec.SECP256R1())
    atomic_write(path, private_pem(key), PRIVATE_MODE)
    return key, True


def _load_cert(path: Path) -> x509.Certificate | None:
    if not path.exists():
        return None
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM certificate") from None


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _reusable(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    key_created: bool,
    now: dt.datetime,
) -> bool:
    """A certificate on disk is kept if it belongs to the key on disk and is not about to expire."""
    return (
        not key_created and _same_key(cert, key) and cert.not_valid_after_utc - RENEW_BEFORE > now
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.CertificateBuilder:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kzgate development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ensure_ca(
    tls_dir: Path, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, list[Path]]:
    key, key_created = _ec_key(tls_dir / "ca.key")
    cert_path = tls_dir / "ca.crt"
    cert = _load_cert(cert_path)
    if cert is not None and _reusable(cert, key, key_created, now):
        return key, cert, []
    # same key and name as before, so leaves issued earlier still chain to it
    cert = (
        _builder(_name("kzgate development CA"), _name("kzgate development CA"), key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    written = [tls_dir / "ca.key"] if key_created else []
    return key, cert, [*written, cert_path]


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _server_extensions(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    return builder.add_extension(x509.SubjectAlternativeName(names), critical=False).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    )


def _client_extensions(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    return builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )


_COMMON_NAMES = {"server": "localhost", "client": "regulator-dev"}


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ensure_leaf(
    tls_dir: Path,
    name: str,
    extensions: _Extensions,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> list[Path]:
    key_path, cert_path = tls_dir / f"{name}.key", tls_dir / f"{name}.crt"
    key, key_created = _ec_key(key_path)
    cert = _load_cert(cert_path)
    if cert is not None and _reusable(cert, key, key_created, now) and _issued_by(cert, ca_cert):
        return []
    builder = (
        _builder(_name(_COMMON_NAMES[name]), ca_cert.subject, key, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    cert = extensions(builder).sign(ca_key, hashes.SHA256())
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return [key_path, cert_path] if key_created else [cert_path]
