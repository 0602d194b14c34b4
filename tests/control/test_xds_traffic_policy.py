"""A TrafficPolicy and a Route's hash_policy as the control plane sends them: Envoy's own fields
(read with Envoy's classes: lb_policy, health_checks, outlier_detection, RouteAction.hash_policy,
set as Envoy needs them to behave as a meshproxy sidecar does), and, through the wire and the
sidecar's translation, the same sidecar settings the documents wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.route.v3 import route_pb2
from envoy.type.v3 import http_pb2
from meshcontrol.registry import Registry
from meshcontrol.resources import load_documents
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.xds.build import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshcontrol.xds.cluster_policy import status_ranges
from meshcontrol.xds.snapshot import Client, Snapshots
from meshproxy.config import coerce_config
from meshproxy.mesh import xds_pb2
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Local, Resources, missing, translate
from pki import issue, make_ca

from mesh_documents import documents, service

ORDERS = NodeMetadata("orders", "shop", "v1", "127.0.0.1:20001", "127.0.0.1:15000", "127.0.0.1:15001",
                      "127.0.0.1:8081")
PAYMENTS = """\
kind: TrafficPolicy
service: payments
namespace: shop
lb: ring_hash
health_check: {http: {path: /healthz, expected_statuses: [200, 204, 201]}, interval: 2s, timeout: 500ms, jitter: 100ms}
outlier_detection: {consecutive_5xx: 3, consecutive_gateway_errors: 2, base_ejection_time: 10s, max_ejection_percent: 50}
---
kind: Route
service: payments
namespace: shop
rules:
  - match: {headers: {x-channel: beta}}
    to: [{version: v2}]
    hash_policy: [{cookie: session}]
  - to: [{version: v1}]
    hash_policy: [{header: x-user}, {source_ip: true}]
