"""``meshproxy validate`` on configs whose identity credentials are wrong: each mistake is one
``FILE:LINE: identity.FIELD: message`` line on stderr, naming the field to fix and what is wrong
with it, and the exit status is 1. The files are named relative to the config file, as an
operator writes them, and the command runs from another folder."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from meshproxy.ca import CertificateAuthority
from pki import CredentialFiles, issue, make_ca

WORKLOAD = "spiffe://mesh.local/ns/shop/sa/orders"
CA_TTL = timedelta(days=7)  # longer than a leaf's default day (see pki.make_ca)
CONFIG = """\
identity:
  trust_domain: {trust_domain}
  cert: certs/cert.pem
  key: certs/key.pem
  bundle: certs/bundle.pem
listeners:
  - name: inbound
    address: 127.0.0.1:0
    tls: strict
    routes: []
"""
LINE = {"trust_domain": 2, "cert": 3, "key": 4, "bundle": 5}


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshproxy", "validate", str(config)], cwd="/", check=False,
                          capture_output=True, text=True, timeout=60)


class Setup:
    """A config file and good credentials beside it, for a test to spoil one way."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ca = make_ca(tmp_path, "mesh.local", CA_TTL)
        self.files = issue(self.ca, WORKLOAD, tmp_path / "certs")
        self.config = tmp_path / "meshproxy.yaml"
        self.trust_domain = "mesh.local"

    def problem(self, field: str) -> str:
        """What ``validate`` says: exit 1, one line naming the file, line and field."""
        self.config.write_text(CONFIG.format(trust_domain=self.trust_domain))
        result = validate(self.config)
        assert (result.returncode, result.stdout) == (1, ""), result
        prefix = f"{self.config}:{LINE[field]}: identity.{field}: "
        assert result.stderr.startswith(prefix) and result.stderr.count("\n") == 1, result.stderr
        return result.stderr[len(prefix):-1]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_good_credentials_are_valid(setup: Setup) -> None:
    setup.config.write_text(CONFIG.format(trust_domain="mesh.local"))
    result = validate(setup.config)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == f"{setup.config}: valid (1 listeners, 0 routes, 0 clusters)\n"


def test_a_key_that_is_not_the_certificates(setup: Setup) -> None:
    setup.files.key.write_bytes(setup.ca.issue(WORKLOAD).key_pem)
    assert setup.problem("key") == "the private key does not match the certificate's public key"


def test_a_key_file_holding_no_key(setup: Setup) -> None:
    setup.files.key.write_bytes(setup.files.cert.read_bytes())
    assert setup.problem("key").startswith("no private key found (PKCS#8, SEC1 or PKCS#1 PEM expected)")


def _timestamp(when: datetime) -> str:
    """How the message writes a time: `Nov 25 09:00:00 2026 +00:00` (the day maybe padded)."""
    return rf"{when:%b} +{when.day} {when:%H:%M:%S %Y} \+00:00"


def test_an_expired_certificate(setup: Setup) -> None:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    issue(setup.ca, WORKLOAD, setup.tmp_path / "certs", not_before=end - timedelta(hours=1), not_after=end)
    assert re.fullmatch(f"the certificate expired at {_timestamp(end)}", setup.problem("cert"))


def test_a_certificate_not_valid_yet(setup: Setup) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    issue(setup.ca, WORKLOAD, setup.tmp_path / "certs", not_before=start, not_after=start + timedelta(hours=1))
    assert re.fullmatch(f"the certificate is not valid before {_timestamp(start)}", setup.problem("cert"))


def _without_spiffe_id(ca: CertificateAuthority, files: CredentialFiles) -> None:
    """A certificate for a DNS name only, as a web server has, signed by the mesh's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orders.example")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("orders.example")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))


def test_a_certificate_without_a_spiffe_id(setup: Setup) -> None:
    _without_spiffe_id(setup.ca, setup.files)
    assert setup.problem("cert") == "the certificate has no SPIFFE ID (no URI subject alternative name)"


def test_a_certificate_whose_identity_is_outside_the_trust_domain(setup: Setup) -> None:
    setup.trust_domain = "payments.local"
    assert setup.problem("cert") == (f"the certificate's SPIFFE ID {WORKLOAD} is outside the trust domain "
                                     "'payments.local'")


def test_a_certificate_the_bundle_does_not_vouch_for(setup: Setup) -> None:
    setup.files.bundle.write_bytes(make_ca(setup.tmp_path / "other", "other.local", CA_TTL).cert_pem)
    assert setup.problem("cert").startswith("the certificate does not chain to a CA in the bundle: ")


def test_a_bundle_without_certificates(setup: Setup) -> None:
    setup.files.bundle.write_bytes(setup.files.key.read_bytes())
    assert setup.problem("bundle") == "no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)"


@pytest.mark.parametrize(("field", "spoil", "why"), [
    ("cert", Path.unlink, "No such file or directory (os error 2)"),
    ("key", Path.unlink, "No such file or directory (os error 2)"),
    ("bundle", lambda path: (path.unlink(), path.mkdir()), "Is a directory (os error 21)"),
])
def test_an_unreadable_file_is_named_by_its_path_under_the_config_folder(
        setup: Setup, field: str, spoil: Callable[[Path], object], why: str) -> None:
    path: Path = getattr(setup.files, field)
    spoil(path)
    assert setup.problem(field) == f"cannot read '{path}': {why}"


def test_run_refuses_to_start_with_the_same_message(setup: Setup) -> None:
    setup.files.key.write_bytes(setup.ca.issue(WORKLOAD).key_pem)
    setup.config.write_text(CONFIG.format(trust_domain="mesh.local"))
    result = subprocess.run([sys.executable, "-m", "meshproxy", "run", "--config", str(setup.config)], cwd="/",
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"{setup.config}:4: identity.key: the private key does not match the certificate's "
                             "public key\n")
