"""A capture listener (Envoy's ``original_dst`` listener filter, or ``use_original_dst``) ->
a sidecar listener with ``original_destination: true``: each filter chain's destination match
(``destination_port``, ``prefix_ranges``) becomes the ``match.original_destination`` of the
routes of that chain's http_connection_manager, in chain order. A chain with no destination
match takes what no other chain does: its routes come last, unrestricted.

A chain ending in ``tcp_proxy`` is opaque TCP: with a destination match, a TCP route (``{match:
{original_destination}, cluster}``, after the HTTP routes); without one, the listener's
``tcp_fallback`` (what ``envoy.filters.listener.http_inspector`` does not find HTTP), with
``listener_filters_timeout`` as ``detect_timeout``. An HTTP chain may then match the HTTP
``application_protocols`` the inspector reports, which is what the sidecar's detection does.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .translate_base import Refused, duration
from .xds_messages import is_set, type_name
from .translate_tcp import TCP_PROXY
from .xds_pb2 import Cluster, FilterChain, Listener, TcpProxy

ORIGINAL_DST = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
_ORIGINAL_DST_NAME = "envoy.filters.listener.original_dst"
# Told apart by the listener's own filters, which a sidecar has no more of.
_KNOWN_LISTENER_FILTERS = {ORIGINAL_DST, "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                           "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}
# What http_inspector reports for HTTP: a chain matching these (some of them) is HTTP's.
_HTTP_PROTOCOLS = {"http/1.0", "http/1.1", "h2c"}


def reads_original_destination(listener: Listener) -> bool:
    """Whether the listener restores each connection's original destination."""
    if listener.use_original_dst.value:
        return True
    return any(type_name(f.typed_config) == ORIGINAL_DST or (not f.HasField("typed_config") and f.name == _ORIGINAL_DST_NAME)
               for f in listener.listener_filters)


def tcp_chain_cluster(chain: FilterChain, where: str) -> str | None:
    """The cluster of a chain that is one ``tcp_proxy`` filter; None for another chain."""
    kinds = [type_name(f.typed_config) for f in chain.filters]
    if TCP_PROXY not in kinds:
        return None
    if kinds != [TCP_PROXY]:
        raise Refused(f"{where}: a TCP chain of a capture listener has one filter, envoy.filters.network.tcp_proxy")
    proxy = TcpProxy.FromString(chain.filters[0].typed_config.value)
    if proxy.WhichOneof("cluster_specifier") != "cluster":
        raise Refused(f"{where}: a tcp_proxy to weighted_clusters has no sidecar equivalent; expected one cluster")
    if chain.filter_chain_match.application_protocols:
        raise Refused(f"{where}: filter_chain_match.application_protocols on a TCP chain has no sidecar equivalent; "
                      "HTTP chains match the HTTP ones, the TCP passthrough has no match")
    return str(proxy.cluster)


def tcp_routes(chains: list[tuple[list[str] | None, str]], listener: Listener, where: str) -> dict[str, Any]:
    """What the TCP chains add to the capture listener: TCP routes (last), ``tcp_fallback``."""
    added: dict[str, Any] = {"routes": [{"match": {"original_destination": destinations}, "cluster": cluster}
                                        for destinations, cluster in chains if destinations is not None]}
    fallbacks = [cluster for destinations, cluster in chains if destinations is None]
    if len(fallbacks) > 1:
        raise Refused(f"{where}: two TCP chains without a destination match; the sidecar has one tcp_fallback")
    if fallbacks:
        added["tcp_fallback"] = fallbacks[0]
        if listener.HasField("listener_filters_timeout"):
            if not listener.continue_on_listener_filters_timeout:
                raise Refused(f"{where}: continue_on_listener_filters_timeout false has no sidecar equivalent; a "
                              "silent client goes to the TCP passthrough (server-first protocols): set it true")
            added["detect_timeout"] = duration(listener.listener_filters_timeout)
    return added