"""
STOCK = """\
kind: TrafficPolicy
service: stock
namespace: shop
lb: random
health_check: {grpc: {service: stock}}
outlier_detection: {success_rate: null}
"""


def built(tmp_path: Path, *parts: str) -> Snapshots:
    registry = Registry(SqliteStore(tmp_path / "mesh"), 10, lambda _: None)
    registry.register(NodeMetadata("payments", "shop", "v1", "127.0.0.1:20002"))
    registry.register(NodeMetadata("payments", "shop", "v2", "127.0.0.1:20003"))
    snapshots = Snapshots(registry, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "mesh.local")
    snapshots.reload(load_documents(documents(*parts), "mesh.yaml", []))
    return snapshots


def envoy_clusters(snapshots: Snapshots) -> dict[str, cluster_pb2.Cluster]:
    found = {}
    for entry in snapshots.resources(Client(ORDERS), CLUSTER):
        cluster = cluster_pb2.Cluster()
        entry.resource.Unpack(cluster)
        found[entry.name] = cluster
    return found


def sidecar_config(snapshots: Snapshots, tmp_path: Path, client: NodeMetadata = ORDERS) -> dict[str, Any]:
    def subset(type_url: str) -> dict[str, Any]:
        kind = getattr(xds_pb2, type_url.rsplit(".", 1)[-1])
        return {e.name: kind.FromString(e.resource.value) for e in snapshots.resources(Client(client), type_url)}

    resources = Resources(*(subset(t) for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)))
    assert missing(resources) == []
    files = issue(make_ca(tmp_path), f"spiffe://mesh.local/ns/shop/sa/{client.service}", tmp_path / "identity")
    local = Local(inbound="127.0.0.1:0", outbound=client.outbound, admin=client.admin, app=client.app,
                  trust_domain="mesh.local", cert=str(files.cert), key=str(files.key), bundle=str(files.bundle))
    return coerce_config(translate(resources, local)).model_dump(mode="json", by_alias=True)


def test_a_traffic_policy_is_envoys_lb_policy_health_check_and_outlier_detection(tmp_path: Path) -> None:
    snapshots = built(tmp_path, service("orders", "shop", calls=["payments"]), service("payments", "shop"), PAYMENTS)
    clusters = envoy_clusters(snapshots)
    assert set(clusters) == {"inbound_app", "outbound_payments.shop", "outbound_payments.shop_v1",
                             "outbound_payments.shop_v2"}
    for name in ("outbound_payments.shop", "outbound_payments.shop_v1", "outbound_payments.shop_v2"):
        cluster = clusters[name]
        assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
        assert not cluster.metadata.filter_metadata  # no p2c_ewma note: Envoy's policy is the one
        [check] = cluster.health_checks
        assert check.http_health_check.path == "/healthz"
        assert check.http_health_check.codec_client_type == http_pb2.HTTP2
        assert [(r.start, r.end) for r in check.http_health_check.expected_statuses] == [(200, 202), (204, 205)]
        assert (check.interval.ToMilliseconds(), check.timeout.ToMilliseconds(),
                check.interval_jitter.ToMilliseconds()) == (2000, 500, 100)
        assert (check.unhealthy_threshold.value, check.healthy_threshold.value) == (2, 1)
        # As the sidecar: a connection per check, and checks at interval before any traffic.
        assert check.reuse_connection.value is False and check.HasField("reuse_connection")
        assert check.no_traffic_interval.ToMilliseconds() == 2000
        detection = cluster.outlier_detection
        assert (detection.consecutive_5xx.value, detection.enforcing_consecutive_5xx.value) == (3, 100)
        assert (detection.consecutive_gateway_failure.value, detection.enforcing_consecutive_gateway_failure.value) \
            == (2, 100)
        assert (detection.base_ejection_time.ToSeconds(), detection.max_ejection_time.ToSeconds(),
                detection.interval.ToSeconds()) == (10, 300, 10)
        assert detection.max_ejection_percent.value == 50
        assert (detection.enforcing_success_rate.value, detection.success_rate_minimum_hosts.value,
                detection.success_rate_request_volume.value, detection.success_rate_stdev_factor.value) \
            == (100, 5, 100, 1900)
        assert detection.HasField("successful_active_health_check_uneject_host")
        assert not detection.successful_active_health_check_uneject_host.value
        assert detection.always_eject_one_host.value


def test_a_rules_hash_policy_is_envoys_route_hash_policy(tmp_path: Path) -> None:
    snapshots = built(tmp_path, service("orders", "shop", calls=["payments"]), service("payments", "shop"), PAYMENTS)
    [outbound] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    outbound.resource.Unpack(config)
    [host] = config.virtual_hosts
    beta, main = host.routes
    assert [p.cookie.name for p in beta.route.hash_policy] == ["session"]
    assert not beta.route.hash_policy[0].cookie.HasField("ttl")  # read only: Envoy sets no cookie
    assert [p.WhichOneof("policy_specifier") for p in main.route.hash_policy] == ["header", "connection_properties"]
    assert main.route.hash_policy[0].header.header_name == "x-user"
    assert main.route.hash_policy[1].connection_properties.source_ip


def test_the_sidecar_reads_back_the_settings_the_documents_wrote(tmp_path: Path) -> None:
    snapshots = built(tmp_path, service("orders", "shop", calls=["payments", "stock"]), service("payments", "shop"),
                      service("stock", "shop"), PAYMENTS, STOCK)
    config = sidecar_config(snapshots, tmp_path)
    clusters = {c["name"]: c for c in config["clusters"]}
    payments = clusters["outbound_payments.shop_v1"]
    assert payments["lb"] == "ring_hash"
    assert payments["health_check"] == {
        "http": {"path": "/healthz", "host": None, "expected_statuses": [200, 201, 204]}, "grpc": None, "tcp": None,
        "interval": "2000ms", "timeout": "500ms", "unhealthy_threshold": 2, "healthy_threshold": 1,
        "jitter": "100ms"}
    assert payments["outlier_detection"] == {
        "consecutive_5xx": 3, "consecutive_gateway_errors": 2, "interval": "10000ms",
        "base_ejection_time": "10000ms", "max_ejection_time": "300000ms", "max_ejection_percent": 50,
        "success_rate": {"minimum_hosts": 5, "request_volume": 100, "stdev_factor": 1900}}
    stock = clusters["outbound_stock.shop"]
    assert stock["lb"] == "random"
    assert stock["health_check"]["grpc"] == {"service": "stock"}
    assert stock["outlier_detection"]["success_rate"] is None
    assert stock["outlier_detection"]["consecutive_gateway_errors"] is None
    routes = [r for r in config["listeners"][1]["routes"] if r["match"]["host"] == "payments"]
    assert [r["hash_policy"] for r in routes] == [
        [{"header": None, "cookie": "session", "source_ip": None}],
        [{"header": "x-user", "cookie": None, "source_ip": None}, {"header": None, "cookie": None, "source_ip": True}]]
    assert clusters["inbound_app"]["health_check"] is None


def test_without_a_traffic_policy_clusters_are_p2c_ewma_with_neither_setting(tmp_path: Path) -> None:
    snapshots = built(tmp_path, service("orders", "shop", calls=["payments"]), service("payments", "shop"))
    cluster = envoy_clusters(snapshots)["outbound_payments.shop"]
    assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert cluster.metadata.filter_metadata["meshproxy"]["lb"] == "p2c_ewma"
    assert not cluster.health_checks and not cluster.HasField("outlier_detection")
    config = sidecar_config(snapshots, tmp_path)
    [payments] = [c for c in config["clusters"] if c["name"] == "outbound_payments.shop"]
    assert (payments["lb"], payments["health_check"], payments["outlier_detection"]) == ("p2c_ewma", None, None)


@pytest.mark.parametrize(("statuses", "ranges"), [
    ([200], [(200, 201)]), ([204, 200, 201, 202], [(200, 203), (204, 205)]), ([599, 100], [(100, 101), (599, 600)])])
def test_expected_statuses_are_envoys_half_open_ranges(statuses: list[int], ranges: list[tuple[int, int]]) -> None:
    assert [(r.start, r.end) for r in status_ranges(statuses)] == ranges


def test_a_tcp_check_is_envoys_tcp_health_check() -> None:
    from meshcontrol.xds.cluster_policy import health_check

    check = health_check({"tcp": {}, "http": None, "grpc": None, "interval_ms": 1000, "timeout_ms": 100,
                          "unhealthy_threshold": 3, "healthy_threshold": 2, "jitter_ms": 0})
    assert check.WhichOneof("health_checker") == "tcp_health_check"
    assert not check.HasField("interval_jitter")
    assert isinstance(check, health_check_pb2.HealthCheck)
