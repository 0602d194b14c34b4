"""Writes ``xds.proto``: the part of Envoy's xDS schema the sidecar reads, wire-compatible with
Envoy's own (``xds-protos``). Run by ``make protos``; the sidecar never imports this module.

Why a subset: Envoy's generated modules bring the descriptors of everything they import (access
logs, health checks, CEL, validation rules, ...): about 4 MiB of resident memory in a sidecar that
reads a few dozen messages. The subset keeps, for every message the sidecar reads, every field
with Envoy's name, number, cardinality and oneof, so a resource decodes exactly as Envoy's classes
would decode it, and a field the sidecar does not translate is still seen (and refused) by name;
a field of a message type the sidecar does not read is kept as ``bytes`` (the same bytes on the
wire). Enums are copied whole. ``tests/unit/test_mesh_translate.py`` builds resources with
Envoy's classes and decodes them with these.

    python -m meshproxy.mesh.xds_subset > python/meshproxy/mesh/xds.proto
"""

from __future__ import annotations

import importlib
import sys

from google.protobuf import descriptor_pb2, descriptor_pool

PACKAGE = "meshproxy.xds"
# Envoy modules whose import registers the messages below.
MODULES = (
    "envoy.service.discovery.v3.discovery_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.cluster.v3.outlier_detection_pb2",
    "envoy.config.cluster.v3.circuit_breaker_pb2",
    "envoy.type.v3.percent_pb2",
    "envoy.config.core.v3.health_check_pb2",
    "envoy.type.v3.range_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.config.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.local_ratelimit.v3.local_rate_limit_pb2",
)
# The messages the sidecar reads, and the name each has in the subset (Envoy's simple name,
# unless two would clash). Nested ones are listed under their parent's new name.
MESSAGES = {
    "envoy.service.discovery.v3.DiscoveryRequest": "DiscoveryRequest",
    "envoy.service.discovery.v3.DiscoveryResponse": "DiscoveryResponse",
    "envoy.service.discovery.v3.Resource": "Resource",
    "envoy.config.core.v3.Node": "Node",
    "envoy.config.core.v3.Metadata": "Metadata",
    "envoy.config.core.v3.Address": "Address",
    "envoy.config.core.v3.SocketAddress": "SocketAddress",
    "envoy.config.core.v3.CidrRange": "CidrRange",
    "envoy.config.core.v3.TransportSocket": "TransportSocket",
    "envoy.config.core.v3.DataSource": "DataSource",
    "envoy.config.listener.v3.Listener": "Listener",
    "envoy.config.listener.v3.FilterChain": "FilterChain",
    "envoy.config.listener.v3.FilterChainMatch": "FilterChainMatch",
    "envoy.config.listener.v3.Filter": "Filter",
    "envoy.config.listener.v3.ListenerFilter": "ListenerFilter",
    "envoy.config.listener.v3.AdditionalAddress": "AdditionalAddress",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": "HttpConnectionManager",
    "envoy.extensions.filters.network.http_connection_manager.v3.Rds": "Rds",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": "HttpFilter",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": "TcpProxy",
    "envoy.extensions.filters.network.rbac.v3.RBAC": "NetworkRbacFilter",
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit": "NetworkLocalRateLimit",
    "envoy.config.route.v3.RouteConfiguration": "RouteConfiguration",
    "envoy.config.route.v3.VirtualHost": "VirtualHost",
    "envoy.config.route.v3.Route": "Route",
    "envoy.config.route.v3.RouteMatch": "RouteMatch",
    "envoy.config.route.v3.RouteAction": "RouteAction",
    "envoy.config.route.v3.RouteAction.HashPolicy": "RouteAction.HashPolicy",
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": "RouteAction.HashPolicy.Header",
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": "RouteAction.HashPolicy.Cookie",
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": "RouteAction.HashPolicy.ConnectionProperties",
    "envoy.config.route.v3.RedirectAction": "RedirectAction",
    "envoy.config.route.v3.DirectResponseAction": "DirectResponseAction",
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": "RouteAction.RequestMirrorPolicy",
    "envoy.config.core.v3.RuntimeFractionalPercent": "RuntimeFractionalPercent",
    "envoy.type.v3.FractionalPercent": "FractionalPercent",
    "envoy.config.route.v3.RetryPolicy": "RetryPolicy",
    "envoy.config.route.v3.RetryPolicy.RetryBackOff": "RetryPolicy.RetryBackOff",
    "envoy.config.route.v3.RetryPolicy.RetryHostPredicate": "RetryPolicy.RetryHostPredicate",
    "envoy.config.route.v3.WeightedCluster": "WeightedCluster",
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": "WeightedCluster.ClusterWeight",
    "envoy.config.route.v3.HeaderMatcher": "HeaderMatcher",
    "envoy.type.matcher.v3.StringMatcher": "StringMatcher",
    "envoy.type.matcher.v3.RegexMatcher": "RegexMatcher",
    "envoy.type.matcher.v3.RegexMatchAndSubstitute": "RegexMatchAndSubstitute",
    "envoy.type.matcher.v3.PathMatcher": "PathMatcher",
    "envoy.extensions.filters.http.rbac.v3.RBAC": "RbacFilter",
    "envoy.extensions.filters.http.fault.v3.HTTPFault": "HttpFault",
    "envoy.extensions.filters.http.fault.v3.FaultAbort": "FaultAbort",
    "envoy.extensions.filters.common.fault.v3.FaultDelay": "FaultDelay",
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": "LocalRateLimit",
    "envoy.type.v3.TokenBucket": "TokenBucket",
    "envoy.config.rbac.v3.RBAC": "RBAC",
    "envoy.config.rbac.v3.Policy": "Policy",
    "envoy.config.rbac.v3.Permission": "Permission",
    "envoy.config.rbac.v3.Permission.Set": "Permission.Set",
    "envoy.config.rbac.v3.Principal": "Principal",
    "envoy.config.rbac.v3.Principal.Set": "Principal.Set",
    "envoy.config.rbac.v3.Principal.Authenticated": "Principal.Authenticated",
    "envoy.config.cluster.v3.Cluster": "Cluster",
    "envoy.config.cluster.v3.Cluster.EdsClusterConfig": "Cluster.EdsClusterConfig",
    "envoy.config.cluster.v3.OutlierDetection": "OutlierDetection",
    "envoy.config.cluster.v3.CircuitBreakers": "CircuitBreakers",
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": "CircuitBreakers.Thresholds",
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": "CircuitBreakers.Thresholds.RetryBudget",
    "envoy.type.v3.Percent": "Percent",
    "envoy.config.core.v3.HealthCheck": "HealthCheck",
    "envoy.config.core.v3.HealthCheck.HttpHealthCheck": "HealthCheck.HttpHealthCheck",
    "envoy.config.core.v3.HealthCheck.GrpcHealthCheck": "HealthCheck.GrpcHealthCheck",
    "envoy.config.core.v3.HealthCheck.TcpHealthCheck": "HealthCheck.TcpHealthCheck",
    "envoy.type.v3.Int64Range": "Int64Range",
    "envoy.config.endpoint.v3.ClusterLoadAssignment": "ClusterLoadAssignment",
    "envoy.config.endpoint.v3.LocalityLbEndpoints": "LocalityLbEndpoints",
    "envoy.config.endpoint.v3.LbEndpoint": "LbEndpoint",
    "envoy.config.endpoint.v3.Endpoint": "Endpoint",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": "HttpProtocolOptions",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig":
        "HttpProtocolOptions.ExplicitHttpConfig",
    # Read for its idle_timeout (a cluster's idle_timeout).
    "envoy.config.core.v3.HttpProtocolOptions": "CommonHttpProtocolOptions",
    # Read for its presence: `http2_protocol_options {}` alone says "HTTP/2".
    "envoy.config.core.v3.Http2ProtocolOptions": "Http2ProtocolOptions",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": "DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": "UpstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": "CommonTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext":
        "CommonTlsContext.CombinedCertificateValidationContext",
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": "CertificateValidationContext",
    "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": "SubjectAltNameMatcher",
    "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": "SdsSecretConfig",
    "envoy.extensions.transport_sockets.tls.v3.Secret": "Secret",
    "google.rpc.Status": "Status",
}
# Well-known types, used as they are.
WELL_KNOWN = {
    "google.protobuf.Any": "google/protobuf/any.proto",
    "google.protobuf.Duration": "google/protobuf/duration.proto",
    "google.protobuf.Struct": "google/protobuf/struct.proto",
    "google.protobuf.BoolValue": "google/protobuf/wrappers.proto",
    "google.protobuf.UInt32Value": "google/protobuf/wrappers.proto",
}
_SCALARS = {getattr(descriptor_pb2.FieldDescriptorProto, f"TYPE_{name.upper()}"): name for name in (
    "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "bytes", "uint32",
    "sfixed32", "sfixed64", "sint32", "sint64")}


