"""A ``protocol: tcp`` Service as the control plane sends it, read with Envoy's classes: its
callers get a ``tcp_proxy`` listener on the assigned port (outbound port + 1 + the service's place
among the mesh's TCP services) to the service's cluster (mTLS, no ALPN, no HTTP options), and no
HTTP route to it; its own instances get an inbound ``tcp_proxy`` listener behind mutual TLS and
the AccessPolicy as network RBAC. Through the wire and the sidecar's translation: ``tcp``
listeners and clusters, authorized by identity."""

from __future__ import annotations

from pathlib import Path

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from meshcontrol.xds.build import HTTP_PROTOCOL_OPTIONS, LISTENER, ROUTE
from meshcontrol.xds.snapshot import Client
from meshproxy.mesh.names import NodeMetadata
from test_xds_traffic_policy import ORDERS, built, envoy_clusters, sidecar_config

from mesh_documents import documents, service

TCP_SERVICES = (service("orders", "shop", calls=["payments", "cache"]), service("payments", "shop"),
                service("cache", "shop", protocol="tcp"), service("ledger", "shop", protocol="tcp"))
POLICY = "kind: AccessPolicy\nservice: cache\nnamespace: shop\nrules: [{name: orders-only, action: allow, services: [orders]}]\n"
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
    # cache is the first of the mesh's TCP services (cache, ledger): outbound port 15001 + 1.
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
