"""A Route rule's `idle_timeout` and `timeout_covers`, and a TrafficPolicy's `idle_timeout` and
`rate_limit`, as Envoy's fields (RouteAction.idle_timeout, the route's metadata,
common_http_protocol_options.idle_timeout, local_ratelimit on the inbound listener), and read
back by the sidecar into the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from meshcontrol.resources import ConfigError, as_document, load_documents
from meshcontrol.xds.build import LISTENER, ROUTE
from meshcontrol.xds.route_policy import fraction
from meshcontrol.xds.snapshot import Client
from test_xds_traffic_policy import ORDERS, built, envoy_clusters, sidecar_config

from mesh_documents import documents, service

POLICIES = """\
kind: TrafficPolicy
service: orders
namespace: shop
rate_limit: {requests_per_second: 50, burst: 80}
---
kind: TrafficPolicy
service: payments
namespace: shop
idle_timeout: 20s
---
kind: Route
service: payments
namespace: shop
rules:
  - match: {path_prefix: /download}
    to: [{version: v1}]
    timeout: 30s
    timeout_covers: response
    idle_timeout: 5s
  - to: [{version: v1}]
"""
PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def parts() -> tuple[str, ...]:
    return service("orders", "shop", calls=["payments", "stock"]), service("payments", "shop"), \
        service("stock", "shop"), POLICIES


def test_the_settings_are_envoys_route_cluster_and_listener_fields(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *parts())
    [outbound] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    config = route_pb2.RouteConfiguration()
    outbound.resource.Unpack(config)
    [download, rest] = next(h for h in config.virtual_hosts if "payments" in h.domains).routes
    assert (download.route.timeout.ToSeconds(), download.route.idle_timeout.ToSeconds()) == (30, 5)
    assert download.metadata.filter_metadata["meshproxy"]["timeout_covers"] == "response"
    assert not rest.route.HasField("idle_timeout") and not rest.metadata.filter_metadata

    clusters = envoy_clusters(snapshots)

    def idle_timeout_s(name: str) -> int:
        options = http_protocol_options_pb2.HttpProtocolOptions()
        clusters[name].typed_extension_protocol_options[PROTOCOL_OPTIONS].Unpack(options)
        return int(options.common_http_protocol_options.idle_timeout.ToSeconds())

    assert idle_timeout_s("outbound_payments.shop_v1") == 20
    assert idle_timeout_s("outbound_stock.shop") == 60  # no TrafficPolicy: the sidecar's default

    [inbound] = [e for e in snapshots.resources(Client(ORDERS), LISTENER) if e.name == "inbound"]
    listener = listener_pb2.Listener()
    inbound.resource.Unpack(listener)
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    names = [f.name for f in manager.http_filters]
    assert names[-2:] == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    limit = local_rate_limit_pb2.LocalRateLimit()
    manager.http_filters[-2].typed_config.Unpack(limit)
    assert (limit.token_bucket.tokens_per_fill.value, limit.token_bucket.max_tokens) == (50, 80)
    assert limit.filter_enabled.default_value == limit.filter_enforced.default_value == fraction(100)


def test_the_sidecar_reads_back_the_settings_the_documents_wrote(tmp_path: Path) -> None:
    config = sidecar_config(built(tmp_path, *parts()), tmp_path)
    inbound, outbound = config["listeners"]
    assert inbound["rate_limit"] == {"requests_per_second": 50, "burst": 80}
    assert outbound["rate_limit"] is None
    download, rest = [r for r in outbound["routes"] if r["match"]["host"] == "payments"]
    assert (download["timeout"], download["timeout_covers"], download["idle_timeout"]) == ("30000ms", "response", "5000ms")
    assert (rest["timeout_covers"], rest["idle_timeout"]) == ("headers", "0ms")
    clusters = {c["name"]: c for c in config["clusters"]}
    assert clusters["outbound_payments.shop_v1"]["idle_timeout"] == "20000ms"
    assert clusters["outbound_stock.shop"]["idle_timeout"] == "60000ms"


def test_meshctl_get_writes_the_settings_as_a_file_does() -> None:
    loaded = [as_document(r) for r in load_documents(documents(*parts()), "mesh.yaml", [])]
    orders, payments, route = (r for r in loaded if r["kind"] != "Service")
    assert orders["rate_limit"] == {"requests_per_second": 50, "burst": 80}
    assert (orders["idle_timeout"], payments["idle_timeout"]) == ("1m", "20s")
    assert route["rules"][0]["idle_timeout"] == "5s" and route["rules"][0]["timeout_covers"] == "response"
    assert "idle_timeout" not in route["rules"][1]


@pytest.mark.parametrize(("document", "message"), [
    ("kind: TrafficPolicy\nservice: orders\nidle_timeout: 0s\n",
     "mesh.yaml:6: documents[1] (TrafficPolicy default/orders): idle_timeout: idle_timeout must be greater than 0"),
    ("kind: Route\nservice: orders\nrules:\n  - to: [{version: v1}]\n    timeout: 0s\n    timeout_covers: response\n",
     "mesh.yaml:9: documents[1] (Route default/orders): rules[0].timeout_covers: timeout_covers: response needs a "
     "timeout greater than 0"),
    ("kind: Route\nservice: orders\nrules:\n  - direct_response: {status: 200}\n    idle_timeout: 1s\n",
     "mesh.yaml:8: documents[1] (Route default/orders): rules[0].idle_timeout: applies to a rule with to only"),
])
def test_bad_settings_get_one_message_at_their_field(document: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_documents(documents(service("orders"), document), "mesh.yaml", [])
    assert len(caught.value.issues) == 1, str(caught.value)
    assert message in str(caught.value)