def render() -> str:
    for module in MODULES:
        importlib.import_module(module)
    pool = descriptor_pool.Default()
    enums: dict[str, str] = {}  # Envoy full name -> subset name, for enums declared outside the subset's messages
    imports: set[str] = set()
    out = []
    for full, name in MESSAGES.items():
        if "." in name:
            continue  # rendered inside its parent
        out += _message(pool, full, name, 0, pool.FindMessageTypeByName(full), enums, imports)
    for full, name in sorted(enums.items(), key=lambda item: item[1]):
        out += _enum(pool.FindEnumTypeByName(full), name, 0)
    head = ["// Generated by python -m meshproxy.mesh.xds_subset (make protos): the part of Envoy's xDS schema",
            "// the sidecar reads, wire-compatible with Envoy's. Do not edit.",
            'syntax = "proto3";', "", f"package {PACKAGE};", ""]
    head += [f'import "{path}";' for path in sorted(imports)] + [""]
    return "\n".join(head + out) + "\n"


def _message(pool: descriptor_pool.DescriptorPool, full: str, name: str, depth: int, descriptor: object,
             enums: dict[str, str], imports: set[str]) -> list[str]:
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)  # type: ignore[attr-defined]
    pad = "  " * depth
    lines = [f"{pad}message {name.rpartition('.')[2]} {{"]
    nested = {f"{full}.{e.name}" for e in proto.enum_type}
    for enum in proto.enum_type:
        lines += _enum(pool.FindEnumTypeByName(f"{full}.{enum.name}"), enum.name, depth + 1)
    for child in proto.nested_type:
        child_full = f"{full}.{child.name}"
        if child_full in MESSAGES:
            lines += _message(pool, child_full, MESSAGES[child_full], depth + 1, pool.FindMessageTypeByName(child_full),
                              enums, imports)
    oneofs: dict[int, list[str]] = {}
    plain: list[tuple[int, str]] = []
    maps = {child.name: child for child in proto.nested_type if child.options.map_entry}
    for field in proto.field:
        text = _field(field, maps, nested, enums, imports)
        if field.HasField("oneof_index") and not field.proto3_optional:
            oneofs.setdefault(field.oneof_index, []).append(text)
        else:
            plain.append((field.number, text))
    for number, text in plain:
        lines.append(f"{pad}  {text}")
    for index, fields in oneofs.items():
        lines.append(f"{pad}  oneof {proto.oneof_decl[index].name} {{")
        lines += [f"{pad}    {text}" for text in fields]
        lines.append(f"{pad}  }}")
    lines.append(f"{pad}}}")
    return lines


