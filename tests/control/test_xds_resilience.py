"""A TrafficPolicy's circuit_breakers and a Route rule's retry as the control plane sends them:
Envoy's own fields (read with Envoy's classes: Cluster.circuit_breakers with the Route's retry
budget, RouteAction.retry_policy, Route.per_request_buffer_limit_bytes), and, through the wire
and the sidecar's translation, the same sidecar settings the documents wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from meshcontrol.resources import as_document, load_documents
from meshproxy.config.errors import ConfigError
from meshcontrol.xds.build import ROUTE
from meshcontrol.xds.cluster_policy import UNLIMITED
from meshcontrol.xds.snapshot import Client
from meshproxy.mesh import xds_pb2
from meshproxy.mesh.translate import Refused
from meshproxy.mesh.translate_breakers import circuit_breakers, with_budgets
from test_xds_traffic_policy import ORDERS, built, envoy_clusters, sidecar_config

from mesh_documents import documents, service

CALLED = (service("orders", "shop", calls=["payments", "stock"]), service("payments", "shop"), service("stock", "shop"))
PAYMENTS = """\
kind: TrafficPolicy
service: payments
namespace: shop
circuit_breakers: {max_connections: 10, max_requests: 20, max_retries: 2}
---
kind: Route
service: payments
namespace: shop
rules:
  - match: {headers: {x-channel: beta}}
    to: [{version: v2}]
    retry: {retry_on: [5xx, connect-failure], attempts: 3, per_try_timeout: 1s, budget: {percent: 25, min_per_second: 5}}
  - to: [{version: v1, weight: 9}, {version: v2}]
    retry: {retry_on: [retriable-status-codes, reset], retriable_status_codes: [409], backoff: {base_interval: 10ms, max_interval: 40ms}, max_replay_bytes: 0, budget: {percent: 25, min_per_second: 5}}
"""


def test_circuit_breakers_and_the_retry_budget_are_envoys_one_default_threshold(tmp_path: Path) -> None:
    clusters = envoy_clusters(built(tmp_path, *CALLED, PAYMENTS))
    for name in ("outbound_payments.shop", "outbound_payments.shop_v1", "outbound_payments.shop_v2"):
        [threshold] = clusters[name].circuit_breakers.thresholds
        assert threshold.priority == base_pb2.DEFAULT
        assert (threshold.max_connections.value, threshold.max_pending_requests.value, threshold.max_requests.value,
                threshold.max_retries.value) == (10, 1024, 20, 2)
        assert (threshold.retry_budget.budget_percent.value, threshold.retry_budget.min_retry_concurrency.value) \
            == (25.0, 5)
    # No TrafficPolicy, no Route: Envoy's limits by default would be 1024 and 3 retries; a
    # sidecar has none, so the Envoy gets none either.
    [threshold] = clusters["outbound_stock.shop"].circuit_breakers.thresholds
    assert {threshold.max_connections.value, threshold.max_pending_requests.value, threshold.max_requests.value,
            threshold.max_retries.value} == {UNLIMITED}
    assert not threshold.HasField("retry_budget")


def test_a_rules_retry_is_envoys_route_retry_policy(tmp_path: Path) -> None:
    [outbound] = [e for e in built(tmp_path, *CALLED, PAYMENTS).resources(Client(ORDERS), ROUTE)
                  if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    outbound.resource.Unpack(config)
    [beta, main] = [r for host in config.virtual_hosts if host.name == "payments.shop" for r in host.routes]
    policy = beta.route.retry_policy
    assert (policy.retry_on, policy.num_retries.value, policy.per_try_timeout.ToMilliseconds()) \
        == ("5xx,connect-failure", 2, 1000)
    assert (policy.retry_back_off.base_interval.ToMilliseconds(),
            policy.retry_back_off.max_interval.ToMilliseconds()) == (25, 250)
    # A retry goes to another instance when there is one, as in the sidecar.
    assert [p.name for p in policy.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]
    assert beta.per_request_buffer_limit_bytes.value == 65536
    policy = main.route.retry_policy
    assert (policy.retry_on, policy.num_retries.value, list(policy.retriable_status_codes)) \
        == ("retriable-status-codes,reset", 2, [409])
    assert not policy.HasField("per_try_timeout")
    assert main.HasField("per_request_buffer_limit_bytes") and main.per_request_buffer_limit_bytes.value == 0


def test_the_sidecar_reads_back_the_breakers_and_retries_the_documents_wrote(tmp_path: Path) -> None:
    config = sidecar_config(built(tmp_path, *CALLED, PAYMENTS), tmp_path)
    clusters = {c["name"]: c for c in config["clusters"]}
    assert clusters["outbound_payments.shop_v1"]["circuit_breakers"] == {
        "max_connections": 10, "max_pending_requests": 1024, "max_requests": 20, "max_retries": 2}
    assert clusters["outbound_stock.shop"]["circuit_breakers"] is None
    assert clusters["inbound_app"]["circuit_breakers"] is None
    routes = [r for r in config["listeners"][1]["routes"] if r["match"]["host"] == "payments"]
    budget = {"percent": 25.0, "min_per_second": 5}
    assert [r["retry"] for r in routes] == [
        {"retry_on": ["5xx", "connect-failure"], "attempts": 3, "per_try_timeout": "1000ms",
         "retriable_status_codes": [], "backoff": {"base_interval": "25ms", "max_interval": "250ms"},
         "budget": budget, "max_replay_bytes": 65536},
        {"retry_on": ["retriable-status-codes", "reset"], "attempts": 3, "per_try_timeout": None,
         "retriable_status_codes": [409], "backoff": {"base_interval": "10ms", "max_interval": "40ms"},
         "budget": budget, "max_replay_bytes": 0}]
    assert all(r.get("retry") is None for r in config["listeners"][1]["routes"] if r["match"]["host"] == "stock")


def test_a_routes_rules_share_one_retry_budget() -> None:
    text = documents(service("payments", "shop"), """\
