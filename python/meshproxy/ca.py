"""A local certificate authority for a standalone mesh: one self-signed CA per trust domain,
issuing X509-SVIDs (leaf certificates whose URI SAN is a workload's SPIFFE ID) for mutual TLS.

    ca = CertificateAuthority.create("mesh.local", timedelta(days=365))
    ca.save(Path("ca"))
    CertificateAuthority.load(Path("ca")).issue("spiffe://mesh.local/ns/shop/sa/web").save(Path("web"))

Keys are ECDSA P-256 and signatures SHA-256: what every TLS stack accepts, and small.
Refusals raise :class:`CaError`, whose text is the user-facing message.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .spiffe import SpiffeId, parse_spiffe_id, parse_trust_domain

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
BUNDLE_FILE = "bundle.pem"

# Peers' clocks differ by seconds to minutes; a certificate valid only from "now" would be
# refused by a peer whose clock runs a little behind.
CLOCK_SKEW = timedelta(minutes=1)
DEFAULT_CA_TTL = timedelta(hours=8760)
DEFAULT_LEAF_TTL = timedelta(hours=24)

_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*$")


class CaError(ValueError):
    """A refusal: bad input or an unusable CA. The text names the problem and what would be valid;
    ``argument`` names the parameter at fault, when one is, so a command line can name its flag."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class CaExistsError(CaError):
    """Saving would replace an existing CA file."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: already exists; replacing the CA would make every certificate it issued "
                         "stop verifying")
        self.path = path


@dataclass(frozen=True)
class IssuedCredentials:
    """A workload's certificate and key, and the trust bundle to verify its peers with (PEM)."""

    cert_pem: bytes
    key_pem: bytes
    bundle_pem: bytes

    def save(self, directory: Path) -> tuple[Path, Path, Path]:
        """Write ``cert.pem``, ``key.pem`` (mode 0600) and ``bundle.pem``, replacing earlier
        ones; returns their paths in that order."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key, bundle = directory / CERT_FILE, directory / KEY_FILE, directory / BUNDLE_FILE
        # The key first, so a new certificate is never on disk beside the old key.
        _write_atomically(key, self.key_pem, private=True)
        _write_atomically(cert, self.cert_pem)
        _write_atomically(bundle, self.bundle_pem)
        return cert, key, bundle

    @property
    def not_after(self) -> datetime:
        return x509.load_pem_x509_certificate(self.cert_pem).not_valid_after_utc


class CertificateAuthority:
    """A CA certificate and its private key, for one trust domain."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key
        self.trust_domain = _trust_domain_of(certificate)

    # --- making, storing, loading -------------------------------------------------------------

    @classmethod
    def create(cls, trust_domain: str, ttl: timedelta = DEFAULT_CA_TTL) -> CertificateAuthority:
        """A new self-signed CA for ``trust_domain``, valid from a minute ago for ``ttl``."""
        try:
            parse_trust_domain(trust_domain)
        except ValueError as error:
            raise CaError(str(error), argument="trust_domain") from None
        if ttl <= timedelta(0):
            raise CaError(f"the CA's ttl must be positive, got {ttl}", argument="ttl")
        certificate, key = self_signed_ca(trust_domain, ttl, f"meshproxy CA {trust_domain}")
        return cls(certificate, key)

    def save(self, ca_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``ca.pem`` and ``ca-key.pem`` (mode 0600); returns their paths. Without
        ``overwrite``, refuses (writing nothing) when either file exists."""
        cert, key = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
        existing = [path for path in (cert, key) if path.exists()]
        if existing and not overwrite:
            raise CaExistsError(existing[0])
        ca_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(key, self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), private=True)
        _write_atomically(cert, self.cert_pem)
        return cert, key

    @classmethod
    def load(cls, ca_dir: Path) -> CertificateAuthority:
        """The CA saved in ``ca_dir``. Raises CaError naming the file at fault."""
        cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
        cert_pem, key_pem = _read(cert_path, "a PEM certificate"), _read(key_path, "a PEM private key")
        certificate, key = read_ca_pair(cert_pem, key_pem, f"{cert_path}", f"{key_path}")
        try:
            return cls(certificate, key)
        except CaError as error:
            raise CaError(f"{cert_path}: {error}") from None

    # --- what it holds ------------------------------------------------------------------------

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    # --- issuing ------------------------------------------------------------------------------

    def issue(
        self,
        spiffe_id: str | SpiffeId,
        ttl: timedelta = DEFAULT_LEAF_TTL,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        dns_names: Sequence[str] = (),
    ) -> IssuedCredentials:
        """A new key and a leaf certificate for ``spiffe_id``, valid from a minute ago for
        ``ttl``. ``not_before``/``not_after`` set the window outright instead (timezone-aware);
        tests use them for expired and not-yet-valid certificates."""
        identity = self._workload_id(spiffe_id)
        start, end = self._validity(ttl, not_before, not_after)
        for name in dns_names:
            if not _DNS_NAME.match(name) or len(name) > 253:
                raise CaError(f"{name!r} is not a valid DNS name; expected ASCII labels of letters, digits "
                              "and '-' joined by '.', optionally starting with '*.'", argument="dns_names")

        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(identity))]
        names += [x509.DNSName(name) for name in dns_names]
        certificate = sign_workload_certificate(self.certificate, self.key, key.public_key(), names, start, end,
                                                common_name=identity.service_account)
        return IssuedCredentials(
            cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
            bundle_pem=self.cert_pem,
        )

    def _workload_id(self, spiffe_id: str | SpiffeId) -> SpiffeId:
        try:
            identity = spiffe_id if isinstance(spiffe_id, SpiffeId) else parse_spiffe_id(spiffe_id)
        except ValueError as error:
            raise CaError(str(error), argument="spiffe_id") from None
        if not identity.path:
            # X509-SVID spec: a leaf names a workload; the bare trust domain ID names no one.
            raise CaError(f"'{identity}' is the trust domain's own ID; a workload certificate needs a path, "
                          f"e.g. 'spiffe://{identity.trust_domain}/ns/default/sa/web'", argument="spiffe_id")
        if identity.trust_domain != self.trust_domain:
            raise CaError(f"'{identity}' is in trust domain '{identity.trust_domain}', but this CA is for "
                          f"'{self.trust_domain}'; use an ID of the form 'spiffe://{self.trust_domain}/...'",
                          argument="spiffe_id")
        return identity

    def _validity(self, ttl: timedelta, not_before: datetime | None,
                  not_after: datetime | None) -> tuple[datetime, datetime]:
        if ttl <= timedelta(0):
            raise CaError(f"the ttl must be positive, got {ttl}", argument="ttl")
        for name, value in (("not_before", not_before), ("not_after", not_after)):
            if value is not None and value.tzinfo is None:
                raise CaError(f"{name} must be timezone-aware, got {value}", argument=name)
        # The end comes from not_after when given, else from the ttl: blame whichever set it.
        argument = "ttl" if not_after is None else "not_after"
        now = _now()
        start = not_before if not_before is not None else now - CLOCK_SKEW
        end = not_after if not_after is not None else now + ttl
        if end <= start:
            raise CaError(f"the certificate would end ({end:%Y-%m-%d %H:%M:%S}Z) before it starts "
                          f"({start:%Y-%m-%d %H:%M:%S}Z)", argument=argument)
        if end > self.not_after:
            raise CaError(f"the certificate would be valid until {end:%Y-%m-%d %H:%M:%S}Z, past the CA's own expiry "
                          f"({self.not_after:%Y-%m-%d %H:%M:%S}Z); {_longest_ttl(self.not_after - now)}",
                          argument=argument)
        return start, end


# === shared with the control plane's CA (meshcontrol.ca): one rule each ===


def read_ca_pair(cert_pem: bytes, key_pem: bytes, cert_name: str,
                 key_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate and its private key, parsed and checked: a readable certificate, an
    unencrypted ECDSA key that belongs to it, and basicConstraints CA:true. ``cert_name`` and
    ``key_name`` say where each came from (a path), to start the CaError's message."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise CaError(f"{cert_name}: not a readable PEM certificate ({error})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise CaError(f"{key_name}: not a readable unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{key_name}: expected an ECDSA private key, got {type(key).__name__}")
    if key.public_key() != certificate.public_key():
        raise CaError(f"{key_name}: this key does not belong to the certificate in {cert_name}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError(f"{cert_name}: not a CA certificate (basicConstraints CA:true is missing)")
    return certificate, key


def self_signed_ca(trust_domain: str, ttl: timedelta,
                   common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and a self-signed CA certificate for ``trust_domain``, valid from a minute ago
    for ``ttl``. The caller checks its arguments."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshproxy"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        # path_length=0: this CA signs workloads only, never intermediate CAs.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        # The trust domain as a URI SAN: how a loaded CA knows which IDs it may sign.
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def sign_workload_certificate(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey,
                              public_key: CertificatePublicKeyTypes, names: Sequence[x509.GeneralName],
                              start: datetime, end: datetime, *, common_name: str | None) -> x509.Certificate:
    """An X509-SVID for ``public_key``: a client and server leaf named by ``names`` (the SPIFFE
    ID first), with ``common_name`` as its subject when there is one. The caller checks the
    identity and the validity window."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        # RFC 5280 4.2.1.6: with an empty subject the SAN carries the identity and must be critical.
        .add_extension(x509.SubjectAlternativeName(names), critical=not common_name)
        .add_extension(authority_key_identifier(issuer, issuer_key), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def authority_key_identifier(issuer: x509.Certificate,
                             issuer_key: ec.EllipticCurvePrivateKey) -> x509.AuthorityKeyIdentifier:
    """What a certificate signed by ``issuer`` names it by: the issuer's own subject key
    identifier when it has one (so a chain builder matches them), else one made from its key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
              crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


# === helpers ===


def _trust_domain_of(certificate: x509.Certificate) -> str:
    """The trust domain named by a CA certificate's ``spiffe://<trust-domain>`` URI SAN."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    uris = [uri for uri in names.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith("spiffe://")]
    if len(uris) != 1:
        raise CaError(f"expected exactly one 'spiffe://<trust-domain>' URI SAN naming the CA's trust domain, "
                      f"found {len(uris)}")
    try:
        identity = parse_spiffe_id(uris[0])
    except ValueError as error:
        raise CaError(str(error)) from None
    return identity.trust_domain


def _now() -> datetime:
    # Certificates keep whole seconds; dropping the rest keeps comparisons with them exact.
    return datetime.now(UTC).replace(microsecond=0)


def _longest_ttl(remaining: timedelta) -> str:
    """What would still be valid, rounded down to a unit a person would type."""
    seconds = int(remaining.total_seconds())
    if seconds <= 0:
        return "the CA has expired; create a new one with 'meshproxy ca init'"
    unit, size = next(((unit, size) for unit, size in (("h", 3600), ("m", 60)) if seconds >= size), ("s", 1))
    return f"the longest ttl this CA can still issue is {seconds // size}{unit} (or create a new CA)"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaError(f"{path}: no such file; expected {what} here (create a CA with 'meshproxy ca init')") from None
    except OSError as error:
        raise CaError(f"{path}: cannot read: {error.strerror}") from None


def _write_atomically(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``path`` through a temporary file and a rename, so a sidecar reading it never sees
    half a file. Private files are created 0600 and never exist with a wider mode."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp creates 0600; public files get the usual 0644.
        if not private:
            os.fchmod(descriptor, 0o644)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
