"""The control plane's CA: made once and kept in the store, pinned by its public key, issuing
SPIFFE certificates for CSRs with the identity it is told (not the CSR's), refusing a CSR whose
signature does not hold."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest
from control_plane import key_and_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from meshcontrol.ca import CaError, CertificateAuthority
from meshcontrol.store.sqlite import SqliteStore
from meshproxy.mesh.join_token import JoinToken

ORDERS = "spiffe://mesh.local/ns/shop/sa/orders"


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "mesh")


def test_the_ca_is_made_on_first_start_and_kept(store: SqliteStore) -> None:
    first = CertificateAuthority.open(store, "mesh.local")
    again = CertificateAuthority.open(store, "mesh.local")
    assert again.bundle_pem() == first.bundle_pem()
    assert again.pin() == first.pin()
    certificate = x509.load_pem_x509_certificate(first.bundle_pem().encode())
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert certificate.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_pin_is_the_sha256_of_the_public_key_as_join_tokens_carry_it(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    spki = x509.load_pem_x509_certificate(ca.bundle_pem().encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ca.pin() == "sha256:" + hashlib.sha256(spki).hexdigest()
    token = JoinToken("id", "secret", "orders", "shop", ca.pin(), 0)
    assert JoinToken.decode(token.encode()).ca_pin == ca.pin()


def test_a_given_ca_is_used_instead_of_the_store(store: SqliteStore, tmp_path: Path) -> None:
    given = CertificateAuthority.create("example.org")
    (tmp_path / "ca.pem").write_text(given.bundle_pem())
    (tmp_path / "ca-key.pem").write_bytes(given.key_pem())
    ca = CertificateAuthority.open(store, "mesh.local", tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    assert ca.pin() == given.pin()
    assert store.ca() is None


def test_a_given_key_of_another_certificate_is_refused(store: SqliteStore, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text(CertificateAuthority.create("mesh.local").bundle_pem())
    (tmp_path / "ca-key.pem").write_bytes(CertificateAuthority.create("mesh.local").key_pem())
    with pytest.raises(CaError, match="ca-key.pem: this key does not belong to"):
        CertificateAuthority.open(store, "mesh.local", tmp_path / "ca.pem", tmp_path / "ca-key.pem")


def test_issue_signs_the_csrs_key_for_the_identity_given_with_the_uri_san_only(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    key_pem, csr_pem = key_and_csr("spiffe://mesh.local/ns/shop/sa/somebody-else")
    cert_pem, not_after = ca.issue(csr_pem, ORDERS, 3600)
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem, None)
    assert certificate.public_key() == key.public_key()
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(ORDERS)]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert int(certificate.not_valid_after_utc.timestamp()) == not_after
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 3600 <= lifetime.total_seconds() <= 3600 + 120  # backdated a minute for clock skew
    certificate.verify_directly_issued_by(ca.certificate)
    assert ca.verify_client(cert_pem.encode()) == ORDERS


def test_a_csr_whose_signature_does_not_hold_is_refused(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    _, csr_pem = key_and_csr(ORDERS)
    csr = x509.load_pem_x509_csr(csr_pem)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CaError, match="the CSR's signature is invalid"):
        ca.issue(tampered, ORDERS, 3600)
    with pytest.raises(CaError, match="not a readable PEM certificate request"):
        ca.issue(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n", ORDERS, 3600)


def test_a_certificate_may_not_outlive_the_ca(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    _, csr_pem = key_and_csr(ORDERS)
    with pytest.raises(CaError, match="would outlive the CA"):
        ca.issue(csr_pem, ORDERS, 20 * 365 * 24 * 3600)


def test_mint_makes_a_key_and_its_certificate(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    cert_pem, key_pem = ca.mint(ORDERS, 600)
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    assert certificate.public_key() == serialization.load_pem_private_key(key_pem.encode(), None).public_key()
    assert ca.verify_client(cert_pem.encode()) == ORDERS


def test_the_server_certificate_names_the_grpc_host_and_loopback(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    cert_pem, _ = ca.server_certificate(["10.1.2.3", "control.example"])
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("10.1.2.3"),
                                                           ipaddress.ip_address("127.0.0.1")}
    assert set(san.get_values_for_type(x509.DNSName)) == {"control.example", "localhost"}


def test_a_client_certificate_of_another_ca_is_refused(store: SqliteStore) -> None:
    ca = CertificateAuthority.open(store, "mesh.local")
    stranger, _ = CertificateAuthority.create("mesh.local").mint(ORDERS, 600)
    with pytest.raises(CaError, match="not issued by this control plane's CA"):
        ca.verify_client(stranger.encode())


def test_an_rsa_csr_is_signed_too(store: SqliteStore) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca = CertificateAuthority.open(store, "mesh.local")
    key = rsa.generate_private_key(65537, 2048)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    cert_pem, _ = ca.issue(csr.public_bytes(serialization.Encoding.PEM), ORDERS, 600)
    assert x509.load_pem_x509_certificate(cert_pem.encode()).public_key() == key.public_key()
