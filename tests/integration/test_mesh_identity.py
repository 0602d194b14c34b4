"""Joining the mesh: a token proves who a sidecar is the first time, its certificate after
that; the key never leaves the sidecar; certificates are short-lived and renewed under load."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from mesh_documents import FRONTEND_AND_ORDERS
from mesh_harness import LocalMesh, apps_by_name, until
from steady_load import SteadyLoad
from upstreams import Upstream

from meshproxy.mesh.join_token import JoinToken


@pytest.fixture
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "orders")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path) as mesh:
        mesh.apply(FRONTEND_AND_ORDERS)
        yield mesh


def refused(mesh: LocalMesh, token: Path, app: str, service: str = "orders") -> str:
    sidecar = mesh.sidecar(service, app=app, token=token, wait=False)
    assert sidecar.process.wait(timeout=30) == 1
    time.sleep(0.1)
    return sidecar.log()


def test_a_malformed_token_is_refused_before_connecting(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    token = mesh.folder / "bad.token"
    token.write_text("hello")
    assert "not a join token" in refused(mesh, token, apps["orders"].address)


def test_an_expired_token_is_refused(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    token = mesh.token("orders", "default", "--ttl", "1s")
    time.sleep(1.5)
    assert "expired" in refused(mesh, token, apps["orders"].address)


def test_a_revoked_token_is_refused(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    token = mesh.token("orders")
    mesh.meshctl("token", "revoke", JoinToken.decode(token.read_text()).id)
    assert "revoked" in refused(mesh, token, apps["orders"].address)


def test_a_token_with_its_secret_changed_is_refused(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    good = JoinToken.decode(mesh.token("orders").read_text())
    forged = mesh.folder / "forged.token"
    forged.write_text(good._replace(secret=JoinToken.new_secret()).encode())
    assert "token" in refused(mesh, forged, apps["orders"].address).lower()


def test_a_token_for_another_service_cannot_join_as_this_one(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    token = mesh.token("frontend")
    log = refused(mesh, token, apps["orders"].address, service="orders")
    assert "frontend" in log and "orders" in log


def test_the_presented_certificate_is_a_short_lived_spiffe_certificate(
        mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    orders = mesh.sidecar("orders", app=apps["orders"].address)
    frontend = mesh.sidecar("frontend", app=apps["frontend"].address)
    state = Path(frontend.command[frontend.command.index("--state-dir") + 1])
    host, port = orders.inbound.rsplit(":", 1)
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-cert", str(state / "cert.pem"),
         "-key", str(state / "key.pem"), "-CAfile", str(state / "bundle.pem"), "-verify_return_error",
         "-showcerts", "-brief"],
        input="", capture_output=True, text=True, timeout=30)
    assert "Verification: OK" in shown.stderr, shown.stderr
    leaf = subprocess.run(["openssl", "s_client", "-connect", f"{host}:{port}", "-cert", str(state / "cert.pem"),
                           "-key", str(state / "key.pem")], input="", capture_output=True, text=True, timeout=30)
    pem = leaf.stdout[leaf.stdout.index("-----BEGIN CERTIFICATE-----"):leaf.stdout.index("-----END CERTIFICATE-----") + 25]
    cert = x509.load_pem_x509_certificate(pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mesh.local/ns/default/sa/orders"]
    bundle = x509.load_pem_x509_certificate((state / "bundle.pem").read_bytes())
    assert cert.issuer == bundle.subject
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(hours=24, minutes=5)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= datetime.timedelta(hours=23)


def test_certificates_are_renewed_under_load_with_no_failed_request(
        mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    mesh.apply("kind: Mesh\ncert_lifetime: 10s\n")
    orders = mesh.sidecar("orders", app=apps["orders"].address)
    frontend = mesh.sidecar("frontend", app=apps["frontend"].address)
    state = Path(orders.command[orders.command.index("--state-dir") + 1])
    first = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes()).serial_number
    with SteadyLoad(f"http://{frontend.outbound}", host="orders", clients=2, max_seconds=60) as load:
        until(lambda: x509.load_pem_x509_certificate((state / "cert.pem").read_bytes()).serial_number != first,
              timeout=20, what="the orders sidecar to renew")
        second = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes()).serial_number
        until(lambda: x509.load_pem_x509_certificate((state / "cert.pem").read_bytes()).serial_number != second,
              timeout=20, what="a second renewal")
        counted = load.count()
        until(lambda: load.count() > counted + 100, what="load to go on")
    assert load.failures() == []
    assert load.count() > 200
    assert "renewed" in orders.log()
