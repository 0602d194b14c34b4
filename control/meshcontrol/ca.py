"""The control plane's certificate authority: one self-signed CA (ECDSA P-256) that signs the
sidecars' CSRs with the SPIFFE ID the control plane decides, makes the certificate of its own
gRPC endpoint, and mints key + certificate for Envoy clients (which have no CSR agent).

The CA is made on the first start and kept in the store, or taken from files given
(``--ca-cert/--ca-key``). A join token pins it by the SHA-256 of its SubjectPublicKeyInfo, so
the pin survives a re-issue of the CA certificate with the same key.

Refusals raise :class:`CaError`, whose text is the message the caller shows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
# The sidecar's CA and this one share their checks and certificate shapes, and one CaError
# type, so callers here catch the shared checks' refusals too.
from meshproxy.ca import (CLOCK_SKEW, CaError as CaError, authority_key_identifier, key_usage, read_ca_pair, self_signed_ca,
                          sign_workload_certificate)
from meshproxy.mesh.join_token import ca_pin

from .store.base import Store

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=365)


class CertificateAuthority:
    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key
        self._bundle_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        self._pin = ca_pin(spki)
        self._key_id = authority_key_identifier(certificate, key)

    # --- making and loading -------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, trust_domain: str, cert_path: Path | None = None,
             key_path: Path | None = None) -> CertificateAuthority:
        """The CA given as files, else the one in the store, else a new one (saved to the store)."""
        if (cert_path is None) != (key_path is None):
            raise CaError("--ca-cert and --ca-key go together: give both or neither")
        if cert_path is not None and key_path is not None:
            return cls.from_pem(_read(cert_path), _read(key_path), f"{cert_path}", f"{key_path}")
        kept = store.ca()
        if kept is not None:
            return cls.from_pem(kept[0], kept[1], "the store", "the store's CA key")
        ca = cls.create(trust_domain)
        store.set_ca(ca.certificate.public_bytes(serialization.Encoding.PEM), ca.key_pem())
        return ca

    @classmethod
    def create(cls, trust_domain: str, lifetime: timedelta = CA_LIFETIME) -> CertificateAuthority:
        # The trust domain is also a URI SAN, as `meshproxy ca init` writes it, so this CA
        # also loads where a sidecar's own CA is expected.
        certificate, key = self_signed_ca(trust_domain, lifetime, f"meshproxy control plane CA {trust_domain}")
        return cls(certificate, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, cert_name: str = "the CA certificate",
                 key_name: str = "the CA key") -> CertificateAuthority:
        certificate, key = read_ca_pair(cert_pem, key_pem, cert_name, key_name)
        if certificate.not_valid_after_utc <= _now():
            raise CaError(f"{cert_name}: the CA expired at {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")
        return cls(certificate, key)

    # --- what it holds ------------------------------------------------------------------

    def pin(self) -> str:
        """``sha256:<hex>`` of the CA's SubjectPublicKeyInfo: what a join token carries."""
        return self._pin

    def bundle_pem(self) -> str:
        return self._bundle_pem

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    # --- issuing ------------------------------------------------------------------------

    def issue(self, csr_pem: str | bytes, spiffe_id: str, lifetime_s: int) -> tuple[str, int]:
        """Signs the CSR's key for ``spiffe_id`` (decided by the caller, not by the CSR); returns
        (certificate PEM, not_after in seconds since the epoch)."""
        csr = load_csr(csr_pem)
        public_key = csr.public_key()
        if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise CaError(f"the CSR's key is {type(public_key).__name__.lstrip('_')}; an ECDSA (P-256) or RSA key "
                          "is expected")
        certificate = self._leaf(public_key, spiffe_id, lifetime_s)
        return (certificate.public_bytes(serialization.Encoding.PEM).decode(),
                int(certificate.not_valid_after_utc.timestamp()))

    def mint(self, spiffe_id: str, lifetime_s: int) -> tuple[str, str]:
        """A new key and its certificate for ``spiffe_id``: (certificate PEM, key PEM). For
        clients with no CSR agent (stock Envoy): the key travels over the TLS-protected stream."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._leaf(key.public_key(), spiffe_id, lifetime_s)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()

    def server_certificate(self, hosts: Iterable[str]) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of the control plane's gRPC endpoint, valid for ``hosts``
        (names or IP addresses) and always for localhost and 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
            host = host.strip("[]")
            if not host or host in ("0.0.0.0", "::"):
                continue  # a wildcard bind address is nobody's name
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = _now()
        end = min(now + SERVER_LIFETIME, self.not_after)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshproxy control plane")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(self._key_id, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem

    def _leaf(self, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, spiffe_id: str, lifetime_s: int) -> x509.Certificate:
        if not spiffe_id.startswith("spiffe://"):
            raise CaError(f"{spiffe_id!r} is not a SPIFFE ID")
        if lifetime_s <= 0:
            raise CaError(f"the certificate lifetime must be positive, got {lifetime_s}s")
        now = _now()
        end = now + timedelta(seconds=lifetime_s)
        if end > self.not_after:
            raise CaError(f"a {lifetime_s}s certificate would outlive the CA (valid until "
                          f"{self.not_after:%Y-%m-%d %H:%M:%S}Z); renew the CA")
        # The identity is the URI SAN and nothing else: no DNS names, so a workload
        # certificate cannot pass for a host's.
        return sign_workload_certificate(self.certificate, self.key, public_key,
                                         [x509.UniformResourceIdentifier(spiffe_id)], now - CLOCK_SKEW, end,
                                         common_name=spiffe_id.rsplit("/", 1)[-1])

    # --- checking -----------------------------------------------------------------------

    def verify_client(self, cert: bytes) -> str:
        """The SPIFFE ID of a client certificate (PEM or DER) signed by this CA and valid now.
        Raises CaError saying why it is not acceptable."""
        try:
            leaf = (x509.load_pem_x509_certificate(cert) if cert.lstrip().startswith(b"-----")
                    else x509.load_der_x509_certificate(cert))
        except ValueError as error:
            raise CaError(f"the client certificate is not readable ({error})") from None
        try:
            leaf.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise CaError("the client certificate was not issued by this control plane's CA") from None
        now = _now()
        if not leaf.not_valid_before_utc <= now + CLOCK_SKEW or leaf.not_valid_after_utc <= now:
            start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
            raise CaError(f"the client certificate is not valid now (valid {start:%Y-%m-%d %H:%M:%S}Z to "
                          f"{end:%Y-%m-%d %H:%M:%S}Z)")
        ids = spiffe_ids(leaf)
        if len(ids) != 1:
            raise CaError(f"the client certificate should name exactly one SPIFFE ID, it names {len(ids)}")
        return ids[0]


# === helpers ===


def load_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as error:
        raise CaError(f"the CSR is not a readable PEM certificate request ({error})") from None
    if not csr.is_signature_valid:
        raise CaError("the CSR's signature is invalid: it was not signed by the key it carries")
    return csr


def csr_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """What a CSR asks to be named: its SAN URIs, then its subject common names (DNS names are
    not identities here, and are left out of what is issued anyway)."""
    names = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    return san.get_values_for_type(x509.UniformResourceIdentifier) + names


def spiffe_ids(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [uri for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith("spiffe://")]


def _now() -> datetime:
    # Certificates keep whole seconds; dropping the rest keeps comparisons with them exact.
    return datetime.now(UTC).replace(microsecond=0)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CaError(f"{path}: cannot read: {error.strerror}") from None
