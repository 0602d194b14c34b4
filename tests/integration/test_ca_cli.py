"""``meshproxy ca init`` and ``meshproxy ca issue`` as an operator runs them, with what they
write checked by the real ``openssl`` binary; plus the Python API's expired and not-yet-valid
certificates, and a mutual TLS handshake between two issued workloads."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from pki import CredentialFiles, ca_dir, issue, make_ca

WEB = "spiffe://mesh.local/ns/shop/sa/web"


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshproxy", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=60)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], check=False, capture_output=True, text=True, timeout=30)


def init(out: Path, *extra: str, trust_domain: str = "mesh.local") -> subprocess.CompletedProcess[str]:
    return run_cli("ca", "init", "--trust-domain", trust_domain, "--out", out, *extra)


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*"))


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    result = init(tmp_path / "ca")
    assert result.returncode == 0, result.stderr
    return tmp_path / "ca"


# --- ca init --------------------------------------------------------------------------------


def test_init_writes_a_self_signed_spiffe_ca_and_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    result = init(tmp_path / "ca", "--ttl", "48h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path}/ca/ca.pem and {tmp_path}/ca/ca-key.pem: CA for trust domain "
                                    "'mesh.local', valid until ")
    cert, key = tmp_path / "ca" / "ca.pem", tmp_path / "ca" / "ca-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS8

    assert openssl("verify", "-CAfile", cert, cert).stdout == f"{cert}: OK\n"
    shown = openssl("x509", "-noout", "-subject", "-ext", "basicConstraints,keyUsage,subjectAltName,"
                    "subjectKeyIdentifier", "-in", cert).stdout
    assert "CN = meshproxy CA mesh.local" in shown
    assert "X509v3 Basic Constraints: critical\n    CA:TRUE" in shown
    assert "X509v3 Key Usage: critical\n    Certificate Sign, CRL Sign" in shown
    assert "URI:spiffe://mesh.local\n" in shown
    assert "X509v3 Subject Key Identifier" in shown
    assert "ASN1 OID: prime256v1" in openssl("x509", "-noout", "-text", "-in", cert).stdout

    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == timedelta(hours=48, minutes=1)  # backdated a minute for clock skew


def test_init_refuses_to_replace_an_existing_ca_without_force(ca: Path) -> None:
    before = {path: path.read_bytes() for path in files_under(ca)}
    result = init(ca)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"{ca}/ca.pem: already exists; replacing the CA would make every certificate it issued "
                             "stop verifying; pass --force to replace it, or choose another --out\n")
    assert {path: path.read_bytes() for path in files_under(ca)} == before


def test_init_refuses_when_only_the_key_is_left_over(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca-key.pem").write_text("left over")
    result = init(tmp_path / "ca")
    assert result.returncode == 1
    assert result.stderr.startswith(f"{tmp_path}/ca/ca-key.pem: already exists;")
    assert files_under(tmp_path / "ca") == [tmp_path / "ca" / "ca-key.pem"]


def test_init_with_force_replaces_the_ca(ca: Path) -> None:
    before = (ca / "ca.pem").read_bytes()
    result = init(ca, "--force")
    assert result.returncode == 0, result.stderr
    assert (ca / "ca.pem").read_bytes() != before
    assert (ca / "ca-key.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("trust_domain", "problem"), [
    ("Mesh.local", ("the trust domain contains 'M'; it may use only lowercase letters a-z, digits 0-9, '.', '-' "
                   "and '_'")),
    ("", "the trust domain is empty; it needs at least one of lowercase letters a-z, digits 0-9, '.', '-' and '_'"),
    ("spiffe://mesh.local", "give the trust domain alone, without 'spiffe://': 'mesh.local'"),
])
def test_init_refuses_an_invalid_trust_domain_and_writes_nothing(tmp_path: Path, trust_domain: str,
                                                                 problem: str) -> None:
    result = init(tmp_path / "ca", trust_domain=trust_domain)
    assert result.returncode == 1
    assert result.stderr == f"--trust-domain: {trust_domain!r} is not a valid trust domain: {problem}\n"
    assert not (tmp_path / "ca").exists()


# --- ca issue -------------------------------------------------------------------------------


def test_issue_writes_a_leaf_openssl_verifies_with_the_uri_san_and_a_matching_private_key(ca: Path,
                                                                                         tmp_path: Path) -> None:
    out = tmp_path / "web"
    result = run_cli("ca", "issue", "--ca", ca, "--spiffe-id", WEB, "--out", out, "--dns", "web.shop.svc",
                     "--dns", "*.web.local")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}/cert.pem, {out}/key.pem and {out}/bundle.pem: {WEB}, valid until ")
    cert, key, bundle = out / "cert.pem", out / "key.pem", out / "bundle.pem"

    assert openssl("verify", "-CAfile", bundle, cert).stdout == f"{cert}: OK\n"
    for purpose in ("sslserver", "sslclient"):
        assert openssl("verify", "-purpose", purpose, "-CAfile", bundle, cert).stdout == f"{cert}: OK\n"
    san = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", cert).stdout
    assert san == f"X509v3 Subject Alternative Name: \n    URI:{WEB}, DNS:web.shop.svc, DNS:*.web.local\n"
    key_public = openssl("pkey", "-pubout", "-in", key)
    cert_public = openssl("x509", "-noout", "-pubkey", "-in", cert)
    assert key_public.returncode == cert_public.returncode == 0
    assert key_public.stdout == cert_public.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS8
    assert bundle.read_bytes() == (ca / "ca.pem").read_bytes()


def test_the_leaf_is_a_workload_svid_for_tls_signed_by_the_ca_key(ca: Path, tmp_path: Path) -> None:
    result = run_cli("ca", "issue", "--ca", ca, "--spiffe-id", WEB, "--out", tmp_path / "web", "--ttl", "90s")
    assert result.returncode == 0, result.stderr
    cert = tmp_path / "web" / "cert.pem"
    shown = openssl("x509", "-noout", "-subject", "-ext", "basicConstraints,keyUsage,extendedKeyUsage,"
                    "authorityKeyIdentifier", "-in", cert).stdout
    assert "subject=CN = web\n" in shown  # the service account
    assert "X509v3 Basic Constraints: critical\n    CA:FALSE" in shown
    assert "X509v3 Key Usage: critical\n    Digital Signature\n" in shown
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in shown

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    authority = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(seconds=90 + 60)
    assert leaf.not_valid_before_utc < datetime.now(UTC) - timedelta(seconds=50)


def test_issuing_again_replaces_the_credentials_and_keeps_the_key_private(ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "web"
    assert run_cli("ca", "issue", "--ca", ca, "--spiffe-id", WEB, "--out", out).returncode == 0
    first = (out / "key.pem").read_bytes()
    assert run_cli("ca", "issue", "--ca", ca, "--spiffe-id", WEB, "--out", out).returncode == 0
    assert (out / "key.pem").read_bytes() != first
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    assert [path.name for path in files_under(out)] == ["bundle.pem", "cert.pem", "key.pem"]  # no temporaries left
    assert openssl("verify", "-CAfile", out / "bundle.pem", out / "cert.pem").returncode == 0


@pytest.mark.parametrize(("spiffe_id", "message"), [
    ("mesh.local/ns/shop/sa/web", ("'mesh.local/ns/shop/sa/web' is not a valid SPIFFE ID: it must start with "
                                  "'spiffe://' followed by a trust domain, e.g. "
                                  "'spiffe://example.org/ns/default/sa/web'")),
    ("spiffe://mesh.local/ns//web", ("'spiffe://mesh.local/ns//web' is not a valid SPIFFE ID: the path must not have "
                                    "empty segments ('//'); separate segments with a single '/'")),
    ("spiffe://mesh.local/ns/a b", ("'spiffe://mesh.local/ns/a b' is not a valid SPIFFE ID: the path segment 'a b' "
                                   "contains ' '; path segments may use only letters A-Z and a-z, digits 0-9, "
                                   "'.', '-' and '_'")),
    ("spiffe://mesh.local:443/web", ("'spiffe://mesh.local:443/web' is not a valid SPIFFE ID: it must not have a "
                                    "port (':...') after the trust domain")),
    ("spiffe://mesh.local/web?x=1", ("'spiffe://mesh.local/web?x=1' is not a valid SPIFFE ID: it must not have a "
                                    "query ('?...')")),
    ("spiffe://other.local/ns/shop/sa/web", ("'spiffe://other.local/ns/shop/sa/web' is in trust domain "
                                            "'other.local', but this CA is for 'mesh.local'; use an ID of the form "
                                            "'spiffe://mesh.local/...'")),
    ("spiffe://mesh.local", ("'spiffe://mesh.local' is the trust domain's own ID; a workload certificate needs a "
                            "path, e.g. 'spiffe://mesh.local/ns/default/sa/web'")),
])
def test_issue_refuses_an_unusable_spiffe_id_with_one_line_and_writes_nothing(ca: Path, tmp_path: Path,
                                                                              spiffe_id: str, message: str) -> None:
    result = run_cli("ca", "issue", "--ca", ca, "--spiffe-id", spiffe_id, "--out", tmp_path / "web")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"--spiffe-id: {message}\n"
    assert not (tmp_path / "web").exists()


def test_issue_refuses_a_ttl_that_outlives_the_ca(tmp_path: Path) -> None:
    assert init(tmp_path / "ca", "--ttl", "10h").returncode == 0
    result = run_cli("ca", "issue", "--ca", tmp_path / "ca", "--spiffe-id", WEB, "--out", tmp_path / "web",
                     "--ttl", "11h")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("--ttl: the certificate would be valid until ")
    # The CA was made for 10h a moment ago: 10h are left if that was within the same second, else
    # 9h and change, which rounds down to 9h.
    expiry = _not_after(tmp_path / "ca" / "ca.pem")
    assert re.search(rf", past the CA's own expiry \({expiry}\); the longest ttl this CA can still issue is (9|10)h "
                     r"\(or create a new CA\)\n$", result.stderr), result.stderr
    assert not (tmp_path / "web").exists()
    assert run_cli("ca", "issue", "--ca", tmp_path / "ca", "--spiffe-id", WEB, "--out", tmp_path / "web",
                   "--ttl", "9h").returncode == 0


@pytest.mark.parametrize("ttl", ["1d", "24", "0s", "-5m", "1 h"])
def test_issue_refuses_a_ttl_it_cannot_read_as_a_usage_error(ca: Path, tmp_path: Path, ttl: str) -> None:
    result = run_cli("ca", "issue", "--ca", ca, "--spiffe-id", WEB, "--out", tmp_path / "web", f"--ttl={ttl}")
    assert result.returncode == 2
    assert f"argument --ttl: {ttl!r} is not a valid duration" in result.stderr
    assert not (tmp_path / "web").exists()


def test_issue_names_the_missing_ca_file(tmp_path: Path) -> None:
    result = run_cli("ca", "issue", "--ca", tmp_path / "nowhere", "--spiffe-id", WEB, "--out", tmp_path / "web")
    assert result.returncode == 1
    assert result.stderr == (f"{tmp_path}/nowhere/ca.pem: no such file; expected a PEM certificate here "
                             "(create a CA with 'meshproxy ca init')\n")
    assert not (tmp_path / "web").exists()


def test_issue_refuses_a_ca_whose_key_belongs_to_another_certificate(ca: Path, tmp_path: Path) -> None:
    assert init(tmp_path / "other").returncode == 0
    (ca / "ca-key.pem").write_bytes((tmp_path / "other" / "ca-key.pem").read_bytes())
    result = run_cli("ca", "issue", "--ca", ca, "--spiffe-id", WEB, "--out", tmp_path / "web")
    assert result.returncode == 1
    assert result.stderr == f"{ca}/ca-key.pem: this key does not belong to the certificate in {ca}/ca.pem\n"


# --- the Python API, for tests that need certificates -----------------------------------------


def test_expired_and_not_yet_valid_certificates_from_the_api_are_refused_by_openssl(tmp_path: Path) -> None:
    authority = make_ca(tmp_path)
    now = datetime.now(UTC)
    expired = issue(authority, WEB, tmp_path / "expired", not_before=now - timedelta(days=2),
                    not_after=now - timedelta(days=1))
    early = issue(authority, WEB, tmp_path / "early", not_before=now + timedelta(hours=1),
                  not_after=now + timedelta(hours=2))
    current = issue(authority, WEB, tmp_path / "current")

    assert "certificate has expired" in _verify(expired).stderr
    assert "certificate is not yet valid" in _verify(early).stderr
    assert _verify(current).stdout == f"{current.cert}: OK\n"
    assert (ca_dir(tmp_path) / "ca.pem").read_bytes() == authority.cert_pem


def test_two_issued_workloads_complete_a_mutual_tls_handshake_and_see_each_others_spiffe_id(tmp_path: Path) -> None:
    authority = make_ca(tmp_path)
    server_files = issue(authority, "spiffe://mesh.local/ns/shop/sa/api", tmp_path / "api")
    client_files = issue(authority, WEB, tmp_path / "web")
    server_context = _tls_context(ssl.Purpose.CLIENT_AUTH, server_files)
    client_context = _tls_context(ssl.Purpose.SERVER_AUTH, client_files)
    client_context.check_hostname = False  # peers are named by SPIFFE ID, not host name

    seen_by_server: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                seen_by_server.append(_uris(tls.getpeercert()))
                tls.sendall(b"ok")

        server = threading.Thread(target=serve)
        server.start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_context.wrap_socket(raw) as tls:
            assert tls.recv(2) == b"ok"
            seen_by_client = _uris(tls.getpeercert())
        server.join(timeout=10)
    assert seen_by_server == [[WEB]]
    assert seen_by_client == ["spiffe://mesh.local/ns/shop/sa/api"]


# --- the sidecar stays small ----------------------------------------------------------------


def test_the_cli_loads_cryptography_only_for_the_ca_commands() -> None:
    code = ("import sys\nfrom meshproxy.cli import main\nmain(['version'])\n"
            "print('cryptography' in sys.modules, 'meshproxy.ca' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"


# --- helpers --------------------------------------------------------------------------------


def _verify(files: CredentialFiles) -> subprocess.CompletedProcess[str]:
    return openssl("verify", "-CAfile", files.bundle, files.cert)


def _not_after(cert: Path) -> str:
    moment = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"


def _tls_context(purpose: ssl.Purpose, files: CredentialFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(files.bundle))
    context.load_cert_chain(files.cert, files.key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _uris(peer: object) -> list[str]:
    assert isinstance(peer, dict)
    return [value for kind, value in peer.get("subjectAltName", ()) if kind == "URI"]
