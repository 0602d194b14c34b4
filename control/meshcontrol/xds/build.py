"""Envoy v3 resources, one function per resource, exactly as the contract's "xDS" section says.
Each takes plain values (addresses, resource dicts, the trust domain) and returns a proto; what
a client gets, and what is shared between clients, is decided in :mod:`.snapshot`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from meshproxy.mesh import names

from .cluster_policy import apply_traffic_policy, connection_idle_timeout_ms
from .rbac import header_matcher, rbac_filters
from .route_filters import apply_route_filters, inbound_rate_limit, listener_filters
from .route_policy import direct_response_action, mirror_policy, redirect_action, retry_policy

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# The order a push sends types in: a cluster before its endpoints, a listener before its
# routes (Envoy's own advice), secrets once something refers to them.
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
SHORT = {LISTENER: "lds", ROUTE: "rds", CLUSTER: "cds", ENDPOINT: "eds", SECRET: "sds"}
WILDCARD_TYPES = (LISTENER, CLUSTER)

DEFAULT_TIMEOUT_MS = 15_000
CONNECT_TIMEOUT = duration_pb2.Duration(seconds=1)
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                      resource_api_version=config_source_pb2.V3)


def packed(message: Any) -> any_pb2.Any:
    """``message`` in an Any, serialized deterministically (map order fixed), so equal content
    gives equal bytes and a push can tell "changed" from "rebuilt"."""
    return any_pb2.Any(type_url="type.googleapis.com/" + message.DESCRIPTOR.full_name,
                       value=message.SerializeToString(deterministic=True))


def socket_address(text: str) -> address_pb2.Address:
    """``IP:PORT`` (``[v6]:PORT``) as an Envoy address. ValueError for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{text!r} is not an address; expected IP:PORT")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host.strip("[]"),
                                                                         port_value=int(port)))


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=_ADS)


def _ms(milliseconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=milliseconds // 1000, nanos=(milliseconds % 1000) * 1_000_000)


# === LDS ===


def inbound_listener(address: str, policy: Mapping[str, Any] | None, mtls: str,
                     trust_domain: str, rate_limit: Mapping[str, Any] | None = None) -> listener_pb2.Listener:
    """The listener peers call this instance on: mTLS (or, permissive, mTLS and plain text),
    then the AccessPolicy's RBAC filters, the TrafficPolicy's rate limit (``rate_limit``), then
    the router to the local app."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=names.INBOUND, codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ADS, route_config_name=names.INBOUND),
        http_filters=[*rbac_filters(policy, trust_domain), *inbound_rate_limit(rate_limit), _router()], **_upgrades())
    http = listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                          typed_config=packed(manager))
    return mutual_tls_listener(address, [http], mtls, trust_domain, ["h2", "http/1.1"])


def mutual_tls_listener(address: str, filters: Sequence[listener_components_pb2.Filter], mtls: str,
                        trust_domain: str, alpn: Sequence[str]) -> listener_pb2.Listener:
    """An inbound listener whose ``filters`` serve peers over mutual TLS (any SPIFFE ID of the
    trust domain; authorization comes after) or, permissive, plain-text clients too."""
    tls = tls_pb2.DownstreamTlsContext(
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        common_tls_context=_common_tls(string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/"), alpn))
    secure = listener_components_pb2.FilterChain(
        filters=filters,
        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed(tls)))
    listener = listener_pb2.Listener(name=names.INBOUND, address=socket_address(address),
                                     traffic_direction=base_pb2.INBOUND)
    if mtls == "permissive":
        # The TLS inspector tells a TLS client hello from plain text, so both are served on one port.
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


def outbound_listener(address: str, route_filters: Collection[str] = ()) -> listener_pb2.Listener:
    """The listener the app sends its calls to; with the HTTP filters its routes configure
    (``route_filters``: ``fault``, ``rate_limit``)."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=names.OUTBOUND, codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ADS, route_config_name=names.OUTBOUND),
        http_filters=[*listener_filters(set(route_filters)), _router()], **_upgrades())
    return listener_pb2.Listener(
        name=names.OUTBOUND, address=socket_address(address), traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=packed(manager))])])


def _upgrades() -> dict[str, Any]:
    """WebSocket as the meshproxy sidecar carries it with no setting: HTTP/1.1 upgrades tunnelled,
    and RFC 8441 extended CONNECT accepted over HTTP/2 (from peers, whose clusters send it, and
    from apps)."""
    return {"upgrade_configs": [hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
            "http2_protocol_options": protocol_pb2.Http2ProtocolOptions(allow_connect=True)}


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))


def _common_tls(san: string_pb2.StringMatcher,
                alpn: Sequence[str]) -> tls_pb2.CommonTlsContext:
    """Our certificate and the CA bundle, both by SDS over the same ADS stream; peers must have
    a URI SAN matching ``san``."""
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(names.CERTIFICATE_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=[common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=san)]),
            validation_context_sds_secret_config=_sds(names.BUNDLE_SECRET)),
        alpn_protocols=list(alpn))


