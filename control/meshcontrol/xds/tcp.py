"""A ``tcp`` Service's Envoy resources: its instances' inbound listener is mutual TLS, the
AccessPolicy's rules as ``envoy.filters.network.rbac`` filters (identities only: a connection has
no HTTP fields), the TrafficPolicy's ``rate_limit`` as ``envoy.filters.network.local_ratelimit``
(a token per connection), then ``envoy.filters.network.tcp_proxy`` to the app; each caller gets one
outbound ``tcp_proxy`` listener per TCP service it calls, to that service's cluster (mutual TLS,
no ALPN, no HTTP options), on a port the control plane assigns.

Captured (``meshproxy capture``): the capture listener has one ``tcp_proxy`` filter chain per
called TCP service and app port, matched on its instances' IPs (a connection there is the
service's, whatever it sends), and, last, the passthrough: HTTP (``application_protocols``, as
``envoy.filters.listener.http_inspector`` finds them) to the HTTP passthrough cluster, the rest
``tcp_proxy`` to the TCP one (both ``ORIGINAL_DST``). A client silent for
``DETECT_TIMEOUT`` (server-first) goes on undetected, to the TCP chain.

Ports: the app reaches a called TCP service on its sidecar's outbound address (its IP), at the
Service's ``port``, or at the outbound port plus the Service's ``port_offset``, which the control
plane gives once and keeps (``resources.tcp_ports``): adding or deleting other services never
moves it. The listener's name says which service it is (``outbound_tcp_<service>.<namespace>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.network.local_ratelimit.v3 import local_rate_limit_pb2 as network_local_rate_limit_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import duration_pb2
from meshproxy.mesh import names

from ..resources import tcp_ports
from .build import CONNECT_TIMEOUT, destination_matches, mutual_tls_listener, packed, socket_address
from .rbac import rbac_filters
from .route_filters import token_bucket

ServiceKey = tuple[str, str]
# Istio's protocolDetectionTimeout: how long the capture listener waits for a client's first
# bytes before taking it for a server-first protocol (the sidecar's detect_timeout).
DETECT_TIMEOUT = duration_pb2.Duration(nanos=100_000_000)
# What http_inspector reports for HTTP/1.x and h2c: the HTTP passthrough chain matches them.
HTTP_PROTOCOLS = ["http/1.0", "http/1.1", "h2c"]
NETWORK_RATE_LIMIT = "envoy.filters.network.local_ratelimit"


def listener_name(service: str, namespace: str) -> str:
    return f"outbound_tcp_{service}.{namespace}"


def addresses(services: Mapping[ServiceKey, Mapping[str, Any]], outbound: str) -> dict[ServiceKey, str]:
    """The address of each TCP service's outbound listener on a caller whose sidecar's outbound
    address is ``outbound``: the Service's ``port``, or the outbound port plus its offset."""
    offsets = tcp_ports.offsets_for(services.values())  # for Services stored before offsets were kept
    found = {}
    for key, service in services.items():
        address = tcp_ports.listener_address(service, offsets.get(key), outbound)
        if address is not None:
            found[key] = address
    return found


def tcp_proxy(stat_prefix: str, cluster: str) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy", typed_config=packed(
        tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)))


def network_rbac(policy: Mapping[str, Any] | None, trust_domain: str) -> list[listener_components_pb2.Filter]:
    """The AccessPolicy's RBAC filters as network filters: the same rules, by the same names."""
    filters = []
    for http_filter in rbac_filters(policy, trust_domain):
        http = http_rbac_pb2.RBAC.FromString(http_filter.typed_config.value)
        network = network_rbac_pb2.RBAC(stat_prefix=http_filter.name.replace(".", "_"))
        if http.HasField("rules"):
            network.rules.CopyFrom(http.rules)
        if http.HasField("shadow_rules"):
            network.shadow_rules.CopyFrom(http.shadow_rules)
        filters.append(listener_components_pb2.Filter(name=http_filter.name, typed_config=packed(network)))
    return filters


def network_rate_limit(settings: Mapping[str, Any] | None) -> list[listener_components_pb2.Filter]:
    """A TrafficPolicy's ``rate_limit`` for a TCP service: a token bucket of connections
    (``envoy.filters.network.local_ratelimit``, which closes a connection it has no token for)."""
    if settings is None:
        return []
    limit = network_local_rate_limit_pb2.LocalRateLimit(stat_prefix=names.INBOUND, token_bucket=token_bucket(settings))
    return [listener_components_pb2.Filter(name=NETWORK_RATE_LIMIT, typed_config=packed(limit))]


def inbound_listener(address: str, policy: Mapping[str, Any] | None, mtls: str, trust_domain: str,
                     rate_limit: Mapping[str, Any] | None = None) -> listener_pb2.Listener:
    """A TCP service's inbound listener: mutual TLS (or, permissive, both), RBAC, the
    TrafficPolicy's rate limit, the app."""
    filters = [*network_rbac(policy, trust_domain), *network_rate_limit(rate_limit),
               tcp_proxy(names.INBOUND, names.APP_CLUSTER)]
    return mutual_tls_listener(address, filters, mtls, trust_domain, [])


def outbound_listener(service: str, namespace: str, address: str) -> listener_pb2.Listener:
    """The listener the app reaches a called TCP service on: every connection to its cluster."""
    name = listener_name(service, namespace)
    return listener_pb2.Listener(
        name=name, address=socket_address(address), traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[listener_components_pb2.FilterChain(
            filters=[tcp_proxy(name, names.service_cluster(service, namespace))])])


def capture_tcp(listener: listener_pb2.Listener, called: Sequence[tuple[ServiceKey, Sequence[str]]]) -> None:
    """Adds to a capture listener (``build.capture_listener``, whose last chain is the HTTP
    passthrough) its TCP chains: one per called TCP service and app port, before the
    passthrough; then the TCP passthrough, last."""
    *chains, http_passthrough = listener.filter_chains
    for (service, namespace), destinations in called:
        for port, match in destination_matches(destinations):
            chains.append(listener_components_pb2.FilterChain(
                name=f"{service}.{namespace}:{port}", filter_chain_match=match,
                filters=[tcp_proxy(names.CAPTURE, names.service_cluster(service, namespace))]))
    http_passthrough.filter_chain_match.application_protocols.extend(HTTP_PROTOCOLS)
    tcp_passthrough = listener_components_pb2.FilterChain(
        name=names.PASSTHROUGH_TCP, filters=[tcp_proxy(names.CAPTURE, names.PASSTHROUGH_TCP)])
    del listener.filter_chains[:]
    listener.filter_chains.extend([*chains, http_passthrough, tcp_passthrough])
    listener.listener_filters.append(listener_components_pb2.ListenerFilter(
        name="envoy.filters.listener.http_inspector", typed_config=packed(http_inspector_pb2.HttpInspector())))
    listener.listener_filters_timeout.CopyFrom(DETECT_TIMEOUT)
    listener.continue_on_listener_filters_timeout = True


def passthrough_cluster() -> cluster_pb2.Cluster:
    """Where a captured connection that is not HTTP, to no called TCP service, goes: its bytes,
    where they were going (out of the mesh)."""
    return cluster_pb2.Cluster(name=names.PASSTHROUGH_TCP, type=cluster_pb2.Cluster.ORIGINAL_DST,
                               lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED, connect_timeout=CONNECT_TIMEOUT)
