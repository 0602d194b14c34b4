"""TLS session resumption belongs to the credentials it was made with. Resuming is allowed and
counted (``tls.*.resumed_total``) while a sidecar's credentials stay the same; once they change
(a new certificate, a trust bundle without some CA) a saved session must not bring back the old
ones: not the sidecar's old certificate, not a client the bundle no longer trusts. A resumed
session whose peer certificate has since expired is refused as ``expired``.

Clients: ``openssl s_client -sess_out``/``-sess_in`` against an inbound listener, and a pair of
``meshproxy run`` sidecars (A → a TCP relay the test can cut → B) whose second connection resumes
the first one's session."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ProxyProcess, Upstream, wait_until
from cryptography import x509
from meshproxy.ca import CertificateAuthority, IssuedCredentials
from pki import CA_TTL, TRUST_DOMAIN, make_ca

FRONTEND = "spiffe://mesh.local/ns/shop/sa/frontend"
FRONTEND_NEXT = "spiffe://mesh.local/ns/shop/sa/frontend-next"
ORDERS = "spiffe://mesh.local/ns/shop/sa/orders"
PEER_IDENTITY = "x-meshproxy-peer-identity"
IDENTITY_CHANGED = "identity files changed: new handshakes use the new credentials"
# One HTTP/1.1 request that asks the server to close: s_client then reads to the end, session
# tickets included, and stops.
REQUEST = "GET /anything HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n"

Upstreams = Callable[[str], Upstream]


# --- a sidecar whose credential files the test rewrites -----------------------------------


class Sidecar:
    """``meshproxy run`` with its credential files in ``folder/certs``, watched for changes."""

    def __init__(self, folder: Path, run: Callable[..., ProxyProcess], leaf: IssuedCredentials,
                 bundle: list[CertificateAuthority], listeners: list[dict[str, Any]],
                 clusters: list[dict[str, Any]], *, watched: bool = True) -> None:
        """``watched``: wait until the file watch is in place (a test that never rewrites the
        files skips it)."""
        self.certs = folder / "certs"
        self.certs.mkdir(parents=True, exist_ok=True)
        self.write_leaf(leaf)
        self.write_bundle(bundle)
        config = {"admin": {"address": "127.0.0.1:0"},
                  "identity": {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                               "bundle": "certs/bundle.pem"},
                  "listeners": listeners, "clusters": clusters}
        path = folder / "meshproxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proxy = run(path)
        if watched:
            self._wait_for_the_watch(bundle)

    def _wait_for_the_watch(self, bundle: list[CertificateAuthority]) -> None:
        """The file watch starts beside the listeners and may miss a change made before it is in
        place: rewrite the bundle as it is until the sidecar reports a reload."""
        for _ in range(30):
            self.write_bundle(bundle)
            try:
                wait_until(lambda: self.changes_applied() > 0, timeout=1, what="the identity watch")
                return
            except TimeoutError:
                continue
        raise TimeoutError("the sidecar never noticed its identity files change")

    def write_leaf(self, leaf: IssuedCredentials) -> None:
        replace_file(self.certs / "key.pem", leaf.key_pem)
        replace_file(self.certs / "cert.pem", leaf.cert_pem)

    def write_bundle(self, cas: list[CertificateAuthority]) -> None:
        replace_file(self.certs / "bundle.pem", b"".join(ca.cert_pem for ca in cas))

    def rotate(self, change: Callable[[], None]) -> None:
        """Apply ``change`` to the files and wait until the sidecar uses them."""
        before = self.changes_applied()
        change()
        wait_until(lambda: self.changes_applied() > before, what="the new credentials to be applied")

    def changes_applied(self) -> int:
        return sum(IDENTITY_CHANGED in line for line in self.proxy.log_lines)

    def tls(self, direction: str) -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(f"http://{self.proxy.admin}/stats", timeout=10).json()
        counts: dict[str, Any] = document["tls"][direction]
        return counts

    def refused(self, direction: str = "inbound") -> dict[str, int]:
        return {reason: n for reason, n in self.tls(direction)["refused"].items() if n}


def replace_file(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, as certificate tooling does."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def inbound_listener() -> dict[str, Any]:
    return {"name": "inbound", "address": "127.0.0.1:0", "tls": "strict", "routes": [{"cluster": "app"}]}


def app_cluster(app: Upstream) -> dict[str, Any]:
    return {"name": "app", "endpoints": [{"address": app.address}]}


class Pki:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ca = make_ca(tmp_path / "mesh-ca", TRUST_DOMAIN, CA_TTL)
        # A second CA of the same trust domain, which B trusts at first and then drops.
        self.other_ca = make_ca(tmp_path / "other-ca", TRUST_DOMAIN, CA_TTL)

    def client_files(self, leaf: IssuedCredentials, name: str) -> tuple[Path, Path]:
        cert, key, _ = leaf.save(self.tmp_path / "clients" / name)
        return Path(cert), Path(key)

    def ca_file(self) -> Path:
        path = self.tmp_path / "mesh-ca.pem"
        path.write_bytes(self.ca.cert_pem)
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def start_b(pki: Pki, run: Callable[..., ProxyProcess], app: Upstream,
            bundle: list[CertificateAuthority] | None = None, leaf: IssuedCredentials | None = None) -> Sidecar:
    return Sidecar(pki.tmp_path / "b", run, leaf or pki.ca.issue(ORDERS), bundle or [pki.ca],
                   [inbound_listener()], [app_cluster(app)], watched=leaf is None)


# --- openssl s_client with a saved session -------------------------------------------------


def s_client(address: str, client: tuple[Path, Path], ca: Path, *session: str | Path) -> subprocess.CompletedProcess[str]:
    """One HTTP/1.1 request over a new TLS connection with ``client``'s certificate; ``session``
    is ``-sess_out FILE`` or ``-sess_in FILE``. Reads until the server closes."""
    cert, key = client
    command = ["openssl", "s_client", "-connect", address, "-cert", str(cert), "-key", str(key), "-CAfile", str(ca),
               "-alpn", "http/1.1", "-ign_eof", *map(str, session)]
    return subprocess.run(command, input=REQUEST, capture_output=True, text=True, timeout=30, check=False)


def served(result: subprocess.CompletedProcess[str]) -> bool:
    return "HTTP/1.1 200" in result.stdout


def reused(result: subprocess.CompletedProcess[str]) -> bool:
    return re.search(r"^Reused, TLSv1\.3", result.stdout, re.M) is not None


def presented_serial(result: subprocess.CompletedProcess[str]) -> int:
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert pem is not None, result.stdout + result.stderr
    return x509.load_pem_x509_certificate(pem.group(0).encode()).serial_number


def serial(leaf: IssuedCredentials) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_pem).serial_number


def test_a_saved_session_resumes_with_unchanged_credentials_and_is_counted(
        pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    b = start_b(pki, meshproxy_run, upstreams("app"))
    client = pki.client_files(pki.ca.issue(FRONTEND), "frontend")
    session = tmp_path / "session.pem"
    first = s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_out", session)
    assert served(first) and not reused(first), first.stdout + first.stderr

    second = s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_in", session)
    assert reused(second) and served(second), second.stdout + second.stderr
    wait_until(lambda: b.tls("inbound")["handshakes_total"] == 2, what="both handshakes to be counted")
    assert b.tls("inbound")["resumed_total"] == 1
    assert b.refused() == {}


def test_a_saved_session_of_a_client_whose_ca_left_the_bundle_is_refused_as_unknown_ca(
        pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    b = start_b(pki, meshproxy_run, upstreams("app"), bundle=[pki.ca, pki.other_ca])
    client = pki.client_files(pki.other_ca.issue(FRONTEND), "other")
    session = tmp_path / "session.pem"
    assert served(s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_out", session))

    b.rotate(lambda: b.write_bundle([pki.ca]))
    again = s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_in", session)
    assert not served(again), again.stdout
    assert not reused(again), again.stdout
    wait_until(lambda: bool(b.refused()), what="the refusal to be counted")
    assert b.refused() == {"unknown_ca": 1}
    assert b.tls("inbound")["resumed_total"] == 0


def test_after_the_sidecar_rotates_its_certificate_a_saved_session_gets_the_new_one(
        pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    b = start_b(pki, meshproxy_run, upstreams("app"))
    client = pki.client_files(pki.ca.issue(FRONTEND), "frontend")
    session = tmp_path / "session.pem"
    assert served(s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_out", session))

    new_leaf = pki.ca.issue(ORDERS)
    b.rotate(lambda: b.write_leaf(new_leaf))
    again = s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_in", session)
    assert served(again), again.stdout + again.stderr
    assert not reused(again), again.stdout
    assert presented_serial(again) == serial(new_leaf)


def test_a_resumed_session_whose_client_certificate_has_since_expired_is_refused_as_expired(
        pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, tmp_path: Path) -> None:
    b = start_b(pki, meshproxy_run, upstreams("app"))
    # Valid for a few seconds: long enough for the first handshake, then the test waits it out.
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    leaf = pki.ca.issue(FRONTEND, not_before=datetime.now(UTC) - timedelta(minutes=1), not_after=expires)
    client = pki.client_files(leaf, "short-lived")
    session = tmp_path / "session.pem"
    first = s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_out", session)
    assert served(first), first.stdout + first.stderr

    wait_until(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), timeout=30, what="the client certificate to expire")
    again = s_client(b.proxy.address("inbound"), client, pki.ca_file(), "-sess_in", session)
    assert not served(again), again.stdout
    wait_until(lambda: bool(b.refused()), what="the refusal to be counted")
    assert b.refused() == {"expired": 1}


# --- a sidecar pair whose connection the test can cut --------------------------------------


class Relay:
    """Forwards TCP connections to ``target``; ``cut`` closes every one open, as a network
    failure would, so the caller's next request needs a new connection (and handshake)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.cut()
        self._listener.close()