def capture_listener(addresses: Sequence[str], called: Sequence[tuple[tuple[str, str], Sequence[str]]],
                     routes: Mapping[tuple[str, str], Mapping[str, Any]],
                     route_filters: Collection[str] = (),
                     grpc: Collection[tuple[str, str]] = ()) -> listener_pb2.Listener:
    """The listener ``meshproxy capture`` redirects the app's connections to: the original_dst
    listener filter restores where each was going, and the filter chain matching that address
    (one per called service and app port, over its instances' IPs) routes it as the outbound
    listener routes the service (its Route's rules, whatever the Host). ``addresses``: the
    listener's, the first its ``address``, the others ``additional_addresses`` (an IPv6 twin: the
    kernel redirects IPv6 connections to ``[::1]``). ``called``: each called (service, namespace)
    with its instances' ``IP:PORT`` app addresses."""
    listener = listener_pb2.Listener(
        name=names.CAPTURE, address=socket_address(addresses[0]), traffic_direction=base_pb2.OUTBOUND,
        additional_addresses=[listener_pb2.AdditionalAddress(address=socket_address(a)) for a in addresses[1:]],
        listener_filters=[listener_components_pb2.ListenerFilter(
            name="envoy.filters.listener.original_dst", typed_config=packed(original_dst_pb2.OriginalDst()))])
    for (service, namespace), destinations in called:
        for port, match in destination_matches(destinations):
            config = route_pb2.RouteConfiguration(
                name=f"{names.CAPTURE}_{service}.{namespace}_{port}",
                virtual_hosts=[_virtual_host(service, namespace, routes.get((service, namespace)), ["*"],
                                             grpc=(service, namespace) in grpc)])
            manager = hcm_pb2.HttpConnectionManager(
                stat_prefix=names.CAPTURE, codec_type=hcm_pb2.HttpConnectionManager.AUTO, route_config=config,
                http_filters=[*listener_filters(set(route_filters)), _router()], **_upgrades())
            listener.filter_chains.append(listener_components_pb2.FilterChain(
                name=f"{service}.{namespace}:{port}", filter_chain_match=match,
                filters=[listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                                        typed_config=packed(manager))]))
    # Anything else: out of the mesh, to where it was going (the passthrough cluster).
    elsewhere = route_pb2.RouteConfiguration(name=f"{names.CAPTURE}_{names.PASSTHROUGH}", virtual_hosts=[
        route_components_pb2.VirtualHost(name=names.PASSTHROUGH, domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=names.PASSTHROUGH, timeout=_ms(DEFAULT_TIMEOUT_MS)))])])
    unmatched = hcm_pb2.HttpConnectionManager(
        stat_prefix=names.CAPTURE, codec_type=hcm_pb2.HttpConnectionManager.AUTO, route_config=elsewhere,
        http_filters=[_router()], **_upgrades())
    listener.filter_chains.append(listener_components_pb2.FilterChain(name=names.PASSTHROUGH, filters=[
        listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                       typed_config=packed(unmatched))]))
    return listener


# === RDS ===


def destination_matches(destinations: Sequence[str]) -> list[tuple[int, listener_components_pb2.FilterChainMatch]]:
    """A capture listener's filter chain matches for a service's instances (``IP:PORT`` app
    addresses): one per app port, over the instances' IPs, in port order."""
    by_port: dict[int, list[str]] = {}
    for destination in destinations:
        host, _, port_text = destination.rpartition(":")
        by_port.setdefault(int(port_text), []).append(host.strip("[]"))
    return [(port, listener_components_pb2.FilterChainMatch(
        destination_port=wrappers_pb2.UInt32Value(value=port),
        prefix_ranges=[address_pb2.CidrRange(address_prefix=host, prefix_len=wrappers_pb2.UInt32Value(
            value=128 if ":" in host else 32)) for host in sorted(hosts)])) for port, hosts in sorted(by_port.items())]


def inbound_routes() -> route_pb2.RouteConfiguration:
    """Everything that passed the listener goes to the local app, with no timeout of ours (the
    caller's sidecar has one)."""
    return route_pb2.RouteConfiguration(name=names.INBOUND, virtual_hosts=[route_components_pb2.VirtualHost(
        name=names.INBOUND, domains=["*"],
        routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=names.APP_CLUSTER, timeout=_ms(0)))])])


