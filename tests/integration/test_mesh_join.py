"""The sidecar side of the control plane, end to end with real processes: ``meshproxy run
--control`` joins with a token (making its own key; trusting only the CA its token pins), takes
its config over ADS through the reload path, carries a request between two sidecars over mTLS,
serves its saved config when restarted while the control plane is down, NACKs what it cannot
run, renews its certificate under load, and leaves the mesh before it drains."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh_documents import documents, service
from mesh_harness import LocalMesh, Sidecar, apps_by_name, until
from steady_load import SteadyLoad
from upstreams import Upstream

from meshproxy.mesh.join_token import JoinToken, ca_pin

SERVICES = documents(service("frontend", calls=["orders"]), service("orders"))
ORDERS = "spiffe://mesh.local/ns/default/sa/orders"
FRONTEND = "spiffe://mesh.local/ns/default/sa/frontend"


@pytest.fixture
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "orders")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path, lease="3s") as mesh:
        mesh.apply(SERVICES)
        yield mesh


def state_of(sidecar: Sidecar) -> Path:
    return Path(sidecar.command[sidecar.command.index("--state-dir") + 1])


def pair(mesh: LocalMesh, apps: dict[str, Upstream]) -> tuple[Sidecar, Sidecar]:
    """orders, then frontend, with frontend routing to orders."""
    orders = mesh.sidecar("orders", app=apps["orders"].address)
    frontend = mesh.sidecar("frontend", app=apps["frontend"].address)
    until(lambda: frontend.endpoints("outbound_orders.default") == [orders.inbound],
          what="frontend to have the orders instance")
    return orders, frontend


def call(sidecar: Sidecar, host: str = "orders") -> httpx.Response:
    return httpx.get(f"http://{sidecar.outbound}/anything", headers={"host": host}, timeout=10)


def test_a_sidecar_joins_with_its_token_and_makes_its_own_key(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    token = mesh.token("orders")
    orders = mesh.sidecar("orders", app=apps["orders"].address, token=token)
    orders.wait_for_line(r"xDS .* applied: config version")
    assert f"joined the mesh as {ORDERS}" in orders.log()
    state = state_of(orders)
    cert = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [ORDERS]
    # Issued by the CA the token pins; for the key that never left the state folder (0600).
    ca = x509.load_pem_x509_certificate((state / "bundle.pem").read_bytes())
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ca_pin(spki) == JoinToken.decode(token.read_text()).ca_pin
    assert cert.issuer == ca.subject
    key = serialization.load_pem_private_key((state / "key.pem").read_bytes(), None)
    assert key.public_key() == cert.public_key()
    assert stat.S_IMODE(os.stat(state / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    # Registered with the inbound port it bound (asked for port 0), and up to date.
    mesh.wait_acked()
    (row,) = mesh.status()
    assert (row["service"], row["address"], row["kind"]) == ("orders", orders.inbound, "meshproxy")


def test_a_control_plane_whose_ca_the_token_does_not_pin_is_refused(
        mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    good = JoinToken.decode(mesh.token("orders").read_text())
    other = "sha256:" + "ab" * 32
    token = mesh.folder / "other-ca.token"
    token.write_text(good._replace(ca_pin=other).encode())
    sidecar = mesh.sidecar("orders", app=apps["orders"].address, token=token, wait=False)
    assert sidecar.process.wait(timeout=30) == 1
    sidecar.stop()
    assert f"control plane at {mesh.grpc} presents CA {good.ca_pin}, the token pins {other}" in sidecar.log()
    # Nothing was asked of a control plane it does not trust: no key, no certificate.
    assert not (state_of(sidecar) / "cert.pem").exists()
    assert not (state_of(sidecar) / "key.next.pem").exists()


def test_a_request_goes_through_both_sidecars_over_mtls(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    orders, frontend = pair(mesh, apps)
    for host in ("orders", "orders.default", "orders.default:8080"):
        response = call(frontend, host)
        assert response.status_code == 200, response.text
        seen = response.json()
        assert seen["upstream"] == "orders"
        # The orders sidecar authenticated the frontend sidecar by its certificate.
        assert seen["headers"]["x-meshproxy-peer-identity"] == FRONTEND
    # frontend calls orders only (its Service's `calls`): no route to itself.
    assert call(frontend, "frontend").status_code == 404
    # Plain text to the strict inbound listener is refused.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{orders.inbound}/anything", timeout=5)


def test_a_sidecar_restarted_while_the_control_plane_is_down_serves_its_saved_config(
        mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    orders, frontend = pair(mesh, apps)
    mesh.stop_server()
    # Its Leave finds no control plane: it drains at once rather than waiting for one.
    started = time.monotonic()
    assert frontend.stop() == 0
    assert time.monotonic() - started < 8
    assert "could not leave the mesh" in frontend.log()
    again = mesh.restart(frontend)
    assert "serving the saved config" in again.log()
    assert again.outbound == frontend.outbound
    response = call(again)
    assert (response.status_code, response.json()["upstream"]) == (200, "orders")
    assert "unreachable" in again.wait_for_line(r"control plane at \S+ unreachable").group(0)
    # The control plane comes back: the sidecar reconnects and follows it again.
    mesh.start()
    again.wait_for_line(r"connected to the control plane", timeout=30)
    mesh.apply("kind: Route\nservice: orders\nrules: [{to: [{version: v1}], timeout: 3s}]\n")
    until(lambda: any(r["cluster"] == "outbound_orders.default_v1" for r in routes_of(again)), timeout=20,
          what="the new Route to reach the restarted sidecar")
    assert call(again).status_code == 200


def routes_of(sidecar: Sidecar) -> list[dict[str, object]]:
    config = httpx.get(f"http://{sidecar.admin}/config", timeout=10).json()
    outbound = next(listener for listener in config["listeners"] if listener["name"] == "outbound")
    routes: list[dict[str, object]] = outbound["routes"]
    return routes


def test_a_config_the_sidecar_refuses_is_nacked_and_the_running_one_stays(
        mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    orders, frontend = pair(mesh, apps)
    # The control plane sends only what it validated; what the sidecar can refuse is what its
    # own validator finds, here a certificate file spoiled under it.
    cert = state_of(orders) / "cert.pem"
    good = cert.read_bytes()
    cert.write_text("not a certificate\n")
    policy = "kind: AccessPolicy\nservice: orders\nrules: [{name: only-orders, action: allow, services: [orders]}]\n"
    mesh.apply(policy)
    orders.wait_for_line(r"xDS LDS \d+ NACKed, keeping the running config: .*identity\.cert", timeout=20)

    def nack() -> str:
        row = next(r for r in mesh.status() if r["service"] == "orders")
        return str(row["types"]["listeners"]["nack"] or "")

    until(lambda: "identity.cert" in nack(), what="the NACK to show in meshctl status")
    assert "only-orders" not in (state_of(orders) / "config.json").read_text()
    assert call(frontend).status_code == 200  # the running config, without the policy
    # Fixed, the next push applies.
    cert.write_bytes(good)
    mesh.apply(policy.replace("[orders]", "[orders], methods: [GET]"))
    orders.wait_for_line(r"xDS LDS \d+ applied", timeout=20)
    response = call(frontend)
    assert (response.status_code, response.headers["x-meshproxy-error"]) == (403, "denied")


def test_certificates_are_renewed_at_half_life_under_load_with_no_failed_request(
        mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    mesh.apply("kind: Mesh\ncert_lifetime: 8s\n")
    orders, frontend = pair(mesh, apps)

    def serial(sidecar: Sidecar) -> int:
        return x509.load_pem_x509_certificate((state_of(sidecar) / "cert.pem").read_bytes()).serial_number

    first = {s.name: serial(s) for s in (orders, frontend)}
    with SteadyLoad(f"http://{frontend.outbound}", host="orders", clients=2, max_seconds=60) as load:
        for sidecar in (orders, frontend):
            until(lambda: serial(sidecar) != first[sidecar.name], timeout=15, what=f"{sidecar.name} to renew")
        second = {s.name: serial(s) for s in (orders, frontend)}
        for sidecar in (orders, frontend):
            until(lambda: serial(sidecar) != second[sidecar.name], timeout=15, what=f"{sidecar.name} to renew again")
        counted = load.count()
        until(lambda: load.count() > counted + 100, what="load to go on")
    assert load.failures() == []
    assert orders.log().count("certificate renewed") >= 2
    # Well past the first certificate's 8s: the peers talk with renewed ones.
    assert call(frontend).status_code == 200


def test_sigterm_leaves_the_mesh_before_draining(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    orders, frontend = pair(mesh, apps)
    with SteadyLoad(f"http://{frontend.outbound}", host="orders", clients=2, max_seconds=60) as load:
        until(lambda: load.count() > 50, what="load to flow")
        assert orders.stop(signal.SIGTERM) == 0
    assert "left the mesh" in orders.log()
    assert frontend.endpoints("outbound_orders.default") == []
    # Requests sent after it left get 503 from the frontend sidecar; none was cut or refused.
    assert [f for f in load.failures() if not f.startswith("status 503")] == []


def test_a_new_trust_domain_is_followed_with_a_certificate_of_it(mesh: LocalMesh, apps: dict[str, Upstream]) -> None:
    orders, frontend = pair(mesh, apps)
    mesh.apply("kind: Mesh\ntrust_domain: shop.example\n")
    for sidecar in (orders, frontend):
        sidecar.wait_for_line(r"certificate renewed into trust domain shop\.example", timeout=20)
    mesh.wait_acked(timeout=20)
    cert = x509.load_pem_x509_certificate((state_of(orders) / "cert.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://shop.example/ns/default/sa/orders"]
    until(lambda: call(frontend).status_code == 200, what="calls between the renewed sidecars")
    assert call(frontend).json()["headers"]["x-meshproxy-peer-identity"] == "spiffe://shop.example/ns/default/sa/frontend"
