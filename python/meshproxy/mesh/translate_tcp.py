"""Envoy ``tcp_proxy`` listeners -> the sidecar's ``protocol: tcp`` listeners and clusters.

The control plane writes a TCP service's listeners as one filter chain (or, permissive, a mutual
TLS one and a plain-text one) ending in ``envoy.filters.network.tcp_proxy`` to one cluster,
after the AccessPolicy's ``envoy.filters.network.rbac`` filters (the same RBAC shape as the HTTP
filters, read by :mod:`.translate_rbac`) and the TrafficPolicy's rate limit, an
``envoy.filters.network.local_ratelimit`` whose tokens are connections (the sidecar listener's
``rate_limit``). The cluster a ``tcp_proxy`` names is a ``tcp`` cluster.
"""

from __future__ import annotations

from typing import Any

from .translate_base import Refused, only
from .translate_filters import token_bucket
from .translate_rbac import authorization_policy
from .xds_messages import type_name, unpack
from .xds_pb2 import FilterChain, Listener, NetworkLocalRateLimit, NetworkRbacFilter, RbacFilter, TcpProxy

TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def is_tcp_proxy(listener: Listener) -> bool:
    """Whether the listener's chains end in a ``tcp_proxy`` filter (rather than an HTTP one)."""
    return any(chain.filters and type_name(chain.filters[-1].typed_config) == TCP_PROXY
               for chain in listener.filter_chains)


def tcp_listener(listener: Listener, address: str, direction: str, secured: list[bool], trust_domain: str,
                 where: str) -> dict[str, Any]:
    """The sidecar listener of a ``tcp_proxy`` listener; ``secured`` says which chains are mutual TLS."""
    chains = list(listener.filter_chains)
    if len(chains) == 1:
        tls = "strict" if secured[0] else "disable"
    elif len(chains) == 2 and sorted(secured) == [False, True]:
        filters = [[f.SerializeToString(deterministic=True) for f in chain.filters] for chain in chains]
        if filters[0] != filters[1]:
            raise Refused(f"{where}: the mutual TLS and plain-text filter chains must have the same filters")
        tls = "permissive"
    else:
        raise Refused(f"{where}: expected one filter chain (mutual TLS or plain text) or two (mutual TLS and "
                      f"plain text), found {len(chains)}")
    cluster, policies, rate_limit = _filters(chains[0], trust_domain, f"{where}: filter_chains[0]")
    translated: dict[str, Any] = {"name": listener.name, "address": address, "protocol": "tcp",
                                  "direction": direction, "tls": tls, "authorization": policies,
                                  "routes": [{"cluster": cluster}]}
    if rate_limit is not None:
        translated["rate_limit"] = rate_limit
    return translated


def tcp_clusters(listeners: list[dict[str, Any]]) -> set[str]:
    """The clusters the translated ``tcp`` listeners send to."""
    return {listener["routes"][0]["cluster"] for listener in listeners if listener.get("protocol") == "tcp"}


def _filters(chain: FilterChain, trust_domain: str,
             where: str) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
    """The cluster of the chain's ``tcp_proxy``, the policies of the RBAC filters before it, and
    the listener's rate limit (a network local_ratelimit after them: the sidecar authorizes a
    connection before it takes a token)."""
    policies: list[dict[str, Any]] = []
    rate_limit: dict[str, Any] | None = None
    *others, last = chain.filters
    proxy = unpack(last.typed_config, TcpProxy)
    if proxy is None:
        raise Refused(f"{where}: the last network filter must be envoy.filters.network.tcp_proxy")
    if proxy.WhichOneof("cluster_specifier") != "cluster":
        raise Refused(f"{where}: a tcp_proxy to weighted_clusters has no sidecar equivalent; expected one cluster")
    for i, network_filter in enumerate(others):
        at = f"{where}: filters[{i}] '{network_filter.name}'"
        limit = unpack(network_filter.typed_config, NetworkLocalRateLimit)
        if limit is not None:
            if rate_limit is not None:
                raise Refused(f"{at}: a sidecar listener has one rate limit; found a second")
            only(limit, {"stat_prefix", "token_bucket"}, at)
            rate_limit = token_bucket(limit, at)
            continue
        network = unpack(network_filter.typed_config, NetworkRbacFilter)
        if network is None:
            raise Refused(f"{at}: {type_name(network_filter.typed_config) or 'a filter without typed_config'} has no "
                          "sidecar equivalent before tcp_proxy; expected envoy.filters.network.rbac or "
                          "envoy.filters.network.local_ratelimit")
        if rate_limit is not None:
            raise Refused(f"{at}: the sidecar authorizes a connection before its listener's rate limit takes a "
                          "token; expected the rate limit after every RBAC filter")
        if network.matcher or network.shadow_matcher:
            raise Refused(f"{at}: a matcher has no sidecar equivalent; use rules (RBAC policies)")
        # The HTTP filter's message, with the same rules: read by the same translation.
        http = RbacFilter()
        if network.HasField("rules"):
            http.rules.CopyFrom(network.rules)
        if network.HasField("shadow_rules"):
            http.shadow_rules.CopyFrom(network.shadow_rules)
        name = network_filter.name if network_filter.name not in {p["name"] for p in policies} else f"rbac-{i}"
        policy = authorization_policy(http, name, trust_domain, at)
        if policy is not None:
            policies.append(policy)
    return str(proxy.cluster), policies, rate_limit