def outbound_routes(called: Sequence[tuple[str, str]], routes: Mapping[tuple[str, str], Mapping[str, Any]],
                    namespace: str, grpc: Collection[tuple[str, str]] = ()) -> route_pb2.RouteConfiguration:
    """One virtual host per called (service, namespace), reachable by ``svc.ns`` and, in the
    caller's own namespace, by ``svc``; its Route's rules in order, or all instances. Routes to
    the ``grpc`` services honour a call's grpc-timeout (Envoy ignores it otherwise; a meshproxy
    sidecar honours it for every gRPC call)."""
    config = route_pb2.RouteConfiguration(name=names.OUTBOUND)
    for service, service_ns in called:
        domains = [f"{service}.{service_ns}", f"{service}.{service_ns}:*"]
        if service_ns == namespace:
            domains.extend([service, f"{service}:*"])
        config.virtual_hosts.append(_virtual_host(service, service_ns, routes.get((service, service_ns)), domains,
                                                  grpc=(service, service_ns) in grpc))
    return config


def _virtual_host(service: str, namespace: str, route: Mapping[str, Any] | None,
                  domains: Sequence[str], grpc: bool = False) -> route_components_pb2.VirtualHost:
    """The routes to one called service: its Route's rules in order, or all its instances. A
    ``grpc`` service's routes honour a call's grpc-timeout."""
    host = route_components_pb2.VirtualHost(name=f"{service}.{namespace}", domains=list(domains))
    if route is None:
        host.routes.append(route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=names.service_cluster(service, namespace),
                                                   timeout=_ms(DEFAULT_TIMEOUT_MS))))
    else:
        host.routes.extend(_route(rule, index, service, namespace) for index, rule in enumerate(route["rules"]))
    if grpc:
        for forwarding in host.routes:
            if forwarding.HasField("route"):
                # Zero: the grpc-timeout as the call sent it, as the stream's deadline.
                forwarding.route.max_stream_duration.grpc_timeout_header_max.SetInParent()
    return host


def route_retry_budget(route: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The retry budget a Route's rules with ``retry`` share (one per Route), or None."""
    for rule in route.get("rules", ()) if route is not None else ():
        if rule.get("retry") is not None:
            budget: Mapping[str, Any] = rule["retry"]["budget"]
            return budget
    return None


def route_versions(route: Mapping[str, Any]) -> list[str]:
    """The versions a Route sends to, and mirrors to, in first-mention order (each gets a
    cluster)."""
    versions = [target["version"] for rule in route.get("rules", ()) for target in rule["to"]]
    versions += [rule["mirror"]["version"] for rule in route.get("rules", ()) if rule.get("mirror")]
    return list(dict.fromkeys(versions))


def _route(rule: Mapping[str, Any], index: int, service: str, namespace: str) -> route_components_pb2.Route:
    name, match = rule.get("name") or f"rule-{index}", _route_match(rule.get("match") or {})
    if rule.get("redirect") is not None:
        return route_components_pb2.Route(name=name, match=match, redirect=redirect_action(rule["redirect"]))
    if rule.get("direct_response") is not None:
        return route_components_pb2.Route(name=name, match=match,
                                          direct_response=direct_response_action(rule["direct_response"]))
    timeout_ms = rule.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    action = route_components_pb2.RouteAction(timeout=_ms(int(timeout_ms)))
    if rule.get("idle_timeout_ms"):
        action.idle_timeout.CopyFrom(_ms(int(rule["idle_timeout_ms"])))
    targets = rule["to"]
    if len(targets) == 1:
        action.cluster = names.version_cluster(service, namespace, targets[0]["version"])
    else:
        action.weighted_clusters.clusters.extend(
            route_components_pb2.WeightedCluster.ClusterWeight(
                name=names.version_cluster(service, namespace, t["version"]),
                weight=wrappers_pb2.UInt32Value(value=int(t.get("weight", 1))))
            for t in targets)
    action.hash_policy.extend(_hash_policy(h) for h in rule.get("hash_policy") or ())
    if rule.get("retry") is not None:
        action.retry_policy.CopyFrom(retry_policy(rule["retry"]))
    if rule.get("regex_rewrite") is not None:
        action.regex_rewrite.CopyFrom(regex_pb2.RegexMatchAndSubstitute(
            pattern=regex_pb2.RegexMatcher(regex=rule["regex_rewrite"]["pattern"]),
            substitution=rule["regex_rewrite"]["substitution"]))
    if rule.get("host_rewrite") is not None:
        action.host_rewrite_literal = rule["host_rewrite"]
    if rule.get("mirror") is not None:
        action.request_mirror_policies.append(mirror_policy(
            names.version_cluster(service, namespace, rule["mirror"]["version"]), rule["mirror"]["percent"]))
    route = route_components_pb2.Route(name=name, match=match, route=action)
    if rule.get("timeout_covers") == "response":
        # Envoy's route timeout always covers the whole response; a sidecar's covers the
        # headers unless the route says otherwise, which Envoy's fields cannot: the metadata does.
        metadata = struct_pb2.Struct()
        metadata.update({"timeout_covers": "response"})
        route.metadata.filter_metadata[names.METADATA_KEY].CopyFrom(metadata)
    apply_route_filters(route, rule)
    if rule.get("retry") is not None:
        # Envoy's bound on the body it keeps to send again (the sidecar's max_replay_bytes).
        route.per_request_buffer_limit_bytes.value = rule["retry"]["max_replay_bytes"]
    return route


def _hash_policy(source: Mapping[str, Any]) -> route_components_pb2.RouteAction.HashPolicy:
    """One source of a rule's hash key; Envoy, as the sidecar, hashes what the request carries."""
    policy = route_components_pb2.RouteAction.HashPolicy
    if source.get("header") is not None:
        return policy(header=policy.Header(header_name=source["header"]))
    if source.get("cookie") is not None:
        return policy(cookie=policy.Cookie(name=source["cookie"]))
    return policy(connection_properties=policy.ConnectionProperties(source_ip=True))


def _route_match(match: Mapping[str, Any]) -> route_components_pb2.RouteMatch:
    result = route_components_pb2.RouteMatch()
    if match.get("path") is not None:
        result.path = match["path"]
    elif match.get("path_regex") is not None:
        result.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match["path_regex"]))
    else:
        result.prefix = match.get("path_prefix") or "/"
    for name, header in (match.get("headers") or {}).items():
        result.headers.append(header_matcher(name, header))
    methods = match.get("method")
    if isinstance(methods, str):
        methods = [methods]
    if methods:
        string = (string_pb2.StringMatcher(exact=methods[0]) if len(methods) == 1 else
                  string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex="|".join(methods))))
        result.headers.append(route_components_pb2.HeaderMatcher(name=":method", string_match=string))
    return result