class Pair:
    """A (outbound listener → mesh cluster via the relay) → B (strict inbound → app)."""

    def __init__(self, pki: Pki, run: Callable[..., ProxyProcess], app: Upstream,
                 a_ca: CertificateAuthority | None = None, b_leaf: IssuedCredentials | None = None) -> None:
        """``a_ca`` issues A's certificate (by default the mesh CA); both sidecars trust it.
        ``b_leaf``: B's certificate, if not a new one from the mesh CA."""
        self.pki = pki
        a_ca = a_ca or pki.ca
        bundle = [pki.ca] if a_ca is pki.ca else [pki.ca, a_ca]
        self.b = start_b(pki, run, app, bundle=bundle, leaf=b_leaf)
        self.relay = Relay(self.b.proxy.address("inbound"))
        cluster = {"name": "orders", "protocol": "http2", "tls": {"mode": "mesh", "identities": [ORDERS]},
                   "endpoints": [{"address": self.relay.address}]}
        self.a = Sidecar(pki.tmp_path / "a", run, a_ca.issue(FRONTEND), bundle,
                         [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "orders"}]}], [cluster])

    def get(self) -> httpx.Response:
        return httpx.get(f"http://{self.a.proxy.address('outbound')}/anything", timeout=10)

    def reconnect(self) -> None:
        """Cut A's connection to B and wait until A's pool has noticed."""
        self.relay.cut()
        wait_until(lambda: self.open_connections() == 0, what="A's pool to drop the cut connection")

    def open_connections(self) -> int:
        document = httpx.get(f"http://{self.a.proxy.admin}/stats", timeout=10).json()
        count: int = document["clusters"]["orders"]["pool"]["http2_connections"]
        return count


