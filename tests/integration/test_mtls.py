"""Mutual TLS between sidecars, with SPIFFE identities, checked with real peers: ``openssl
s_client``, curl, httpx and a pair of ``meshproxy run`` sidecars (A's outbound listener → mTLS
HTTP/2 → B's strict inbound listener → the app). Every refusal is counted under its reason on the
admin API and logged; the app learns the caller's SPIFFE ID from ``x-meshproxy-peer-identity``,
which nobody else can set. Plus ``tls: {mode: tls}`` clusters to an ordinary HTTPS server.

Topology helpers (``Sidecars``) write each sidecar's config and credentials to its own folder,
with identity paths relative to the config file, as an operator would."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ProxyProcess, Upstream, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from meshproxy import Proxy
from meshproxy.ca import CertificateAuthority
from pki import CA_TTL, TRUST_DOMAIN, CredentialFiles, ca_dir, issue, make_ca

FRONTEND = "spiffe://mesh.local/ns/shop/sa/frontend"
ORDERS = "spiffe://mesh.local/ns/shop/sa/orders"
PAYMENTS = "spiffe://mesh.local/ns/shop/sa/payments"
PEER_IDENTITY = "x-meshproxy-peer-identity"

Upstreams = Callable[[str], Upstream]


# --- a mesh of sidecars on loopback --------------------------------------------------------


class Sidecars:
    """Starts ``meshproxy run`` sidecars, each with credentials from one CA written beside its
    config (``NAME/certs/``) and named in the config by relative paths."""

    def __init__(self, tmp_path: Path, run: Callable[..., ProxyProcess]) -> None:
        self.tmp_path = tmp_path
        self.ca = make_ca(tmp_path, TRUST_DOMAIN, CA_TTL)
        self._run = run

    @property
    def bundle(self) -> Path:
        """The CA certificate every sidecar trusts."""
        return ca_dir(self.tmp_path, TRUST_DOMAIN) / "ca.pem"

    def credentials(self, name: str, spiffe_id: str, **kw: Any) -> CredentialFiles:
        # Every sidecar's certificate also names localhost, so curl can check it by name.
        return issue(self.ca, spiffe_id, self.tmp_path / name / "certs", dns_names=["localhost"], **kw)

    def start(self, name: str, spiffe_id: str, *, listeners: list[dict[str, Any]],
              clusters: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> ProxyProcess:
        self.credentials(name, spiffe_id)
        config = {
            "admin": {"address": "127.0.0.1:0"},
            "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                         "bundle": "certs/bundle.pem"},
            "listeners": listeners,
            "clusters": clusters,
        }
        path = self.tmp_path / name / "meshproxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self._run(path, *extra)

    def inbound(self, name: str, spiffe_id: str, app: Upstream, *, tls: str = "strict",
                app_protocol: str = "http1") -> ProxyProcess:
        """A sidecar in front of ``app``: one inbound listener (``tls``) sending everything to it."""
        return self.start(name, spiffe_id, listeners=[listener("inbound", "app", tls=tls)],
                          clusters=[{"name": "app", "protocol": app_protocol, "endpoints": [{"address": app.address}]}])

    def outbound(self, name: str, spiffe_id: str, peer: ProxyProcess, *, identities: list[str],
                 extra: tuple[str, ...] = ()) -> ProxyProcess:
        """A caller's sidecar: a plain-text outbound listener sending everything over mutual TLS
        (HTTP/2) to ``peer``'s inbound listener, which must present one of ``identities``."""
        return self.start(name, spiffe_id, listeners=[listener("outbound", "orders")],
                          clusters=[mesh_cluster("orders", peer.address("inbound"), identities)], extra=extra)


def listener(name: str, cluster: str, *, tls: str = "disable") -> dict[str, Any]:
    return {"name": name, "address": "127.0.0.1:0", "tls": tls, "routes": [{"cluster": cluster}]}


def mesh_cluster(name: str, address: str, identities: list[str]) -> dict[str, Any]:
    return {"name": name, "protocol": "http2", "tls": {"mode": "mesh", "identities": identities},
            "endpoints": [{"address": address}]}


@pytest.fixture
def sidecars(tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess]) -> Sidecars:
    return Sidecars(tmp_path, meshproxy_run)