def chain_destinations(chain: FilterChain, where: str) -> list[str] | None:
    """The original destinations a filter chain takes, as ``match.original_destination``
    entries; None: any (no destination match)."""
    match = chain.filter_chain_match
    for unsupported in ("address_suffix", "suffix_len", "direct_source_prefix_ranges", "source_type",
                        "source_prefix_ranges", "source_ports", "server_names", "transport_protocol"):
        if is_set(match, unsupported):
            raise Refused(f"{where}: filter_chain_match.{unsupported} has no sidecar equivalent on a capture "
                          "listener; it matches destination_port and prefix_ranges")
    if not set(match.application_protocols) <= _HTTP_PROTOCOLS:
        raise Refused(f"{where}: filter_chain_match.application_protocols {list(match.application_protocols)} has no "
                      f"sidecar equivalent; an HTTP chain may match {sorted(_HTTP_PROTOCOLS)} (what the sidecar "
                      "tells from other traffic)")
    port = match.destination_port.value if match.HasField("destination_port") else None
    networks = [_network(cidr, f"{where}: filter_chain_match.prefix_ranges[{i}]")
                for i, cidr in enumerate(match.prefix_ranges)]
    if not networks:
        return None if port is None else [f"*:{port}"]
    entries = []
    for network in networks:
        single = network.prefixlen == network.max_prefixlen
        host = str(network.network_address) if single else str(network)
        if port is None:
            entries.append(host)
        elif single:
            entries.append(f"[{host}]:{port}" if network.version == 6 else f"{host}:{port}")
        else:
            entries.append(f"{host}:{port}")
    return entries


def restricted(routes: list[dict[str, Any]], destinations: list[str] | None, chain: str) -> list[dict[str, Any]]:
    """The routes of one chain, each matching only its destinations, named under the chain (two
    chains may carry routes of the same name)."""
    placed = []
    for route in routes:
        route = dict(route)
        if destinations is not None:
            route["match"] = {**route.get("match", {}), "original_destination": destinations}
        if "name" in route:
            route["name"] = f"{chain}/{route['name']}"
        placed.append(route)
    return placed


def chain_order(chains: list[tuple[str, list[str] | None, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Every chain's routes: those of chains matching a destination first (Envoy picks the most
    specific chain), then those of a chain matching any."""
    specific = [route for _, destinations, routes in chains if destinations is not None for route in routes]
    catch_all = [route for _, destinations, routes in chains if destinations is None for route in routes]
    return specific + catch_all


def check_listener_filters(listener: Listener, where: str) -> None:
    for i, found in enumerate(listener.listener_filters):
        kind = type_name(found.typed_config)
        if kind and kind not in _KNOWN_LISTENER_FILTERS:
            raise Refused(f"{where}: listener_filters[{i}] {kind} has no sidecar equivalent")


def passthrough_cluster(cluster: Cluster, where: str) -> dict[str, Any]:
    """Envoy's ORIGINAL_DST cluster: each request goes where its connection was going."""
    if cluster.lb_policy != Cluster.CLUSTER_PROVIDED:
        raise Refused(f"{where}: type ORIGINAL_DST needs lb_policy CLUSTER_PROVIDED")
    for unsupported in ("load_assignment", "transport_socket", "health_checks", "outlier_detection",
                        "original_dst_lb_config", "typed_extension_protocol_options", "http2_protocol_options"):
        if is_set(cluster, unsupported):
            raise Refused(f"{where}: {unsupported} has no sidecar equivalent on an ORIGINAL_DST cluster")
    translated: dict[str, Any] = {"name": cluster.name, "original_destination": True, "endpoints": []}
    if cluster.HasField("connect_timeout"):
        translated["connect_timeout"] = duration(cluster.connect_timeout)
    return translated


def _network(cidr: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    prefix = cidr.prefix_len.value if cidr.HasField("prefix_len") else None
    try:
        address = ipaddress.ip_address(cidr.address_prefix)
        return ipaddress.ip_network(f"{address}/{address.max_prefixlen if prefix is None else prefix}", strict=False)
    except ValueError:
        raise Refused(f"{where}: {cidr.address_prefix!r}/{prefix} is not a network") from None
