"""Development PKI: makes only what is missing; the certificates work for mutual TLS."""

from __future__ import annotations

import shutil
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kzgate.config import load_config, missing_files
from kzgate.devpki import ensure_dev_material
from kzgate.keys import load_private_key, load_public_key

REPO = Path(__file__).resolve().parents[2]

ALL_FILES = sorted(
    [
        "keys/operator.key", "keys/operator.pub", "keys/mci-dev.key", "keys/mci-dev.pub",
        "keys/sts-dev.key", "keys/sts-dev.pub", "tls/ca.crt", "tls/ca.key",
        "tls/server.crt", "tls/server.key", "tls/client.crt", "tls/client.key",
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dev")
    ensure_dev_material(base)
    return base


def cert(base: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((base / "tls" / f"{name}.crt").read_bytes())


def rel(base: Path, paths: list[Path]) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in paths)


def test_creates_everything_then_nothing(tmp_path: Path) -> None:
    assert rel(tmp_path, ensure_dev_material(tmp_path)) == ALL_FILES
    snapshot = {f: (tmp_path / f).read_bytes() for f in ALL_FILES}
    assert ensure_dev_material(tmp_path) == []
    assert {f: (tmp_path / f).read_bytes() for f in ALL_FILES} == snapshot


def test_private_keys_are_0600(pki: Path) -> None:
    for name in ALL_FILES:
        mode = stat.S_IMODE((pki / name).stat().st_mode)
        assert (mode == 0o600) == name.endswith(".key"), (name, oct(mode))


def test_signing_keys_are_ed25519_pairs(pki: Path) -> None:
    for name in ("operator", "mci-dev", "sts-dev"):
        private = load_private_key(pki / f"keys/{name}.key")
        load_public_key(pki / f"keys/{name}.pub").verify(private.sign(b"m"), b"m")


def test_only_missing_pieces_are_made(tmp_path: Path) -> None:
    ensure_dev_material(tmp_path)
    key_before = (tmp_path / "keys/mci-dev.key").read_bytes()
    server_before = (tmp_path / "tls/server.crt").read_bytes()
    (tmp_path / "keys/mci-dev.pub").unlink()
    (tmp_path / "tls/ca.crt").unlink()
    assert rel(tmp_path, ensure_dev_material(tmp_path)) == ["keys/mci-dev.pub", "tls/ca.crt"]
    assert (tmp_path / "keys/mci-dev.key").read_bytes() == key_before
    load_public_key(tmp_path / "keys/mci-dev.pub").verify(
        load_private_key(tmp_path / "keys/mci-dev.key").sign(b"m"), b"m"
    )
    # the new CA certificate has the old key and name, so the old server certificate still chains
    assert (tmp_path / "tls/server.crt").read_bytes() == server_before
    cert(tmp_path, "server").verify_directly_issued_by(cert(tmp_path, "ca"))


def test_new_ca_key_reissues_the_leaves(tmp_path: Path) -> None:
    ensure_dev_material(tmp_path)
    client_key = (tmp_path / "tls/client.key").read_bytes()
    (tmp_path / "tls/ca.key").unlink()
    assert rel(tmp_path, ensure_dev_material(tmp_path)) == [
        "tls/ca.crt", "tls/ca.key", "tls/client.crt", "tls/server.crt",
    ]  # fmt: skip
    assert (tmp_path / "tls/client.key").read_bytes() == client_key
    for name in ("server", "client"):
        cert(tmp_path, name).verify_directly_issued_by(cert(tmp_path, "ca"))


def test_certificate_profiles(pki: Path) -> None:
    ca, server, client = cert(pki, "ca"), cert(pki, "server"), cert(pki, "client")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    server_eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    client_eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(server_eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(client_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["regulator-dev"]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    days = (server.not_valid_after_utc - server.not_valid_before_utc).days
    assert days == 825  # 825 days and one hour
    for c in (server, client):
        c.verify_directly_issued_by(ca)
        assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> None:
    """A full TLS handshake in memory; raises ssl.SSLError if either side refuses."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, out_bio, peer_in in (
            ("client", client, c_out, s_in),
            ("server", server, s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out_bio.read())
        if all(done.values()):
            # TLS 1.3: the server learns of a rejected client cert only on the next read
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


def contexts(pki: Path, *, client_cert: str | None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    tls = pki / "tls"
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    server_ctx.load_verify_locations(tls / "ca.crt")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(tls / "ca.crt")
    if client_cert:
        client_ctx.load_cert_chain(tls / f"{client_cert}.crt", tls / f"{client_cert}.key")
    return server_ctx, client_ctx


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_mutual_tls_handshake(pki: Path, hostname: str) -> None:
    handshake(*contexts(pki, client_cert="client"), hostname)


def test_server_name_is_checked(pki: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(*contexts(pki, client_cert="client"), "example.kz")


def test_server_cert_is_not_a_client_cert(pki: Path) -> None:
    with pytest.raises(ssl.SSLError, match="unsuitable certificate purpose"):
        handshake(*contexts(pki, client_cert="server"), "localhost")


def test_client_without_certificate_is_refused(pki: Path) -> None:
    with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
        handshake(*contexts(pki, client_cert=None), "localhost")


def test_dev_yaml_references_exactly_what_devpki_makes(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs/dev.yaml", tmp_path / "configs/dev.yaml")
    cfg = load_config(tmp_path / "configs/dev.yaml")
    assert len(missing_files(cfg)) == 6
    ensure_dev_material(tmp_path / "var/dev")
    assert missing_files(cfg) == []
    assert cfg.register.path == tmp_path / "var/kzgate.db"