def stats(proxy: ProxyProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()
    return document


def refused(proxy: ProxyProcess, direction: str = "inbound") -> dict[str, int]:
    """The refusal counters of a sidecar that are not 0."""
    return refused_counts(stats(proxy)["tls"][direction])


def refused_counts(tls_direction: dict[str, Any]) -> dict[str, int]:
    counters: dict[str, int] = tls_direction["refused"]
    return {reason: count for reason, count in counters.items() if count}


def assert_refused_once(proxy: ProxyProcess, reason: str) -> None:
    """The sidecar has refused one inbound connection, counted it under ``reason`` and logged it
    with that reason (the client may notice the refusal before the sidecar has counted it)."""
    wait_until(lambda: bool(refused(proxy)), what="the refusal to be counted")
    assert refused(proxy) == {reason: 1}
    wait_until(lambda: any(re.search(rf"listener 'inbound' refused a connection from 127\.0\.0\.1:\d+: .*\({reason}\)$",
                                     line) for line in proxy.log_lines),
               what=f"a log line for the {reason} refusal")


def mtls_context(client: CredentialFiles, trusted: Path) -> ssl.SSLContext:
    """A client context presenting ``client`` and checking the server's chain against
    ``trusted`` (not its name: a mesh peer is known by its SPIFFE ID, which Python cannot check)."""
    context = ssl.create_default_context(cafile=str(trusted))
    context.check_hostname = False
    context.load_cert_chain(client.cert, client.key)
    return context


def mtls_get(address: str, context: ssl.SSLContext, path: str = "/anything", **kw: Any) -> httpx.Response:
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(f"https://{address}{path}", **kw)


def app_saw(response: httpx.Response) -> dict[str, str]:
    """The request headers the app received (the upstream echoes them)."""
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return headers


def openssl_s_client(address: str, *args: str | Path, wait_for_close: bool = False) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` to ``address`` with no input. ``wait_for_close`` keeps it reading until
    the server closes, so that a refusal the server sends after the handshake (TLS 1.3 checks
    the client's certificate then) is always seen."""
    command = ["openssl", "s_client", "-connect", address, *map(str, args)]
    if wait_for_close:
        command.append("-ign_eof")
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=30, check=False)


def leaf_in(s_client_output: str) -> x509.Certificate:
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", s_client_output, re.S)
    assert pem is not None, s_client_output
    return x509.load_pem_x509_certificate(pem.group(0).encode())


def uri_sans(certificate: x509.Certificate) -> list[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris: list[str] = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris


def handshake_refused(address: str, context: ssl.SSLContext) -> None:
    """A request over a TLS connection made with ``context`` fails: the server refused the
    handshake (with TLS 1.3 the client may only learn so on its first read)."""
    with pytest.raises(httpx.TransportError):
        mtls_get(address, context)


def forged_leaf(ca: CertificateAuthority, out_dir: Path, *, uris: list[str]) -> CredentialFiles:
    """A leaf signed by ``ca`` with the URI SANs given: none (no SPIFFE ID), or a SPIFFE ID of
    another trust domain, which ``CertificateAuthority.issue`` would refuse to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
    names.append(x509.DNSName("client.example"))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CredentialFiles(out_dir / "cert.pem", out_dir / "key.pem", out_dir / "bundle.pem")
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.bundle.write_bytes(ca.cert_pem)
    return files


# --- real clients against a strict inbound listener ----------------------------------------


def test_openssl_with_a_mesh_certificate_completes_the_handshake_and_negotiates_h2(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    client = sidecars.credentials("client", FRONTEND)
    result = openssl_s_client(b.address("inbound"), "-cert", client.cert, "-key", client.key,
                              "-CAfile", client.bundle, "-alpn", "h2,http/1.1", "-verify_return_error")
    assert result.returncode == 0, result.stderr
    assert "ALPN protocol: h2" in result.stdout
    assert "Verify return code: 0 (ok)" in result.stdout
    assert uri_sans(leaf_in(result.stdout)) == [ORDERS]
    wait_until(lambda: stats(b)["tls"]["inbound"]["handshakes_total"] == 1, what="the handshake to be counted")


def test_openssl_without_a_client_certificate_is_refused_as_no_client_certificate(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    result = openssl_s_client(b.address("inbound"), "-CAfile", sidecars.bundle, "-alpn", "h2", wait_for_close=True)
    assert "alert certificate required" in result.stderr, result.stderr
    assert_refused_once(b, "no_client_certificate")
    assert stats(b)["tls"]["inbound"]["handshakes_total"] == 0


def test_curl_with_a_client_certificate_reaches_the_app_over_h2_with_its_identity(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    client = sidecars.credentials("client", FRONTEND)
    port = b.address("inbound").rsplit(":", 1)[1]
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--http2", "--resolve", f"localhost:{port}:127.0.0.1",
         "--cert", str(client.cert), "--key", str(client.key), "--cacert", str(client.bundle),
         "--write-out", "\n%{http_version} %{http_code}", f"https://localhost:{port}/anything"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    body, outcome = result.stdout.rsplit("\n", 1)
    assert outcome == "2 200"  # HTTP/2, negotiated by ALPN, and checked by name against the bundle
    assert json.loads(body)["headers"][PEER_IDENTITY] == FRONTEND


def test_curl_without_a_client_certificate_is_refused(sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    bundle = sidecars.bundle
    port = b.address("inbound").rsplit(":", 1)[1]
    result = subprocess.run(
        ["curl", "--silent", "--resolve", f"localhost:{port}:127.0.0.1", "--cacert", str(bundle),
         f"https://localhost:{port}/anything"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode != 0 and result.stdout == ""
    assert_refused_once(b, "no_client_certificate")


def test_httpx_with_a_client_certificate_passes_its_identity_and_never_a_forged_one(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    client = sidecars.credentials("client", FRONTEND)
    response = mtls_get(b.address("inbound"), mtls_context(client, client.bundle),
                        headers={PEER_IDENTITY: "spiffe://mesh.local/ns/shop/sa/admin"})
    assert app_saw(response)[PEER_IDENTITY] == FRONTEND


# --- a sidecar pair: A outbound → mutual TLS over HTTP/2 → B inbound ------------------------


def test_a_sidecar_pair_tells_the_app_the_callers_identity_and_drops_a_forged_one(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    a = sidecars.outbound("a", FRONTEND, b, identities=[ORDERS])
    forged = httpx.get(f"http://{a.address('outbound')}/anything", headers={PEER_IDENTITY: ORDERS}, timeout=10)
    assert app_saw(forged)[PEER_IDENTITY] == FRONTEND
    assert stats(a)["tls"]["outbound"]["handshakes_total"] == 1
    assert stats(b)["tls"]["inbound"]["handshakes_total"] == 1
    assert stats(a)["identity"]["spiffe_id"] == FRONTEND
    assert stats(b)["identity"]["spiffe_id"] == ORDERS


def test_an_endpoint_presenting_an_identity_the_cluster_does_not_allow_is_refused_with_502(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    a = sidecars.outbound("a", FRONTEND, b, identities=[PAYMENTS])
    response = httpx.get(f"http://{a.address('outbound')}/anything", timeout=10)
    assert response.status_code == 502
    assert response.headers["x-meshproxy-error"] == "connect_failure"
    assert "wrong_identity" in response.text
    outbound = stats(a)["tls"]["outbound"]
    assert set(refused(a, "outbound")) == {"wrong_identity"}  # once per attempt
    assert outbound["handshakes_total"] == 0
    wait_until(lambda: any(f"cluster 'orders': TLS to {b.address('inbound')} refused: the endpoint presented "
                           f"{ORDERS}, not one of {PAYMENTS} (wrong_identity)" in line for line in a.log_lines),
               what="the wrong_identity log line")
    assert stats(b)["listeners"]["inbound"]["requests_total"] == 0


def test_the_mesh_connection_is_multiplexed_200_concurrent_requests_share_one_handshake(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"), app_protocol="http2")
    a = sidecars.outbound("a", FRONTEND, b, identities=[ORDERS], extra=("--workers", "1"))
    # One client connection with 200 streams open at once; each request waits at the app, so
    # all 200 are in flight on the mesh link together.
    result = subprocess.run(["h2load", "-n200", "-c1", "-m200", f"http://{a.address('outbound')}/delay/200"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "200 succeeded, 0 failed" in result.stdout, result.stdout
    assert stats(a)["clusters"]["orders"]["responses"]["2xx"] == 200
    assert stats(a)["tls"]["outbound"]["handshakes_total"] == 1
    assert stats(b)["tls"]["inbound"]["handshakes_total"] == 1


# --- refusals, each counted under its reason -----------------------------------------------


@pytest.mark.parametrize("trust_domain", [
    "elsewhere.local",
    # Every CA `meshproxy ca init` makes for a trust domain has the same subject name: a CA
    # replaced without a rotation, or another mesh's, differs from the trusted one only by key.
    TRUST_DOMAIN,
])
def test_a_client_certificate_from_another_ca_is_refused_as_unknown_ca(
        sidecars: Sidecars, upstreams: Upstreams, tmp_path: Path, trust_domain: str) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    stranger = make_ca(tmp_path / "elsewhere", trust_domain, CA_TTL)
    client = issue(stranger, f"spiffe://{trust_domain}/ns/shop/sa/frontend", tmp_path / "stranger")
    handshake_refused(b.address("inbound"), mtls_context(client, sidecars.bundle))
    assert_refused_once(b, "unknown_ca")


@pytest.mark.parametrize(("reason", "window"), [
    ("expired", (-timedelta(hours=2), -timedelta(hours=1))),
    ("not_yet_valid", (timedelta(hours=1), timedelta(hours=2))),
])
def test_a_client_certificate_outside_its_validity_is_refused(
        sidecars: Sidecars, upstreams: Upstreams, reason: str, window: tuple[timedelta, timedelta]) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    now = datetime.now(UTC)
    client = sidecars.credentials("client", FRONTEND, not_before=now + window[0], not_after=now + window[1])
    handshake_refused(b.address("inbound"), mtls_context(client, client.bundle))
    assert_refused_once(b, reason)


def test_a_client_certificate_without_a_spiffe_id_is_refused_as_no_spiffe_id(
        sidecars: Sidecars, upstreams: Upstreams, tmp_path: Path) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    client = forged_leaf(sidecars.ca, tmp_path / "anonymous", uris=[])
    handshake_refused(b.address("inbound"), mtls_context(client, client.bundle))
    assert_refused_once(b, "no_spiffe_id")


def test_a_client_certificate_from_another_trust_domain_is_refused_as_foreign_trust_domain(
        sidecars: Sidecars, upstreams: Upstreams, tmp_path: Path) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    # Signed by B's own CA, so the chain checks out: only the trust domain is wrong.
    client = forged_leaf(sidecars.ca, tmp_path / "foreign", uris=["spiffe://other.local/ns/shop/sa/frontend"])
    handshake_refused(b.address("inbound"), mtls_context(client, client.bundle))
    assert_refused_once(b, "foreign_trust_domain")


def test_plain_text_on_a_strict_listener_is_refused_as_not_tls(sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{b.address('inbound')}/anything", timeout=10)
    assert_refused_once(b, "not_tls")
    assert stats(b)["listeners"]["inbound"]["requests_total"] == 0


def test_a_sidecar_whose_certificate_is_refused_by_its_peer_gets_502(
        sidecars: Sidecars, upstreams: Upstreams, tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess]) -> None:
    """The refusal seen from the calling sidecar: A's credentials come from a CA B does not
    trust (A trusts B's), so B refuses A's certificate."""
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    stranger = make_ca(tmp_path / "elsewhere", TRUST_DOMAIN, CA_TTL)
    a_dir = tmp_path / "a"
    own = issue(stranger, FRONTEND, a_dir / "certs")
    own.bundle.write_bytes(sidecars.ca.cert_pem + stranger.cert_pem)
    config = {
        "admin": {"address": "127.0.0.1:0"},
        "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                     "bundle": "certs/bundle.pem"},
        "listeners": [listener("outbound", "orders")],
        "clusters": [mesh_cluster("orders", b.address("inbound"), [ORDERS])],
    }
    (a_dir / "meshproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    a = meshproxy_run(a_dir / "meshproxy.yaml")
    response = httpx.get(f"http://{a.address('outbound')}/anything", timeout=10)
    assert response.status_code == 502
    assert response.headers["x-meshproxy-error"] in ("connect_failure", "upstream_failure")
    # Which reason B counts is test_a_client_certificate_from_another_ca_is_refused_as_unknown_ca's concern.
    wait_until(lambda: bool(refused(b)), what="B to count the refusal")
    assert stats(b)["listeners"]["inbound"]["requests_total"] == 0


# --- permissive: mutual TLS and plain text on one port -------------------------------------


def test_a_permissive_listener_serves_plain_text_and_mutual_tls_on_one_port(
        sidecars: Sidecars, upstreams: Upstreams) -> None:
    b = sidecars.inbound("b", ORDERS, upstreams("app"), tls="permissive")
    address = b.address("inbound")
    client = sidecars.credentials("client", FRONTEND)

    plain = httpx.get(f"http://{address}/anything", headers={PEER_IDENTITY: FRONTEND}, timeout=10)
    assert PEER_IDENTITY not in app_saw(plain)  # a plain-text peer has no identity, nor can claim one
    mutual = mtls_get(address, mtls_context(client, client.bundle))
    assert app_saw(mutual)[PEER_IDENTITY] == FRONTEND

    tls = stats(b)["tls"]["inbound"]
    assert tls["handshakes_total"] == 1
    assert sum(tls["refused"].values()) == 0
    assert stats(b)["listeners"]["inbound"]["responses"]["2xx"] == 2


def test_a_permissive_listener_still_refuses_a_bad_client_certificate(
        sidecars: Sidecars, upstreams: Upstreams, tmp_path: Path) -> None:
    """Permissive means "plain text, or mutual TLS that checks out": a TLS client is held to the
    same rules as on a strict listener."""
    b = sidecars.inbound("b", ORDERS, upstreams("app"), tls="permissive")
    stranger = make_ca(tmp_path / "elsewhere", "elsewhere.local", CA_TTL)
    client = issue(stranger, "spiffe://elsewhere.local/ns/shop/sa/frontend", tmp_path / "stranger")
    handshake_refused(b.address("inbound"), mtls_context(client, sidecars.bundle))
    assert_refused_once(b, "unknown_ca")


# --- mode tls: ordinary HTTPS upstreams ----------------------------------------------------


@contextlib.contextmanager
def https_server(cert: Path, key: Path) -> Iterator[tuple[str, list[str | None]]]:
    """A Python ``ssl`` HTTPS server on loopback answering JSON ``{"path": ...}``; yields its
    address and the server names (SNI) its clients sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: server_names.append(name)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1:%d" % server.server_address[1], server_names
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def tls_cluster_config(address: str, ca: Path, sni: str = "localhost") -> dict[str, Any]:
    return {
        "listeners": [listener("outbound", "web")],
        "clusters": [{"name": "web", "tls": {"mode": "tls", "sni": sni, "ca": str(ca)},
                      "endpoints": [{"address": address}]}],
    }


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[CertificateAuthority, str, list[str | None]]]:
    """An HTTPS server whose certificate (for localhost) comes from its own CA."""
    ca = make_ca(tmp_path / "web-ca", "web.local", CA_TTL)
    served = issue(ca, "spiffe://web.local/web", tmp_path / "web", dns_names=["localhost"])
    with https_server(served.cert, served.key) as (address, server_names):
        yield ca, address, server_names


def test_a_tls_cluster_reaches_an_https_server_trusted_through_the_given_ca(
        web_server: tuple[CertificateAuthority, str, list[str | None]], tmp_path: Path) -> None:
    ca, address, server_names = web_server
    ca_file = tmp_path / "web-ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    with Proxy(tls_cluster_config(address, ca_file)) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/hello", timeout=10)
        outbound = proxy.stats()["tls"]["outbound"]
    assert (response.status_code, response.json()) == (200, {"path": "/hello"})
    assert server_names == ["localhost"]
    assert outbound["handshakes_total"] == 1


@pytest.mark.parametrize("trust_domain", ["elsewhere.local", "web.local"])  # the second: a CA of the same name
def test_a_tls_cluster_refuses_a_server_its_ca_did_not_sign_as_unknown_ca(
        web_server: tuple[CertificateAuthority, str, list[str | None]], tmp_path: Path, trust_domain: str) -> None:
    _, address, _ = web_server
    wrong = tmp_path / "wrong-ca.pem"
    wrong.write_bytes(make_ca(tmp_path / "wrong", trust_domain, CA_TTL).cert_pem)
    with Proxy(tls_cluster_config(address, wrong)) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/hello", timeout=10)
        outbound = proxy.stats()["tls"]["outbound"]
    assert response.status_code == 502
    assert response.headers["x-meshproxy-error"] == "connect_failure"
    assert set(refused_counts(outbound)) == {"unknown_ca"}
    assert outbound["handshakes_total"] == 0


def test_a_tls_cluster_refuses_a_server_whose_certificate_does_not_name_the_sni(
        web_server: tuple[CertificateAuthority, str, list[str | None]], tmp_path: Path) -> None:
    ca, address, server_names = web_server
    ca_file = tmp_path / "web-ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    with Proxy(tls_cluster_config(address, ca_file, sni="api.example.com")) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/hello", timeout=10)
        outbound = proxy.stats()["tls"]["outbound"]
    assert response.status_code == 502
    assert 'certificate not valid for name "api.example.com"' in response.text
    assert server_names[0] == "api.example.com"
    assert set(refused_counts(outbound)) == {"handshake"}
    assert outbound["handshakes_total"] == 0
