"""A ``tcp`` Service's Envoy resources: its instances' inbound listener is mutual TLS, the
AccessPolicy's rules as ``envoy.filters.network.rbac`` filters (identities only: a connection has
no HTTP fields), then ``envoy.filters.network.tcp_proxy`` to the app; each caller gets one
outbound ``tcp_proxy`` listener per TCP service it calls, to that service's cluster (mutual TLS,
no ALPN, no HTTP options), on a port the control plane assigns.

Ports: the app reaches a called TCP service on its sidecar's outbound address, the port plus
``1 + i``, where ``i`` is the service's place among the mesh's TCP services in (namespace, name)
order. Every caller reaches one service on the same offset, and the listener's name says which
service it is (``outbound_tcp_<service>.<namespace>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2
from meshproxy.mesh import names

from .build import _common_tls, packed, socket_address
from .rbac import rbac_filters

ServiceKey = tuple[str, str]


def listener_name(service: str, namespace: str) -> str:
    return f"outbound_tcp_{service}.{namespace}"


def ports(services: Sequence[ServiceKey], outbound: str) -> dict[ServiceKey, str]:
    """The address of each TCP service's outbound listener, next to the caller's ``outbound``."""
    host, _, port = outbound.rpartition(":")
    ordered = sorted(services, key=lambda key: (key[1], key[0]))
    return {key: f"{host}:{int(port) + 1 + i}" for i, key in enumerate(ordered)}


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


def inbound_listener(address: str, policy: Mapping[str, Any] | None, mtls: str,
                     trust_domain: str) -> listener_pb2.Listener:
    """A TCP service's inbound listener: mutual TLS (or, permissive, both), RBAC, the app."""
    filters = [*network_rbac(policy, trust_domain), tcp_proxy(names.INBOUND, names.APP_CLUSTER)]
    tls = tls_pb2.DownstreamTlsContext(
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        common_tls_context=_common_tls(string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/"), []))
    secure = listener_components_pb2.FilterChain(
        filters=filters,
        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed(tls)))
    listener = listener_pb2.Listener(name=names.INBOUND, address=socket_address(address),
                                     traffic_direction=base_pb2.INBOUND)
    if mtls == "permissive":
        listener.listener_filters.append(listener_components_pb2.ListenerFilter(
            name="envoy.filters.listener.tls_inspector", typed_config=packed(tls_inspector_pb2.TlsInspector())))
        secure.filter_chain_match.transport_protocol = "tls"
        plain = listener_components_pb2.FilterChain(
            filter_chain_match=listener_components_pb2.FilterChainMatch(transport_protocol="raw_buffer"),
            filters=filters)
        listener.filter_chains.extend([secure, plain])
    else:
        listener.filter_chains.append(secure)
    return listener


def outbound_listener(service: str, namespace: str, address: str) -> listener_pb2.Listener:
    """The listener the app reaches a called TCP service on: every connection to its cluster."""
    name = listener_name(service, namespace)
    return listener_pb2.Listener(
        name=name, address=socket_address(address), traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[listener_components_pb2.FilterChain(
            filters=[tcp_proxy(name, names.service_cluster(service, namespace))])])
