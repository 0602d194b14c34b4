"""Credential rotation under load: two ``meshproxy run`` sidecars (A → mutual TLS over HTTP/2 →
B → the app) whose certificate, key and bundle files are replaced while client threads keep
sending requests, through A and over fresh mTLS connections to each sidecar. No request may fail;
new handshakes show the new certificate (``openssl s_client`` sees its serial, the admin API its
``identity.not_after``). A CA rotation goes bundle old+new → leaves from the new CA → bundle new
only. A bad set is refused, logged, and the old credentials keep serving. ``Proxy.set_identity``
does the same for credentials pushed as PEM through the embedding API."""

from __future__ import annotations

import os
import re
import ssl
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
from meshproxy import Proxy
from meshproxy._native import ConfigRejected
from meshproxy.ca import CertificateAuthority, IssuedCredentials
from pki import CA_TTL, TRUST_DOMAIN, make_ca

FRONTEND = "spiffe://mesh.local/ns/shop/sa/frontend"
ORDERS = "spiffe://mesh.local/ns/shop/sa/orders"
PROBE = "spiffe://mesh.local/ns/shop/sa/probe"
PAYMENTS = "spiffe://mesh.local/ns/shop/sa/payments"
# Each load thread pauses this long between requests, and stops after MAX_REQUESTS: bounded load
# on a 2-core machine running two sidecars and the app.
PAUSE = 0.01
MAX_REQUESTS = 3000
ACCEPTED = "identity files changed: new handshakes use the new credentials"
REFUSED = "new identity files refused, keeping the current credentials: "

Upstreams = Callable[[str], Upstream]


# --- files as certificate tooling writes them ----------------------------------------------


def replace_file(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, as certificate tooling does."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class Workload:
    """One sidecar's credential files, in ``folder/certs``."""

    def __init__(self, folder: Path, spiffe_id: str) -> None:
        self.folder = folder
        self.spiffe_id = spiffe_id
        self.certs = folder / "certs"
        self.certs.mkdir(parents=True, exist_ok=True)

    @property
    def cert(self) -> Path:
        return self.certs / "cert.pem"

    @property
    def key(self) -> Path:
        return self.certs / "key.pem"

    @property
    def bundle(self) -> Path:
        return self.certs / "bundle.pem"

    def write_leaf(self, leaf: IssuedCredentials) -> None:
        # The key first, so the new certificate is never on disk beside the old key.
        replace_file(self.key, leaf.key_pem)
        replace_file(self.cert, leaf.cert_pem)

    def write_bundle(self, *cas: CertificateAuthority) -> None:
        replace_file(self.bundle, b"".join(ca.cert_pem for ca in cas))

    def identity_section(self) -> dict[str, str]:
        return {"trust_domain": TRUST_DOMAIN, "cert": "certs/cert.pem", "key": "certs/key.pem",
                "bundle": "certs/bundle.pem"}


def serial(leaf: IssuedCredentials) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_pem).serial_number


def not_after(leaf: IssuedCredentials) -> int:
    return int(leaf.not_after.timestamp())


# --- the mesh: A → B, both in front of the app ---------------------------------------------


