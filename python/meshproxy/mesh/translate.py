"""Envoy resources, as the control plane sends them over ADS, -> one sidecar config document
(the schema ``meshproxy validate`` checks): the step that makes the xDS client one more source
of the config the sidecar runs.

    Listener (+ its RouteConfiguration over RDS)  -> listeners[]   (translate_routes, translate_rbac)
    Cluster  (+ its ClusterLoadAssignment over EDS) -> clusters[]   (translate_health, translate_breakers)
    what the sidecar knows itself (its addresses, credential files) -> the rest

The listeners' addresses are the sidecar's own (the ones it was started with): the control plane
names the address it registered, which for ``--inbound 127.0.0.1:0`` is the port bound then, and
binding that anew would clash with the listener holding it.

Every function here is pure: resources in, a dict out, or :class:`Refused` with the message
the NACK carries. The messages are Envoy's, read with the sidecar's subset of their schema
(``xds_messages.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

from google.protobuf import any_pb2

from . import names
from .translate_breakers import circuit_breakers, with_budgets
from .translate_capture import (
    chain_destinations,
    chain_order,
    check_listener_filters,
    passthrough_cluster,
    tcp_chain_cluster,
    tcp_routes,
    reads_original_destination,
    restricted,
)
from .translate_filters import ROUTE_FILTERS, listener_filter
from .translate_health import health_check, outlier_detection
from .translate_rbac import authorization_policy
from .translate_base import Refused, duration, only
from .translate_routes import route_clusters, route_config_routes, string_of
from .translate_tcp import is_tcp_proxy, tcp_clusters, tcp_listener
from .xds_messages import ENVOY_NAMES, ROUTER, is_set, type_name, unpack
from .xds_pb2 import (
    DEGRADED,
    HEALTHY,
    INBOUND,
    OUTBOUND,
    UNKNOWN,
    Cluster,
    ClusterLoadAssignment,
    DownstreamTlsContext,
    Filter,
    FilterChain,
    HttpConnectionManager,
    HttpProtocolOptions,
    Listener,
    RbacFilter,
    RouteConfiguration,
    UpstreamTlsContext,
)

__all__ = ["Local", "Refused", "Resources", "base_config", "missing", "references", "translate", "trust_domain_of"]

_HCM = "envoy.filters.network.http_connection_manager"
_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CODECS = {HttpConnectionManager.AUTO: "auto", HttpConnectionManager.HTTP1: "http1",
           HttpConnectionManager.HTTP2: "http2"}
_POLICIES = {Cluster.LEAST_REQUEST: "least_request", Cluster.ROUND_ROBIN: "round_robin", Cluster.RANDOM: "random",
             Cluster.RING_HASH: "ring_hash", Cluster.MAGLEV: "maglev"}
# Endpoints Envoy would send requests to; UNHEALTHY, DRAINING, TIMEOUT ones it would not.
_SERVING = {UNKNOWN, HEALTHY, DEGRADED}


class Local(NamedTuple):
    """What the sidecar decides itself, not the control plane."""

    inbound: str
    """The address the inbound listener binds, as configured (port 0 allowed)."""
    outbound: str
    admin: str | None
    app: str
    trust_domain: str
    cert: str
    key: str
    bundle: str


class Resources(NamedTuple):
    """The resources at hand, by name, per type."""

    listeners: Mapping[str, Listener]
    routes: Mapping[str, RouteConfiguration]
    clusters: Mapping[str, Cluster]
    endpoints: Mapping[str, ClusterLoadAssignment]


class References(NamedTuple):
    """The names the listeners and clusters at hand point to, to subscribe to over ADS."""

    routes: frozenset[str]
    endpoints: frozenset[str]
    secrets: frozenset[str]


def base_config(local: Local) -> dict[str, Any]:
    """What a sidecar runs before the first push (with no saved config): its inbound listener to
    the app, strict mTLS, and an outbound listener with no routes yet."""
    return _document(local, [
        {"name": names.INBOUND, "address": local.inbound, "direction": "inbound", "tls": "strict",
         "routes": [{"cluster": names.APP_CLUSTER, "timeout": "0ms"}]},
        {"name": names.OUTBOUND, "address": local.outbound, "direction": "outbound"},
    ], [{"name": names.APP_CLUSTER, "endpoints": [{"address": local.app}]}])


def translate(resources: Resources, local: Local) -> dict[str, Any]:
    """The sidecar config of ``resources``; raises :class:`Refused`. Call once
    :func:`missing` finds nothing missing."""
    listeners = [translated for listener in sorted(resources.listeners.values(), key=_listener_order)
                 for translated in _listeners(listener, resources, local)]
    clusters = [_cluster(resources.clusters[name], resources) for name in sorted(resources.clusters)]
    # A capture listener's TCP chains (its TCP routes and tcp_fallback) send to tcp clusters too.
    opaque = tcp_clusters(listeners) | {
        named for listener in resources.listeners.values() if reads_original_destination(listener)
        for chain in listener.filter_chains if (named := tcp_chain_cluster(chain, listener.name)) is not None}
    for cluster in clusters:
        if cluster["name"] in opaque:
            cluster["protocol"] = "tcp"
    return _document(local, listeners, clusters)


def _document(local: Local, listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if local.admin is not None:
        config["admin"] = {"address": local.admin}
    config["identity"] = {"trust_domain": local.trust_domain, "cert": local.cert, "key": local.key,
                          "bundle": local.bundle}
    config["listeners"] = listeners
    config["clusters"] = clusters
    return config


def _listener_order(listener: Listener) -> tuple[int, str]:
    return ({names.INBOUND: 0, names.OUTBOUND: 1}.get(listener.name, 2), listener.name)


# === What is referenced, and what is still to come ===


def references(resources: Resources) -> References:
    routes: set[str] = set()
    secrets: set[str] = set()
    for listener in resources.listeners.values():
        for chain in listener.filter_chains:
            secrets |= _secret_names(chain.transport_socket.typed_config)
            for network_filter in chain.filters:
                manager = _maybe_manager(network_filter)
                if manager is not None and manager.HasField("rds"):
                    routes.add(manager.rds.route_config_name)
    endpoints = {_eds_name(cluster) for cluster in resources.clusters.values()
                 if cluster.type == Cluster.EDS}
    for cluster in resources.clusters.values():
        secrets |= _secret_names(cluster.transport_socket.typed_config)
    # The sidecar makes its own key: the certificate secret is for clients that do not (Envoy).
    secrets.discard(names.CERTIFICATE_SECRET)
    return References(frozenset(routes), frozenset(endpoints), frozenset(secrets))


def missing(resources: Resources) -> list[str]:
    """What the resources point to that has not arrived (yet): empty when they translate."""
    wanted = references(resources)
    gaps = [f"route configuration '{name}'" for name in sorted(wanted.routes - resources.routes.keys())]
    gaps += [f"endpoints of '{name}'" for name in sorted(wanted.endpoints - resources.endpoints.keys())]
    configs = [resources.routes[name] for name in sorted(wanted.routes & resources.routes.keys())]
    # Route configurations inline in a listener (a capture listener's chains) need their clusters too.
    configs += [manager.route_config for listener in resources.listeners.values() for chain in listener.filter_chains
                for f in chain.filters if (manager := _maybe_manager(f)) is not None and manager.HasField("route_config")]
    for config in configs:
        absent = route_clusters(config) - resources.clusters.keys()
        gaps += [f"cluster '{cluster}' (routed to by '{config.name}')" for cluster in sorted(absent)]
    return gaps


def trust_domain_of(resources: Resources) -> str | None:
    """The trust domain the resources' SPIFFE IDs lie in (the peers' SAN matchers), if any."""
    sockets = [chain.transport_socket.typed_config for listener in resources.listeners.values()
               for chain in listener.filter_chains]
    sockets += [cluster.transport_socket.typed_config for cluster in resources.clusters.values()]
    for config in sockets:
        context = unpack(config, DownstreamTlsContext) or unpack(config, UpstreamTlsContext)
        if context is None:
            continue
        common = context.common_tls_context
        validation = (common.combined_validation_context.default_validation_context
                      if common.HasField("combined_validation_context") else common.validation_context)
        for san in validation.match_typed_subject_alt_names:
            value = getattr(san.matcher, san.matcher.WhichOneof("match_pattern") or "exact", "")
            if isinstance(value, str) and value.startswith("spiffe://"):
                return value.removeprefix("spiffe://").split("/", 1)[0]
    return None


def _secret_names(config: any_pb2.Any) -> set[str]:
    context = unpack(config, DownstreamTlsContext) or unpack(config, UpstreamTlsContext)
    if context is None:
        return set()
    common = context.common_tls_context
    found = {secret.name for secret in common.tls_certificate_sds_secret_configs}
    if common.HasField("validation_context_sds_secret_config"):
        found.add(common.validation_context_sds_secret_config.name)
    if common.HasField("combined_validation_context"):
        found.add(common.combined_validation_context.validation_context_sds_secret_config.name)
    found.discard("")
    return found


def _eds_name(cluster: Cluster) -> str:
    return str(cluster.eds_cluster_config.service_name or cluster.name)


# === Listeners ===


def _listeners(listener: Listener, resources: Resources, local: Local) -> list[dict[str, Any]]:
    """The sidecar listeners of one Envoy listener: one, and for each of a capture listener's
    ``additional_addresses`` (its IPv6 twin) one more, the same but for its address and its name,
    ``NAME_1``, ``NAME_2``... (a sidecar listener binds one address)."""
    translated = _listener(listener, resources, local)
    if not listener.additional_addresses:
        return [translated]
    where = f"listener '{listener.name}'"
    if not translated.get("original_destination"):
        raise Refused(f"{where}: additional_addresses has no sidecar equivalent but on a capture listener")
    if any(extra.socket_options for extra in listener.additional_addresses):
        raise Refused(f"{where}: additional_addresses' socket_options have no sidecar equivalent")
    twins = [{**copy.deepcopy(translated), "name": f"{listener.name}_{i}",
              "address": _socket_address(extra.address, f"{where}: additional_addresses[{i - 1}]")}
             for i, extra in enumerate(listener.additional_addresses, 1)]
    return [translated, *twins]


def _listener(listener: Listener, resources: Resources, local: Local) -> dict[str, Any]:
    where = f"listener '{listener.name}'"
    for unsupported in ("default_filter_chain", "filter_chain_matcher", "api_listener"):
        if is_set(listener, unsupported):
            raise Refused(f"{where}: {unsupported} has no sidecar equivalent")
    check_listener_filters(listener, where)
    if reads_original_destination(listener):
        return _capture_listener(listener, resources, where)
    if listener.HasField("use_original_dst"):
        raise Refused(f"{where}: use_original_dst false has no sidecar equivalent; leave it unset")
    direction = {INBOUND: "inbound", OUTBOUND: "outbound"}.get(
        listener.traffic_direction, "inbound" if listener.name == names.INBOUND else "outbound")
    if listener.name == names.INBOUND:
        address = local.inbound
    elif listener.name == names.OUTBOUND:
        address = local.outbound
    else:
        address = _socket_address(listener.address, where)
    if is_tcp_proxy(listener):
        secured = [_requires_client_certificate(chain, f"{where}: filter_chains[{i}]")
                   for i, chain in enumerate(listener.filter_chains)]
        return tcp_listener(listener, address, direction, secured, local.trust_domain, where)
    tls, manager = _chains(listener, where)
    protocol = _CODECS.get(manager.codec_type)
    if protocol is None:
        raise Refused(f"{where}: codec_type {HttpConnectionManager.CodecType.Name(manager.codec_type)} "
                      "has no sidecar equivalent; expected AUTO, HTTP1 or HTTP2")
    routes = with_budgets(_manager_routes(manager, resources, where), resources.clusters, where)
    authorization, rate_limit = _policies(manager, local.trust_domain, where)
    _check_route_filters(manager, routes, rate_limit, where)
    translated: dict[str, Any] = {"name": listener.name, "address": address, "protocol": protocol, "direction": direction, "tls": tls,
                                  "authorization": authorization, "routes": routes}
    if rate_limit is not None:
        translated["rate_limit"] = rate_limit
    return translated


def _capture_listener(listener: Listener, resources: Resources, where: str) -> dict[str, Any]:
    """A listener routing by original destination (see translate_capture): plain text, one
    http_connection_manager per filter chain, no authorization (it carries the app's calls)."""
    chains: list[tuple[str, list[str] | None, list[dict[str, Any]]]] = []
    tcp_chains: list[tuple[list[str] | None, str]] = []
    protocols: set[str | None] = set()
    for i, chain in enumerate(listener.filter_chains):
        at = f"{where}: filter_chains[{i}]"
        if chain.HasField("transport_socket"):
            raise Refused(f"{at}: a capture listener takes the app's plain-text connections; TLS has no sidecar "
                          "equivalent there")
        tcp_cluster = tcp_chain_cluster(chain, at)
        if tcp_cluster is not None:
            tcp_chains.append((chain_destinations(chain, at), tcp_cluster))
            continue
        manager = _manager(chain, at)
        protocols.add(_CODECS.get(manager.codec_type))
        policies, rate_limit = _policies(manager, "", at)
        if policies:
            raise Refused(f"{at}: RBAC on a capture listener has no sidecar equivalent")
        if rate_limit is not None:
            raise Refused(f"{at}: a listener rate limit on a capture listener has no sidecar equivalent")
        routes = with_budgets(_manager_routes(manager, resources, at), resources.clusters, at)
        _check_route_filters(manager, routes, None, at)
        name, destinations = chain.name or f"chains[{i}]", chain_destinations(chain, at)
        chains.append((name, destinations, restricted(routes, destinations, name)))
    if len(protocols) > 1 or None in protocols:
        raise Refused(f"{where}: the filter chains of a capture listener must share one codec_type, AUTO, HTTP1 or HTTP2")
    tcp = tcp_routes(tcp_chains, listener, where)
    return {"name": listener.name, "address": _socket_address(listener.address, where),
            "protocol": protocols.pop() if protocols else "auto", "direction": "outbound", "tls": "disable",
            "original_destination": True, **tcp, "routes": chain_order(chains) + tcp["routes"]}


def _manager_routes(manager: HttpConnectionManager, resources: Resources, where: str) -> list[dict[str, Any]]:
    if manager.HasField("rds"):
        return route_config_routes(resources.routes[manager.rds.route_config_name])
    if manager.HasField("route_config"):
        return route_config_routes(manager.route_config)
    raise Refused(f"{where}: the http_connection_manager has neither rds nor route_config")


def _check_route_filters(manager: HttpConnectionManager, routes: list[dict[str, Any]],
                         listener_rate_limit: dict[str, Any] | None, where: str) -> None:
    present = {ROUTE_FILTERS[kind] for f in manager.http_filters if (kind := type_name(f.typed_config)) in ROUTE_FILTERS}
    for i, route in enumerate(routes):
        for key in set(ROUTE_FILTERS.values()) - present:
            if key in route:
                raise Refused(f"{where}: routes[{i}] configures {key}, but the listener has no such http filter")
        if listener_rate_limit is not None and "rate_limit" in route:
            raise Refused(f"{where}: routes[{i}] has a rate limit of its own, which in Envoy replaces the listener's "
                          "token bucket; a sidecar applies both: give one or the other")


def _chains(listener: Listener, where: str) -> tuple[str, HttpConnectionManager]:
    """The listener's tls mode and its one http_connection_manager. strict: one chain with
    mutual TLS; permissive: a chain matching transport_protocol 'tls' with mutual TLS and a
    plain-text one, told apart by the tls_inspector; disable: one plain-text chain."""
    chains = list(listener.filter_chains)
    secured = [_requires_client_certificate(chain, f"{where}: filter_chains[{i}]") for i, chain in enumerate(chains)]
    managers = [_manager(chain, f"{where}: filter_chains[{i}]") for i, chain in enumerate(chains)]
    if len(chains) == 1:
        return ("strict" if secured[0] else "disable"), managers[0]
    if len(chains) == 2 and sorted(secured) == [False, True]:
        tls_chain = chains[secured.index(True)]
        if tls_chain.filter_chain_match.transport_protocol != "tls":
            raise Refused(f"{where}: of two filter chains, the mutual TLS one must match transport_protocol 'tls'")
        if managers[0].SerializeToString(deterministic=True) != managers[1].SerializeToString(deterministic=True):
            raise Refused(f"{where}: the mutual TLS and plain-text filter chains must have the same "
                          "http_connection_manager; the sidecar routes and authorizes both alike")
        return "permissive", managers[0]
    raise Refused(f"{where}: expected one filter chain (mutual TLS or plain text) or two (mutual TLS matching "
                  f"transport_protocol 'tls', and plain text), found {len(chains)}")


def _requires_client_certificate(chain: FilterChain, where: str) -> bool:
    if not chain.HasField("transport_socket"):
        return False
    context = _unpack(chain.transport_socket.typed_config, DownstreamTlsContext, f"{where}: transport_socket")
    if not context.require_client_certificate.value:
        raise Refused(f"{where}: TLS without require_client_certificate has no sidecar equivalent; "
                      "the sidecar's inbound TLS is mutual")
    return True


def _maybe_manager(network_filter: Filter) -> HttpConnectionManager | None:
    return unpack(network_filter.typed_config, HttpConnectionManager)


def _manager(chain: FilterChain, where: str) -> HttpConnectionManager:
    if len(chain.filters) != 1:
        raise Refused(f"{where}: expected one network filter, {_HCM}; found {len(chain.filters)}")
    manager: HttpConnectionManager = _unpack(chain.filters[0].typed_config, HttpConnectionManager,
                                             f"{where}: filters[0]")
    return manager


def _policies(manager: HttpConnectionManager, trust_domain: str,
              where: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The RBAC filters, in order, as sidecar policies, and the listener's rate limit (a
    local_ratelimit filter with a token bucket of its own); the router must come last. The
    sidecar takes the listener's token after authorization, so the rate limit must follow every
    RBAC filter."""
    policies: list[dict[str, Any]] = []
    rate_limit: dict[str, Any] | None = None
    filters = list(manager.http_filters)
    for i, http_filter in enumerate(filters):
        at = f"{where}: http_filters[{i}] '{http_filter.name}'"
        kind = type_name(http_filter.typed_config)
        if kind == ROUTER:
            if i != len(filters) - 1:
                raise Refused(f"{at}: the router must be the last http filter")
            return policies, rate_limit
        if kind == ENVOY_NAMES[RbacFilter]:
            if rate_limit is not None:
                raise Refused(f"{at}: the sidecar authorizes a request before its listener's rate limit takes a "
                              "token; expected the rate limit after every RBAC filter")
            rbac = _unpack(http_filter.typed_config, RbacFilter, at)
            name = http_filter.name if http_filter.name not in {p["name"] for p in policies} else f"rbac-{i}"
            policy = authorization_policy(rbac, name, trust_domain, at)
            if policy is not None:
                policies.append(policy)
        elif kind in ROUTE_FILTERS:
            # Doing nothing but per route, or the listener's own token bucket.
            bucket = listener_filter(http_filter.typed_config, at)
            if bucket is not None:
                if rate_limit is not None:
                    raise Refused(f"{at}: a sidecar listener has one rate limit; found a second")
                rate_limit = bucket
        elif not (http_filter.is_optional or http_filter.disabled):
            raise Refused(f"{at}: {kind or 'a filter without typed_config'} has no sidecar "
                          "equivalent; the sidecar runs envoy.filters.http.rbac and envoy.filters.http.router")
    raise Refused(f"{where}: no envoy.filters.http.router at the end of http_filters")


# === Clusters ===


def _cluster(cluster: Cluster, resources: Resources) -> dict[str, Any]:
    where = f"cluster '{cluster.name}'"
    if cluster.type == Cluster.ORIGINAL_DST:
        return passthrough_cluster(cluster, where)
    for unsupported in ("cluster_type", "lb_subset_config", "ring_hash_lb_config", "maglev_lb_config",
                        "original_dst_lb_config", "load_balancing_policy", "upstream_config",
                        "transport_socket_matches", "transport_socket_matcher", "filters"):
        if is_set(cluster, unsupported):
            raise Refused(f"{where}: {unsupported} has no sidecar equivalent")
    translated: dict[str, Any] = {"name": cluster.name, "lb": _lb(cluster, where)}
    http2 = _http2(cluster, where)
    if http2:
        translated["protocol"] = "http2"
    check = health_check(cluster, http2, where)
    if check is not None:
        translated["health_check"] = check
    detection = outlier_detection(cluster, where)
    if detection is not None:
        translated["outlier_detection"] = detection
    breakers = circuit_breakers(cluster, where)
    if breakers is not None:
        translated["circuit_breakers"] = breakers
    if cluster.HasField("connect_timeout"):
        translated["connect_timeout"] = duration(cluster.connect_timeout)
    idle_timeout = _connection_idle_timeout(cluster, where)
    if idle_timeout is not None:
        translated["idle_timeout"] = idle_timeout
    if cluster.HasField("transport_socket"):
        translated["tls"] = _cluster_tls(cluster.transport_socket, where)
    if cluster.type == Cluster.EDS:
        assignment = resources.endpoints[_eds_name(cluster)]
    elif cluster.type in (Cluster.STATIC, Cluster.STRICT_DNS, Cluster.LOGICAL_DNS):
        assignment = cluster.load_assignment
    else:
        raise Refused(f"{where}: type {Cluster.DiscoveryType.Name(cluster.type)} has no sidecar "
                      "equivalent; expected EDS, STATIC or STRICT_DNS")
    translated["endpoints"] = endpoints(assignment, where)
    return translated


def _lb(cluster: Cluster, where: str) -> str:
    # What Envoy's fields cannot say (its own policies lack peak-EWMA) comes in the metadata.
    ours = cluster.metadata.filter_metadata.get(names.METADATA_KEY)
    if ours is not None and "lb" in ours.fields:
        return str(ours.fields["lb"].string_value)
    policy = _POLICIES.get(cluster.lb_policy)
    if policy is None:
        raise Refused(f"{where}: lb_policy {Cluster.LbPolicy.Name(cluster.lb_policy)} has no sidecar "
                      "equivalent; expected LEAST_REQUEST, ROUND_ROBIN, RANDOM, RING_HASH or MAGLEV")
    return policy


def _connection_idle_timeout(cluster: Cluster, where: str) -> str | None:
    """``common_http_protocol_options.idle_timeout`` of the cluster's HttpProtocolOptions: the
    sidecar cluster's ``idle_timeout``; none: the sidecar's default."""
    options = cluster.typed_extension_protocol_options.get(_PROTOCOL_OPTIONS)
    if options is None:
        return None
    at = f"{where}: {_PROTOCOL_OPTIONS}: common_http_protocol_options"
    protocol = _unpack(options, HttpProtocolOptions, at)
    if not protocol.HasField("common_http_protocol_options"):
        return None
    common = protocol.common_http_protocol_options
    only(common, {"idle_timeout"}, at)
    if not common.HasField("idle_timeout"):
        return None
    idle = duration(common.idle_timeout)
    if idle == "0ms":
        raise Refused(f"{at}: idle_timeout 0 (never) has no sidecar equivalent; a sidecar closes unused connections "
                      "after a timeout greater than 0")
    return idle


def _http2(cluster: Cluster, where: str) -> bool:
    if cluster.HasField("http2_protocol_options"):
        return True
    options = cluster.typed_extension_protocol_options.get(_PROTOCOL_OPTIONS)
    if options is None:
        return False
    protocol = _unpack(options, HttpProtocolOptions, f"{where}: {_PROTOCOL_OPTIONS}")
    kind = protocol.WhichOneof("upstream_protocol_options")
    if kind == "explicit_http_config":
        explicit = protocol.explicit_http_config.WhichOneof("protocol_config")
        if explicit == "http3_protocol_options":
            raise Refused(f"{where}: HTTP/3 upstreams have no sidecar equivalent")
        return bool(explicit == "http2_protocol_options")
    if kind is None:
        return False
    raise Refused(f"{where}: {kind} has no sidecar equivalent; expected explicit_http_config")


def _cluster_tls(socket: Any, where: str) -> dict[str, Any]:
    if socket.name == "envoy.transport_sockets.raw_buffer" and not socket.typed_config.type_url:
        return {"mode": "disable"}
    context = _unpack(socket.typed_config, UpstreamTlsContext, f"{where}: transport_socket")
    common = context.common_tls_context
    validation = (common.combined_validation_context.default_validation_context
                  if common.HasField("combined_validation_context") else common.validation_context)
    identities = []
    for i, san in enumerate(validation.match_typed_subject_alt_names):
        at = f"{where}: match_typed_subject_alt_names[{i}]"
        kind, value = string_of(san.matcher, at)
        if san.san_type != san.URI or kind != "exact":
            raise Refused(f"{at}: expected an exact URI SAN (a SPIFFE ID)")
        identities.append(str(value))
    if not identities:
        raise Refused(f"{where}: upstream TLS without a SPIFFE ID (match_typed_subject_alt_names of type URI) has "
                      "no sidecar equivalent; the sidecar's upstream TLS is mesh mutual TLS")
    return {"mode": "mesh", "identities": identities}


def endpoints(assignment: ClusterLoadAssignment, where: str) -> list[dict[str, Any]]:
    """The serving endpoints of the highest priority that has any, each address once."""
    by_priority: dict[int, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for locality in sorted(assignment.endpoints, key=lambda locality: locality.priority):
        for lb_endpoint in locality.lb_endpoints:
            if lb_endpoint.health_status not in _SERVING:
                continue
            address = _socket_address(lb_endpoint.endpoint.address, where)
            if address in seen:
                continue
            seen.add(address)
            weight = lb_endpoint.load_balancing_weight.value if lb_endpoint.HasField("load_balancing_weight") else 1
            by_priority.setdefault(locality.priority, []).append({"address": address, "weight": weight})
    return by_priority[min(by_priority)] if by_priority else []


def _socket_address(address: Any, where: str) -> str:
    if address.WhichOneof("address") != "socket_address":
        raise Refused(f"{where}: expected a socket address (IP and port)")
    socket = address.socket_address
    if socket.WhichOneof("port_specifier") != "port_value":
        raise Refused(f"{where}: address {socket.address}: expected a port_value")
    host = f"[{socket.address}]" if ":" in socket.address else socket.address
    return f"{host}:{socket.port_value}"


def _unpack(config: any_pb2.Any, kind: Any, where: str) -> Any:
    unpacked = unpack(config, kind)
    if unpacked is None:
        raise Refused(f"{where}: expected {ENVOY_NAMES[kind]}, found {type_name(config) or 'nothing'}")
    return unpacked