kind: Route
service: payments
namespace: shop
rules:
  - match: {path: /a}
    to: [{version: v1}]
    retry: {}
  - to: [{version: v1}]
    retry: {budget: {percent: 50}}
""")
    with pytest.raises(ConfigError) as raised:
        load_documents(text, "mesh.yaml", [])
    assert [str(issue) for issue in raised.value.issues] == [
        "mesh.yaml:13: documents[1] (Route shop/payments): rules[1].retry.budget: differs from rules[0].retry.budget; "
        "a Route's rules share one retry budget (an Envoy client keeps it on the service's clusters)"]


def _cluster(**limits: int) -> xds_pb2.Cluster:
    cluster = xds_pb2.Cluster(name="c")
    threshold = cluster.circuit_breakers.thresholds.add()
    for name, value in limits.items():
        getattr(threshold, name).value = value
    return cluster


def test_envoys_unset_limits_are_its_defaults_and_what_the_sidecar_lacks_is_refused() -> None:
    assert circuit_breakers(_cluster(max_requests=5), "c") == {
        "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 5, "max_retries": 3}
    high = _cluster(max_requests=5)
    high.circuit_breakers.thresholds[0].priority = xds_pb2.HIGH
    with pytest.raises(Refused, match="no request priorities"):
        circuit_breakers(high, "c")
    pools = _cluster(max_connection_pools=3)
    with pytest.raises(Refused, match="max_connection_pools has no sidecar equivalent"):
        circuit_breakers(pools, "c")
    # A retry policy needs a budget on its clusters: the sidecar's retries always have one.
    with pytest.raises(Refused, match="retries to cluster 'c', which has no circuit_breakers retry_budget"):
        with_budgets([{"cluster": "c", "retry": {}}], {"c": _cluster()}, "listener 'outbound'")
    budgeted = _cluster()
    budgeted.circuit_breakers.thresholds[0].retry_budget.SetInParent()
    assert with_budgets([{"cluster": "c", "retry": {}}], {"c": budgeted}, "l") == [
        {"cluster": "c", "retry": {"budget": {"percent": 20.0, "min_per_second": 3}}}]  # Envoy's defaults


def test_meshctl_get_prints_the_retry_and_breakers_a_file_wrote_so_apply_takes_them_again() -> None:
    stored = load_documents(documents(*CALLED, PAYMENTS), "mesh.yaml", [])
    printed = yaml.safe_dump_all([as_document(resource) for resource in stored])
    assert "per_try_timeout: 1s" in printed and "max_requests: 20" in printed
    assert load_documents(printed, "again.yaml", []) == stored