@pytest.fixture
def pair(pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> Iterator[Pair]:
    pair = Pair(pki, meshproxy_run, upstreams("app"))
    yield pair
    pair.relay.close()


def test_a_sidecar_pair_resumes_its_session_on_a_new_connection_and_both_sides_count_it(pair: Pair) -> None:
    assert pair.get().status_code == 200
    pair.reconnect()
    response = pair.get()
    assert response.status_code == 200, response.text
    assert response.json()["headers"][PEER_IDENTITY] == FRONTEND
    assert pair.a.tls("outbound")["handshakes_total"] == 2
    assert pair.a.tls("outbound")["resumed_total"] == 1
    wait_until(lambda: pair.b.tls("inbound")["handshakes_total"] == 2, what="B to count both handshakes")
    assert pair.b.tls("inbound")["resumed_total"] == 1


def test_after_the_caller_rotates_to_a_new_identity_its_peer_sees_the_new_one_on_a_new_connection(pair: Pair) -> None:
    assert pair.get().json()["headers"][PEER_IDENTITY] == FRONTEND
    pair.a.rotate(lambda: pair.a.write_leaf(pair.pki.ca.issue(FRONTEND_NEXT)))
    pair.reconnect()
    response = pair.get()
    assert response.status_code == 200, response.text
    assert response.json()["headers"][PEER_IDENTITY] == FRONTEND_NEXT
    assert pair.a.tls("outbound")["resumed_total"] == 0
    assert pair.b.tls("inbound")["resumed_total"] == 0


def test_after_the_callee_drops_the_callers_ca_a_saved_session_cannot_resume_its_way_in(
        pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> None:
    pair = Pair(pki, meshproxy_run, upstreams("app"), a_ca=pki.other_ca)
    try:
        assert pair.get().status_code == 200
        pair.b.rotate(lambda: pair.b.write_bundle([pki.ca]))
        pair.reconnect()
        assert pair.get().status_code == 502
        wait_until(lambda: bool(pair.b.refused()), what="B's refusal to be counted")
        assert set(pair.b.refused()) == {"unknown_ca"}  # A tries again: each attempt is refused
        assert pair.b.tls("inbound")["resumed_total"] == 0
    finally:
        pair.relay.close()


def test_a_session_resumed_with_a_peer_whose_certificate_has_since_expired_is_refused_as_expired(
        pki: Pki, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> None:
    """The caller's side of the expiry check: B keeps serving with a certificate that has
    expired (it is never rotated), and A's saved session with B must not stand in for the check
    a full handshake would make."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    b_leaf = pki.ca.issue(ORDERS, not_before=datetime.now(UTC) - timedelta(minutes=1), not_after=expires)
    pair = Pair(pki, meshproxy_run, upstreams("app"), b_leaf=b_leaf)
    try:
        assert pair.get().status_code == 200
        wait_until(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), timeout=30,
                   what="B's certificate to expire")
        pair.reconnect()
        assert pair.get().status_code == 502
        # Each attempt is refused: a resumed one by the check, a full one by the verifier.
        assert set(pair.a.refused("outbound")) == {"expired"}
        assert pair.a.tls("outbound")["resumed_total"] == 0
    finally:
        pair.relay.close()
