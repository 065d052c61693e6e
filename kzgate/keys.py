"""Ed25519 key files in PEM: the operator's receipt key and the issuers' public keys.

Messages name the file and what is wrong with it, never any key material:
they end up in logs and in ``check-config`` output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyFileError(ValueError):
    """A key file is missing, unreadable, not PEM, or not the expected kind of key."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {what}: cannot read: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise KeyFileError(f"{path}: {what}: not a PEM file")
    return data


def _kind(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC key ({key.curve.name})"
    kinds = {
        "Ed448": (ed448.Ed448PrivateKey, ed448.Ed448PublicKey),
        "X25519": (x25519.X25519PrivateKey, x25519.X25519PublicKey),
        "X448": (x448.X448PrivateKey, x448.X448PublicKey),
        "DSA": (dsa.DSAPrivateKey, dsa.DSAPublicKey),
    }
    for name, classes in kinds.items():
        if isinstance(key, classes):
            return f"an {name} key"
    return f"a {type(key).__name__}"


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Load an unencrypted Ed25519 private key in PKCS#8 PEM."""
    path = Path(path)
    what = "Ed25519 private key"
    data = _read(path, what)
    if b"ENCRYPTED" in data:
        raise KeyFileError(f"{path}: {what}: encrypted keys are not supported")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # the library's message may quote the input; ours must not
        hint = "; it holds a public key" if b"PUBLIC KEY-----" in data else ""
        raise KeyFileError(f"{path}: {what}: not a readable PKCS#8 private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: {what}: holds {_kind(key)}, not Ed25519")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """Load an Ed25519 public key in SubjectPublicKeyInfo PEM."""
    path = Path(path)
    what = "Ed25519 public key"
    data = _read(path, what)
    if b"PRIVATE KEY-----" in data:
        # refuse rather than derive: a private key must not be shipped as an issuer key
        raise KeyFileError(f"{path}: {what}: holds a private key, expected a public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: {what}: not a readable SubjectPublicKeyInfo key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: {what}: holds {_kind(key)}, not Ed25519")
    return key


def atomic_write(path: Path | str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half.

    The temporary file is created with ``mode`` already set, so a private key is
    never readable by others, not even for a moment.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # the rename is durable only once the directory entry is on disk
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, mode: int, what: str) -> None:
    try:
        atomic_write(path, data, mode)
    except OSError as exc:
        raise KeyFileError(f"{path}: {what}: cannot write: {exc.strerror or exc}") from None


def private_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM, unencrypted, of any private key (devpki writes EC keys with it too)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def save_private_key(key: Ed25519PrivateKey, path: Path | str) -> None:
    """Write ``key`` as PKCS#8 PEM, mode 0600, atomically."""
    _write(Path(path), private_pem(key), PRIVATE_MODE, "Ed25519 private key")


def save_public_key(key: Ed25519PublicKey, path: Path | str) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM, mode 0644, atomically."""
    data = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(Path(path), data, PUBLIC_MODE, "Ed25519 public key")


def generate_keypair(
    private_path: Path | str, public_path: Path | str, *, overwrite: bool = False
) -> None:
    """Create a new Ed25519 key pair in two files.

    Refuses to replace an existing file unless ``overwrite``: losing the
    operator's receipt key by a slip of the command line is not recoverable.
    """
    if not overwrite:
        for path in (Path(private_path), Path(public_path)):
            if path.exists():
                raise KeyFileError(f"{path}: already exists; not overwriting it")
    key = Ed25519PrivateKey.generate()
    save_private_key(key, private_path)
    save_public_key(key.public_key(), public_path)
