"""A ``protocol: tcp`` Service as the control plane sends it, read with Envoy's classes: its
callers get a ``tcp_proxy`` listener on the service's port (here the outbound port plus the
``port_offset`` the control plane gave it) to the service's cluster (mTLS, no ALPN, no HTTP options), and no
HTTP route to it; its own instances get an inbound ``tcp_proxy`` listener behind mutual TLS and
the AccessPolicy as network RBAC, and the TrafficPolicy's rate limit as a token bucket of
connections. Through the wire and the sidecar's translation: ``tcp`` listeners and clusters,
authorized by identity, limited by connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from meshcontrol.xds.build import HTTP_PROTOCOL_OPTIONS, LISTENER, ROUTE
from meshcontrol.xds.snapshot import Client
from meshproxy.mesh import xds_pb2
from meshproxy.mesh.names import NodeMetadata
from meshproxy.mesh.translate import Local, Refused, Resources, translate
from test_xds_traffic_policy import ORDERS, built, envoy_clusters, sidecar_config

from mesh_documents import documents, service

TCP_SERVICES = (service("orders", "shop", calls=["payments", "cache"]), service("payments", "shop"),
                service("cache", "shop", protocol="tcp"), service("ledger", "shop", protocol="tcp"))
POLICY = "kind: AccessPolicy\nservice: cache\nnamespace: shop\nrules: [{name: orders-only, action: allow, services: [orders]}]\n"
LIMITED = "kind: TrafficPolicy\nservice: cache\nnamespace: shop\nrate_limit: {requests_per_second: 5, burst: 10}\n"
CACHE = NodeMetadata("cache", "shop", "v1", "127.0.0.1:20009", "127.0.0.1:15100", "127.0.0.1:15101", "127.0.0.1:6379")


def listeners(snapshots: object, client: Client) -> dict[str, listener_pb2.Listener]:
    found = {}
    for entry in snapshots.resources(client, LISTENER):  # type: ignore[attr-defined]
        listener = listener_pb2.Listener()
        entry.resource.Unpack(listener)
        found[entry.name] = listener
    return found


def test_a_caller_gets_a_tcp_proxy_listener_on_its_assigned_port_and_no_http_route(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *TCP_SERVICES)
    found = listeners(snapshots, Client(ORDERS))
    assert set(found) == {"inbound", "outbound", "outbound_tcp_cache.shop"}, "ledger is not called"
    tcp = found["outbound_tcp_cache.shop"]
    # cache was given port_offset 1 (the file lists it before ledger): outbound port 15001 + 1.
    assert tcp.address.socket_address.port_value == 15002
    proxy = tcp_proxy_pb2.TcpProxy()
    tcp.filter_chains[0].filters[0].typed_config.Unpack(proxy)
    assert proxy.cluster == "outbound_cache.shop"
    cluster = envoy_clusters(snapshots)["outbound_cache.shop"]
    assert HTTP_PROTOCOL_OPTIONS not in cluster.typed_extension_protocol_options
    [entry] = [e for e in snapshots.resources(Client(ORDERS), ROUTE) if e.name == "outbound"]
    routes = route_pb2.RouteConfiguration()
    entry.resource.Unpack(routes)
    assert [host.name for host in routes.virtual_hosts] == ["payments.shop"]


def test_a_tcp_service_instance_gets_mtls_network_rbac_and_tcp_proxy_to_its_app(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *TCP_SERVICES, POLICY)
    inbound = listeners(snapshots, Client(CACHE))["inbound"]
    [chain] = inbound.filter_chains
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    rbac, proxy = chain.filters
    rules = network_rbac_pb2.RBAC()
    rbac.typed_config.Unpack(rules)
    assert list(rules.rules.policies) == ["orders-only"]
    assert proxy.name == "envoy.filters.network.tcp_proxy"


def test_the_sidecar_reads_back_tcp_listeners_and_clusters(tmp_path: Path) -> None:
    config = sidecar_config(built(tmp_path, *TCP_SERVICES), tmp_path)
    [tcp] = [listener for listener in config["listeners"] if listener["protocol"] == "tcp"]
    assert (tcp["name"], tcp["address"], tcp["routes"][0]["cluster"]) == (
        "outbound_tcp_cache.shop", "127.0.0.1:15002", "outbound_cache.shop")
    clusters = {cluster["name"]: cluster for cluster in config["clusters"]}
    assert clusters["outbound_cache.shop"]["protocol"] == "tcp"
    assert clusters["outbound_cache.shop"]["tls"]["identities"] == ["spiffe://mesh.local/ns/shop/sa/cache"]
    assert clusters["outbound_payments.shop"]["protocol"] == "http2"


def test_a_tcp_services_rate_limit_is_a_token_bucket_of_connections_after_its_rbac(tmp_path: Path) -> None:
    snapshots = built(tmp_path, *TCP_SERVICES, POLICY, LIMITED)
    [chain] = listeners(snapshots, Client(CACHE))["inbound"].filter_chains
    assert [f.name for f in chain.filters][1:] == ["envoy.filters.network.local_ratelimit",
                                                   "envoy.filters.network.tcp_proxy"]
    limit = local_rate_limit_pb2.LocalRateLimit()
    chain.filters[1].typed_config.Unpack(limit)
    bucket = limit.token_bucket
    assert (bucket.max_tokens, bucket.tokens_per_fill.value, bucket.fill_interval.seconds) == (10, 5, 1)
    [inbound] = [l for l in sidecar_config(snapshots, tmp_path, CACHE)["listeners"] if l["name"] == "inbound"]
    assert (inbound["protocol"], inbound["tls"]) == ("tcp", "strict")
    assert inbound["rate_limit"] == {"requests_per_second": 5, "burst": 10}
    assert [p["name"] for p in inbound["authorization"]] == ["cache.shop"]


def test_a_rate_limit_before_the_rbac_it_would_follow_is_refused(tmp_path: Path) -> None:
    # The sidecar authorizes a connection before it takes a token: a bucket before an RBAC
    # filter would count denied connections, which the sidecar cannot do.
    snapshots = built(tmp_path, *TCP_SERVICES, POLICY, LIMITED)
    [entry] = [e for e in snapshots.resources(Client(CACHE), LISTENER) if e.name == "inbound"]
    listener = xds_pb2.Listener.FromString(entry.resource.value)
    filters = listener.filter_chains[0].filters
    rbac, limit, proxy = list(filters)
    del filters[:]
    filters.extend([limit, rbac, proxy])
    local = Local(inbound="127.0.0.1:0", outbound=CACHE.outbound, admin=CACHE.admin, app=CACHE.app,
                  trust_domain="mesh.local", cert="c.pem", key="k.pem", bundle="b.pem")
    with pytest.raises(Refused, match="expected the rate limit after every RBAC filter"):
        translate(Resources({"inbound": listener}, {}, {}, {}), local)
