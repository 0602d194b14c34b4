"""The xDS messages as the sidecar reads them: ``xds_pb2``, the part of Envoy's schema it uses
(see ``xds_subset.py``), wire-compatible with Envoy's, and two helpers its shape asks for.

In the subset the messages live in package ``meshproxy.xds``, so an ``Any`` that says
``type.googleapis.com/envoy.config.cluster.v3.Cluster`` is opened by :func:`unpack`, which reads
the type URL as Envoy's name. Fields of message types the sidecar does not read are ``bytes``
there, with no presence of their own: :func:`is_set` tells whether one came.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import any_pb2

from . import xds_pb2

M = TypeVar("M")

# Envoy's name of each message the sidecar opens from an Any.
ENVOY_NAMES: dict[type[Any], str] = {
    xds_pb2.Listener: "envoy.config.listener.v3.Listener",
    xds_pb2.RouteConfiguration: "envoy.config.route.v3.RouteConfiguration",
    xds_pb2.Cluster: "envoy.config.cluster.v3.Cluster",
    xds_pb2.ClusterLoadAssignment: "envoy.config.endpoint.v3.ClusterLoadAssignment",
    xds_pb2.Secret: "envoy.extensions.transport_sockets.tls.v3.Secret",
    xds_pb2.Resource: "envoy.service.discovery.v3.Resource",
    xds_pb2.HttpConnectionManager:
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    xds_pb2.RbacFilter: "envoy.extensions.filters.http.rbac.v3.RBAC",
    xds_pb2.TcpProxy: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    xds_pb2.NetworkRbacFilter: "envoy.extensions.filters.network.rbac.v3.RBAC",
    xds_pb2.NetworkLocalRateLimit: "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    xds_pb2.HttpFault: "envoy.extensions.filters.http.fault.v3.HTTPFault",
    xds_pb2.LocalRateLimit: "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    xds_pb2.DownstreamTlsContext: "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    xds_pb2.UpstreamTlsContext: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    xds_pb2.HttpProtocolOptions: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
}
ROUTER = "envoy.extensions.filters.http.router.v3.Router"


def type_name(config: any_pb2.Any) -> str:
    """The message name an Any holds (its type URL after the last '/')."""
    return str(config.type_url.rpartition("/")[2])


def unpack(config: any_pb2.Any, kind: type[M]) -> M | None:
    """The message of type ``kind`` in ``config``, or None if it holds another type."""
    if type_name(config) != ENVOY_NAMES[kind]:
        return None
    return kind.FromString(config.value)  # type: ignore[attr-defined, no-any-return]


def is_set(message: Any, field: str) -> bool:
    """Whether ``field`` came with ``message``: set, or a non-empty list, map or value."""
    return any(descriptor.name == field for descriptor, _ in message.ListFields())
