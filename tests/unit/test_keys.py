"""Ed25519 key files: round trips, file modes, and errors that name the file but no key material."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kzgate.keys import (
    KeyFileError,
    generate_keypair,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)


def raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_round_trip(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    save_private_key(key, tmp_path / "op.key")
    save_public_key(key.public_key(), tmp_path / "op.pub")
    loaded = load_private_key(tmp_path / "op.key")
    assert raw_private(loaded) == raw_private(key)
    public = load_public_key(str(tmp_path / "op.pub"))
    public.verify(key.sign(b"receipt"), b"receipt")  # raises if the keys do not match
    assert (tmp_path / "op.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "op.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_modes_and_no_temp_files_left(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a.pub").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "a.pub"]
    load_public_key(tmp_path / "a.pub").verify(
        load_private_key(tmp_path / "a.key").sign(b"x"), b"x"
    )


def test_save_replaces_an_existing_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "op.key"
    path.write_text("old")
    path.chmod(0o644)
    key = Ed25519PrivateKey.generate()
    save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert raw_private(load_private_key(path)) == raw_private(key)


def test_generate_keypair_does_not_overwrite(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    before = (tmp_path / "a.key").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(tmp_path / "a.key", tmp_path / "b.pub")
    assert (tmp_path / "a.key").read_bytes() == before
    assert not (tmp_path / "b.pub").exists()
    generate_keypair(tmp_path / "a.key", tmp_path / "a.pub", overwrite=True)
    assert (tmp_path / "a.key").read_bytes() != before


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "nope.key")
    assert str(info.value) == f"{tmp_path / 'nope.key'}: Ed25519 private key: no such file"
    with pytest.raises(KeyFileError, match="no such file"):
        load_public_key(tmp_path / "nope.pub")


def test_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "garbage.key"
    path.write_bytes(b"\x00\x01 not a key")
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(info.value) == f"{path}: Ed25519 private key: not a PEM file"


def test_wrong_kind_of_key(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    (tmp_path / "rsa.key").write_bytes(
        rsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match=r"rsa\.key: Ed25519 private key: holds an RSA key"):
        load_private_key(tmp_path / "rsa.key")
    with pytest.raises(KeyFileError, match=r"holds an EC key \(secp256r1\), not Ed25519"):
        load_public_key(tmp_path / "ec.pub")


def test_private_key_given_as_public_and_back(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    with pytest.raises(KeyFileError, match="holds a private key, expected a public key"):
        load_public_key(tmp_path / "a.key")
    with pytest.raises(KeyFileError, match="not a readable PKCS#8 private key; it holds a public"):
        load_private_key(tmp_path / "a.pub")


def test_encrypted_key_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "enc.key").write_bytes(data)
    with pytest.raises(KeyFileError, match="encrypted keys are not supported"):
        load_private_key(tmp_path / "enc.key")


def test_corrupt_pem_message_carries_no_key_material(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = pem.splitlines()[1]
    broken = pem.replace(body, body[:-6] + "!!!!!!")
    (tmp_path / "bad.key").write_text(broken)
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "bad.key")
    message = str(info.value)
    assert (
        message == f"{tmp_path / 'bad.key'}: Ed25519 private key: not a readable PKCS#8 private key"
    )
    assert body[:10] not in message
    assert info.value.__cause__ is None  # the library's own message is not chained either


def test_unwritable_directory_gives_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"missing/op\.key: Ed25519 private key: cannot write"):
        save_private_key(Ed25519PrivateKey.generate(), tmp_path / "missing" / "op.key")