# === CDS ===


def app_cluster(app: str, protocol: str) -> cluster_pb2.Cluster:
    """The local app behind the inbound listener, in the protocol it speaks."""
    cluster = cluster_pb2.Cluster(
        name=names.APP_CLUSTER, type=cluster_pb2.Cluster.STATIC, connect_timeout=CONNECT_TIMEOUT,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=names.APP_CLUSTER, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=socket_address(app)))])]))
    # gRPC is HTTP/2: h2c to the app.
    if protocol in ("http2", "grpc"):
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(packed(_explicit_http2()))
    return cluster


def passthrough_cluster() -> cluster_pb2.Cluster:
    """Where a captured call no filter chain of the capture listener claims goes: the address it
    was going to, in plain text (out of the mesh)."""
    return cluster_pb2.Cluster(name=names.PASSTHROUGH, type=cluster_pb2.Cluster.ORIGINAL_DST,
                               lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED, connect_timeout=CONNECT_TIMEOUT)


def peer_cluster(name: str, service: str, namespace: str, trust_domain: str,
                 policy: Mapping[str, Any] | None = None,
                 retry_budget: Mapping[str, Any] | None = None, tcp: bool = False) -> cluster_pb2.Cluster:
    """Instances of a called service (or of one version of it): endpoints by EDS, mTLS HTTP/2
    to their sidecars, whose certificate must name exactly that service; balanced, watched and
    limited as the service's TrafficPolicy (``policy``) says, with its Route's retry budget.
    A ``tcp`` service's cluster carries opaque bytes: no ALPN, no HTTP options."""
    tls = tls_pb2.UpstreamTlsContext(common_tls_context=_common_tls(
        string_pb2.StringMatcher(exact=names.spiffe_id(trust_domain, namespace, service)), [] if tcp else ["h2"]))
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ADS),
        connect_timeout=CONNECT_TIMEOUT,
        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed(tls)))
    apply_traffic_policy(cluster, policy, retry_budget)
    if not tcp:
        options = _explicit_http2()
        options.common_http_protocol_options.idle_timeout.CopyFrom(_ms(connection_idle_timeout_ms(policy)))
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(packed(options))
    return cluster


def _explicit_http2() -> http_protocol_options_pb2.HttpProtocolOptions:
    return http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            # A WebSocket goes to the peer as extended CONNECT (RFC 8441).
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(allow_connect=True)))


# === EDS ===


def load_assignment(cluster: str, addresses: Sequence[str]) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    if addresses:
        assignment.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=socket_address(a)),
                                               load_balancing_weight=wrappers_pb2.UInt32Value(value=1))
            for a in addresses]))
    return assignment


# === SDS ===


def bundle_secret(bundle_pem: str) -> secret_pb2.Secret:
    return secret_pb2.Secret(name=names.BUNDLE_SECRET, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=bundle_pem.encode())))


def certificate_secret(cert_pem: str, key_pem: str) -> secret_pb2.Secret:
    return secret_pb2.Secret(name=names.CERTIFICATE_SECRET, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=cert_pem.encode()),
        private_key=base_pb2.DataSource(inline_bytes=key_pem.encode())))