class Mesh:
    """Sidecar A (outbound listener → B; inbound listener → app) and sidecar B (inbound → app),
    started by ``meshproxy run`` with credentials from ``ca``."""

    def __init__(self, tmp_path: Path, run: Callable[..., ProxyProcess], app: Upstream) -> None:
        self.tmp_path = tmp_path
        self.ca = make_ca(tmp_path, TRUST_DOMAIN, CA_TTL)
        self._run = run
        self._app = app
        self.a_files = Workload(tmp_path / "a", FRONTEND)
        self.b_files = Workload(tmp_path / "b", ORDERS)
        for files in (self.a_files, self.b_files):
            files.write_leaf(self.ca.issue(files.spiffe_id))
            files.write_bundle(self.ca)
        self.b = self._start(self.b_files, [self._inbound()], [self._app_cluster()])
        b_address = self.b.address("inbound")
        self.a = self._start(
            self.a_files,
            [
                {"name": "outbound", "address": "127.0.0.1:0", "routes": [
                    # A second cluster to B, secured differently (one more allowed identity) so it
                    # has its own pool: its first request makes a new handshake when the test asks.
                    {"match": {"path_prefix": "/late/"}, "cluster": "orders-late"},
                    {"cluster": "orders"},
                ]},
                self._inbound(),
            ],
            [
                {"name": "orders", "protocol": "http2", "tls": {"mode": "mesh", "identities": [ORDERS]},
                 "endpoints": [{"address": b_address}]},
                {"name": "orders-late", "protocol": "http2", "tls": {"mode": "mesh", "identities": [ORDERS, PAYMENTS]},
                 "endpoints": [{"address": b_address}]},
                self._app_cluster(),
            ],
        )

    def _inbound(self) -> dict[str, Any]:
        return {"name": "inbound", "address": "127.0.0.1:0", "tls": "strict", "routes": [{"cluster": "app"}]}

    def _app_cluster(self) -> dict[str, Any]:
        return {"name": "app", "endpoints": [{"address": self._app.address}]}

    def _start(self, files: Workload, listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> ProxyProcess:
        return self._run(self.config_file(files, listeners, clusters))

    @staticmethod
    def config_file(files: Workload, listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> Path:
        """A sidecar's config file, beside its credentials, with an admin server."""
        config = {"admin": {"address": "127.0.0.1:0"}, "identity": files.identity_section(),
                  "listeners": listeners, "clusters": clusters}
        path = files.folder / "meshproxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def probe_context(self, ca: CertificateAuthority, trusted: list[CertificateAuthority]) -> ssl.SSLContext:
        """A client of the mesh with a certificate from ``ca``, trusting ``trusted`` CAs."""
        probe = ca.issue(PROBE).save(self.tmp_path / "probes" / str(id(ca)))
        context = ssl.create_default_context(cadata="".join(c.cert_pem.decode() for c in trusted))
        context.check_hostname = False  # a sidecar is known by its SPIFFE ID
        context.load_cert_chain(probe[0], probe[1])
        return context


@pytest.fixture
def mesh(tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> Mesh:
    return Mesh(tmp_path, meshproxy_run, upstreams("app"))


def stats(proxy: ProxyProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()
    return document


def identity_not_after(proxy: ProxyProcess) -> int:
    value: int = stats(proxy)["identity"]["not_after"]
    return value


def presented_serial(address: str, context_files: tuple[Path, Path]) -> int:
    """The serial of the certificate the listener at ``address`` presents to a new handshake, as
    ``openssl s_client`` (with a client certificate) sees it."""
    cert, key = context_files
    result = subprocess.run(["openssl", "s_client", "-connect", address, "-cert", str(cert), "-key", str(key)],
                            input="", capture_output=True, text=True, timeout=30, check=False)
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert pem is not None, result.stdout + result.stderr
    return x509.load_pem_x509_certificate(pem.group(0).encode()).serial_number


def handshake_accepted(address: str, context: ssl.SSLContext) -> bool:
    """Whether a new mTLS connection with ``context`` gets an answer from the app."""
    try:
        with httpx.Client(verify=context, timeout=10) as client:
            return client.get(f"https://{address}/anything").status_code == 200
    except httpx.TransportError:
        return False


def logged(proxy: ProxyProcess, text: str) -> int:
    return sum(text in line for line in proxy.log_lines)


# --- continuous load -----------------------------------------------------------------------


class Load:
    """Client threads sending requests until stopped: through A's outbound listener on kept-alive
    connections, and over a new mTLS connection per request to each inbound listener (so that
    handshakes happen throughout a rotation). Every failure is recorded."""

    def __init__(self, mesh: Mesh, probe: ssl.SSLContext) -> None:
        self.probe = probe  # replaced by a CA rotation; each new connection takes the current one
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        through_a = f"http://{mesh.a.address('outbound')}/anything"
        self._threads = [threading.Thread(target=self._kept_alive, args=(through_a,)) for _ in range(2)]
        self._threads += [threading.Thread(target=self._fresh, args=(f"https://{proxy.address('inbound')}/anything",))
                          for proxy in (mesh.a, mesh.b)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _kept_alive(self, url: str) -> None:
        with httpx.Client(timeout=10) as client:
            while self._running():
                self._record(url, lambda: client.get(url))

    def _fresh(self, url: str) -> None:
        while self._running():
            def one() -> httpx.Response:
                with httpx.Client(verify=self.probe, timeout=10) as client:
                    return client.get(url)
            self._record(url, one)

    def _running(self) -> bool:
        # The pause is the load bound; wait() returns at once when stopped.
        return not self._stop.wait(PAUSE) and self.sent < MAX_REQUESTS

    def _record(self, url: str, send: Callable[[], httpx.Response]) -> None:
        try:
            outcome = send()
            failure = None if outcome.status_code == 200 else f"{url}: {outcome.status_code} {outcome.text[:200]}"
        except httpx.HTTPError as error:
            failure = f"{url}: {error!r}"
        with self._lock:
            self.sent += 1
            if failure is not None:
                self.failures.append(failure)

    def wait_for(self, more: int) -> None:
        """Returns once ``more`` requests have been sent since the call."""
        target = self.sent + more
        assert target < MAX_REQUESTS, "the test needs more requests than the load bound allows"
        wait_until(lambda: self.sent >= target, timeout=60, what=f"{more} more requests under load")


# --- rotating a leaf -----------------------------------------------------------------------


@pytest.mark.parametrize("rotated", ["b", "a"])
def test_rotating_a_sidecars_leaf_under_load_fails_no_request_and_new_handshakes_show_it(
        mesh: Mesh, rotated: str) -> None:
    proxy, files = (mesh.b, mesh.b_files) if rotated == "b" else (mesh.a, mesh.a_files)
    probe_files = mesh.ca.issue(PROBE).save(mesh.tmp_path / "probe")
    before = presented_serial(proxy.address("inbound"), probe_files[:2])
    with Load(mesh, mesh.probe_context(mesh.ca, [mesh.ca])) as load:
        load.wait_for(100)
        new = mesh.ca.issue(files.spiffe_id, ttl=timedelta(hours=12))  # another not_after than the first
        files.write_leaf(new)
        wait_until(lambda: identity_not_after(proxy) == not_after(new), what="the sidecar to use the new leaf")
        handshakes = stats(proxy)["tls"]["inbound"]["handshakes_total"]
        load.wait_for(100)
        # New connections kept coming, and were accepted with the new certificate.
        assert stats(proxy)["tls"]["inbound"]["handshakes_total"] > handshakes
    assert load.failures == []
    assert before != serial(new)
    assert presented_serial(proxy.address("inbound"), probe_files[:2]) == serial(new)
    assert logged(proxy, ACCEPTED) >= 1


def processes_reading(path: Path) -> list[str]:
    """The command lines of the other processes that have ``path`` open."""
    found = []
    for fds in Path("/proc").glob("[0-9]*/fd"):
        if fds.parent.name == str(os.getpid()):
            continue
        try:
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                found.append((fds.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone, or another user's
            continue
    return found


def test_a_rotation_written_while_the_sidecar_reads_its_files_at_start_is_used(
        tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> None:
    """The identity watch is in place only some time after the sidecar read the files: a
    rotation written in between raises no event, and is found once the watch is in place."""
    ca = make_ca(tmp_path, TRUST_DOMAIN, CA_TTL)
    files = Workload(tmp_path / "orders", ORDERS)
    files.write_leaf(ca.issue(ORDERS))
    new = ca.issue(ORDERS, ttl=timedelta(hours=12))
    # The bundle, the file read last, is a pipe: each reader gets the bundle when this thread
    # writes it. The validator child's read is served as it is; while the sidecar's own first
    # read of the files waits on it, the new leaf is put in place. So the rotation lands after the
    # sidecar began reading its files and before its watch can be in place, however fast or slow
    # it starts.
    os.mkfifo(files.bundle)
    readers: list[str] = []

    def serve_the_bundle_and_rotate_on_the_sidecars_read() -> None:
        while True:
            with open(files.bundle, "wb") as pipe:  # returns once a reader opens the pipe
                wait_until(lambda: bool(processes_reading(files.bundle)), what="the reader of the bundle")
                [reader] = processes_reading(files.bundle)
                readers.append(reader)
                pipe.write(ca.cert_pem)
                if " validate " not in reader:
                    files.write_leaf(new)
                    files.write_bundle(ca)  # a file in place of the pipe, for every later read
                    return

    rotation = threading.Thread(target=serve_the_bundle_and_rotate_on_the_sidecars_read, daemon=True)
    rotation.start()
    inbound = {"name": "inbound", "address": "127.0.0.1:0", "tls": "strict", "routes": [{"cluster": "app"}]}
    app = {"name": "app", "endpoints": [{"address": upstreams("app").address}]}
    proxy = meshproxy_run(Mesh.config_file(files, [inbound], [app]))
    rotation.join(timeout=30)
    assert not rotation.is_alive()
    assert " run " in readers[-1], readers

    wait_until(lambda: identity_not_after(proxy) == not_after(new), what="the sidecar to use the leaf rotated at start")
    probe = ca.issue(PROBE).save(tmp_path / "probe")
    assert presented_serial(proxy.address("inbound"), probe[:2]) == serial(new)


# --- rotating the CA -----------------------------------------------------------------------


def test_rotating_the_ca_through_a_shared_bundle_under_load_fails_no_request(mesh: Mesh, tmp_path: Path) -> None:
    old, new = mesh.ca, make_ca(tmp_path / "next", TRUST_DOMAIN, CA_TTL)
    sidecars = ((mesh.a, mesh.a_files), (mesh.b, mesh.b_files))
    with Load(mesh, mesh.probe_context(old, [old, new])) as load:
        load.wait_for(50)

        # 1. Both sidecars trust both CAs: a peer with a certificate from the new CA is accepted.
        for _, files in sidecars:
            files.write_bundle(old, new)
        new_peer = mesh.probe_context(new, [old, new])
        for proxy, _ in sidecars:
            wait_until(lambda: handshake_accepted(proxy.address("inbound"), new_peer),
                       what="the bundle with both CAs to be used")
        load.wait_for(50)

        # 2. Leaves from the new CA (new connections of the load present one too).
        leaves = {proxy.admin: (files, new.issue(files.spiffe_id, ttl=timedelta(hours=12))) for proxy, files in sidecars}
        for files, leaf in leaves.values():
            files.write_leaf(leaf)
        load.probe = new_peer
        for proxy, _ in sidecars:
            wait_until(lambda: identity_not_after(proxy) == not_after(leaves[proxy.admin][1]),
                       what="the leaf from the new CA to be used")
        load.wait_for(50)

        # 3. Only the new CA is trusted: a peer with a certificate from the old one is refused.
        for _, files in sidecars:
            files.write_bundle(new)
        old_peer = mesh.probe_context(old, [old, new])
        for proxy, _ in sidecars:
            wait_until(lambda: not handshake_accepted(proxy.address("inbound"), old_peer),
                       what="the bundle with the new CA only to be used")
        load.wait_for(50)

    assert load.failures == []
    # A new connection from A to B: A presents its leaf from the new CA and checks B's against
    # the new CA only, and B accepts it with the new CA only.
    late = httpx.get(f"http://{mesh.a.address('outbound')}/late/anything", timeout=10)
    assert late.status_code == 200, late.text
    assert late.json()["headers"]["x-meshproxy-peer-identity"] == FRONTEND


# --- a bad set is refused ------------------------------------------------------------------


def _key_of_another_certificate(mesh: Mesh, files: Workload) -> None:
    replace_file(files.key, mesh.ca.issue(files.spiffe_id).key_pem)


def _expired_leaf(mesh: Mesh, files: Workload) -> None:
    now = datetime.now(UTC)
    files.write_leaf(mesh.ca.issue(files.spiffe_id, not_before=now - timedelta(hours=2),
                                   not_after=now - timedelta(hours=1)))


def _leaf_from_a_ca_not_in_the_bundle(mesh: Mesh, files: Workload) -> None:
    stranger = make_ca(mesh.tmp_path / "stranger", TRUST_DOMAIN, CA_TTL)
    files.write_leaf(stranger.issue(files.spiffe_id))


@pytest.mark.parametrize(("mistake", "message"), [
    (_key_of_another_certificate, "identity.key: the private key does not match the certificate's public key"),
    (_expired_leaf, "identity.cert: the certificate expired at "),
    (_leaf_from_a_ca_not_in_the_bundle, "identity.cert: the certificate does not chain to a CA in the bundle"),
])
def test_a_bad_set_of_files_is_refused_and_the_old_credentials_keep_serving(
        mesh: Mesh, mistake: Callable[[Mesh, Workload], None], message: str) -> None:
    probe_files = mesh.ca.issue(PROBE).save(mesh.tmp_path / "probe")
    serving, until = presented_serial(mesh.b.address("inbound"), probe_files[:2]), identity_not_after(mesh.b)
    with Load(mesh, mesh.probe_context(mesh.ca, [mesh.ca])) as load:
        load.wait_for(50)
        mistake(mesh, mesh.b_files)
        wait_until(lambda: any(REFUSED + message in line for line in mesh.b.log_lines),
                   what="the refusal to be logged")
        load.wait_for(50)
        assert presented_serial(mesh.b.address("inbound"), probe_files[:2]) == serving
        assert identity_not_after(mesh.b) == until

        # The next good set is taken: the watch goes on after a refusal.
        good = mesh.ca.issue(ORDERS, ttl=timedelta(hours=12))
        mesh.b_files.write_bundle(mesh.ca)
        mesh.b_files.write_leaf(good)
        wait_until(lambda: identity_not_after(mesh.b) == not_after(good), what="the good set to be used")
        load.wait_for(50)
    assert load.failures == []
    assert presented_serial(mesh.b.address("inbound"), probe_files[:2]) == serial(good)


# --- the embedding API ---------------------------------------------------------------------


@pytest.fixture
def embedded(tmp_path: Path, upstreams: Upstreams) -> Iterator[tuple[Proxy, CertificateAuthority, Workload]]:
    ca = make_ca(tmp_path, TRUST_DOMAIN, CA_TTL)
    files = Workload(tmp_path / "orders", ORDERS)
    files.write_leaf(ca.issue(ORDERS))
    files.write_bundle(ca)
    config = {
        "identity": {"trust_domain": TRUST_DOMAIN, "cert": str(files.cert), "key": str(files.key),
                     "bundle": str(files.bundle)},
        "listeners": [{"name": "inbound", "address": "127.0.0.1:0", "tls": "strict", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": upstreams("app").address}]}],
    }
    with Proxy(config) as proxy:
        yield proxy, ca, files


def test_set_identity_pushes_new_credentials_to_new_handshakes(
        embedded: tuple[Proxy, CertificateAuthority, Workload], tmp_path: Path) -> None:
    proxy, ca, _ = embedded
    probe = ca.issue(PROBE).save(tmp_path / "probe")
    new = ca.issue(ORDERS, ttl=timedelta(hours=12))
    proxy.set_identity(new.cert_pem, new.key_pem, new.bundle_pem)
    assert proxy.stats()["identity"] == {"spiffe_id": ORDERS, "not_after": not_after(new)}
    assert presented_serial(proxy.address("inbound"), probe[:2]) == serial(new)


def test_set_identity_refuses_a_key_that_is_not_the_certificates_and_keeps_the_current_one(
        embedded: tuple[Proxy, CertificateAuthority, Workload], tmp_path: Path) -> None:
    proxy, ca, files = embedded
    probe = ca.issue(PROBE).save(tmp_path / "probe")
    serving, identity = presented_serial(proxy.address("inbound"), probe[:2]), proxy.stats()["identity"]
    new, other = ca.issue(ORDERS, ttl=timedelta(hours=12)), ca.issue(ORDERS)
    with pytest.raises(ConfigRejected) as refusal:
        proxy.set_identity(new.cert_pem, other.key_pem, new.bundle_pem)
    assert refusal.value.args == (
        "identity.key: the private key does not match the certificate's public key",
        [("identity.key", "the private key does not match the certificate's public key")],
    )
    assert proxy.stats()["identity"] == identity
    assert presented_serial(proxy.address("inbound"), probe[:2]) == serving
    assert files.cert.read_bytes() != new.cert_pem  # nothing was written


def test_set_identity_refuses_a_certificate_outside_the_trust_domain(tmp_path: Path,
        embedded: tuple[Proxy, CertificateAuthority, Workload]) -> None:
    proxy, _, _ = embedded
    foreign = make_ca(tmp_path / "other", "other.local", CA_TTL).issue("spiffe://other.local/ns/shop/sa/orders")
    with pytest.raises(ConfigRejected) as refusal:
        proxy.set_identity(foreign.cert_pem, foreign.key_pem, foreign.bundle_pem)
    assert refusal.value.args[1] == [("identity.cert", "the certificate's SPIFFE ID spiffe://other.local/ns/shop/sa/orders "
                                                        "is outside the trust domain 'mesh.local'")]
    assert proxy.stats()["identity"]["spiffe_id"] == ORDERS