def _field(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, descriptor_pb2.DescriptorProto],
           nested: set[str], enums: dict[str, str], imports: set[str]) -> str:
    label = ""
    if field.label == field.LABEL_REPEATED:
        label = "repeated "
    elif field.proto3_optional:
        label = "optional "
    kind = _type(field, nested, enums, imports)
    entry = field.type_name.rpartition(".")[2]
    if field.label == field.LABEL_REPEATED and entry in maps:
        key, value = maps[entry].field
        label, kind = "", f"map<{_type(key, nested, enums, imports)}, {_type(value, nested, enums, imports)}>"
    return f"{label}{kind} {field.name} = {field.number};"


def _type(field: descriptor_pb2.FieldDescriptorProto, nested: set[str], enums: dict[str, str],
          imports: set[str]) -> str:
    target = field.type_name.lstrip(".")
    if field.type == field.TYPE_MESSAGE:
        if target in MESSAGES:
            return f"{PACKAGE}.{MESSAGES[target]}"
        if target in WELL_KNOWN:
            imports.add(WELL_KNOWN[target])
            return target
        if target.endswith("Entry") and target.rpartition(".")[0].rpartition(".")[2][:1].isupper():
            return target  # a map entry (nested in its message): replaced by the map<> form
        return "bytes"  # a message the sidecar does not read: the same bytes on the wire
    if field.type == field.TYPE_ENUM:
        if target in nested:
            return target.rpartition(".")[2]
        parent = target.rpartition(".")[0]
        if parent in MESSAGES:
            return f"{PACKAGE}.{MESSAGES[parent]}.{target.rpartition('.')[2]}"
        enums.setdefault(target, target.rpartition(".")[2])
        return f"{PACKAGE}.{enums[target]}"
    return _SCALARS[field.type]


def _enum(descriptor: object, name: str, depth: int) -> list[str]:
    proto = descriptor_pb2.EnumDescriptorProto()
    descriptor.CopyToProto(proto)  # type: ignore[attr-defined]
    pad = "  " * depth
    lines = [f"{pad}enum {name} {{"]
    if any(v.number == w.number and v is not w for v in proto.value for w in proto.value):
        lines.append(f"{pad}  option allow_alias = true;")
    lines += [f"{pad}  {value.name} = {value.number};" for value in proto.value]
    lines.append(f"{pad}}}")
    return lines


if __name__ == "__main__":
    sys.stdout.write(render())
