"""Envoy RouteConfiguration -> the sidecar's ``routes`` of a listener, and the matchers the RBAC
translation shares (header matches, methods, strings, durations).

A virtual host becomes one run of routes per domain, with the domain as ``match.host`` (the
sidecar ignores the port, so ``orders:*`` adds nothing to ``orders``). Envoy picks the virtual
host first (exact domains, then ``*.suffix`` ones, longest first, then ``*``) and a route within
it; the sidecar tries one flat list in order, so the runs are laid out in that order.

A route's ``retry_policy`` is the sidecar's ``retry`` (its budget, which Envoy keeps on the
cluster, is added by ``translate_breakers.with_budgets``); its ``redirect`` and
``direct_response`` are the sidecar's, and so are its ``fault`` and ``rate_limit`` filter configs
(``translate_filters``). What has no sidecar equivalent (query matches, prefix
redirects, ...) is refused with a message
naming where it is: a NACK, never a route that quietly means something else.
"""

from __future__ import annotations

from typing import Any

from . import names
from .translate_base import Refused, duration, percent_of
from .translate_filters import route_filters
from .translate_base import only as _only
from .xds_pb2 import (
    DirectResponseAction,
    HeaderMatcher,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
)

# The retry conditions the sidecar has: Envoy's names, which it took.
_RETRY_ON = ("connect-failure", "refused-stream", "reset", "5xx", "gateway-error", "retriable-status-codes",
             "cancelled", "deadline-exceeded", "resource-exhausted", "unavailable")
_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
# RouteAction.max_stream_duration (kept as bytes by the sidecar's xDS subset) holding only
# grpc_timeout_header_max (field 2) set to an empty Duration (0s): honour grpc-timeout as sent,
# which the sidecar does for every gRPC call.
_GRPC_TIMEOUT_AS_SENT = b"\x12\x00"
_REDIRECT_STATUSES = {RedirectAction.MOVED_PERMANENTLY: 301, RedirectAction.FOUND: 302, RedirectAction.SEE_OTHER: 303,
                      RedirectAction.TEMPORARY_REDIRECT: 307, RedirectAction.PERMANENT_REDIRECT: 308}
# Envoy's buffer for a body to send again, without per_request_buffer_limit_bytes: the
# listener's connection buffer limit, 1 MiB by default.
_ENVOY_BUFFER_LIMIT = 1024 * 1024


def route_config_routes(config: RouteConfiguration) -> list[dict[str, Any]]:
    """The sidecar routes of one RouteConfiguration, in the order the sidecar tries them."""
    where = f"route configuration '{config.name}'"
    _only(config, {"name", "virtual_hosts", "validate_clusters"}, where)
    runs: list[tuple[tuple[int, int], str | None, list[dict[str, Any]]]] = []
    for vhost in config.virtual_hosts:
        at = f"{where}: virtual host '{vhost.name}'"
        _only(vhost, {"name", "domains", "routes", "metadata"}, at)
        routes = [_route(route, f"{at}: routes[{i}]") for i, route in enumerate(vhost.routes)]
        hosts: list[str | None] = []
        for domain in vhost.domains:
            host = _host(domain, at)
            if host is not _DROPPED and host not in hosts:
                hosts.append(host)
        for host in hosts:
            runs.append((_host_rank(host), host, routes))
    runs.sort(key=lambda run: run[0])
    flat: list[dict[str, Any]] = []
    for _, host, routes in runs:
        for route in routes:
            placed = dict(route)
            if host is not None:
                placed["match"] = {"host": host, **route.get("match", {})}
            if "name" in placed:
                placed["name"] = f"{host or '*'}/{placed['name']}"
            flat.append(placed)
    return flat


def route_clusters(config: RouteConfiguration) -> set[str]:
    """The clusters the routes of ``config`` send to (to know when CDS has them all)."""
    names: set[str] = set()
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            action = route.route
            if action.cluster:
                names.add(action.cluster)
            names.update(weighted.name for weighted in action.weighted_clusters.clusters)
            names.update(mirror.cluster for mirror in action.request_mirror_policies if mirror.cluster)
    return names


_DROPPED = "<dropped>"


def _host(domain: str, where: str) -> str | None:
    """The sidecar's match.host for a domain: None for any host, _DROPPED for a form that
    another domain of the virtual host already covers."""
    if domain == "*":
        return None
    name, colon, port = domain.rpartition(":")
    if colon and not name.endswith("]") and "]" not in port:
        if port == "*":
            return _DROPPED  # the sidecar ignores ports: the plain name matches it already
        raise Refused(f"{where}: domain '{domain}': the sidecar matches hosts whatever their port; "
                      f"use '{name}' or '{name}:*'")
    if domain.startswith("*.") or "*" not in domain:
        return domain
    raise Refused(f"{where}: domain '{domain}': expected a name, '*.suffix' or '*'")


def _host_rank(host: str | None) -> tuple[int, int]:
    """Envoy's order of virtual host selection: exact names, longest suffix wildcards, '*'."""
    if host is None:
        return (2, 0)
    if host.startswith("*."):
        return (1, -len(host))
    return (0, 0)


def _route(route: Route, where: str) -> dict[str, Any]:
    _only(route, {"name", "match", "route", "redirect", "direct_response", "metadata", "decorator",
                  "per_request_buffer_limit_bytes", "typed_per_filter_config"}, where)
    translated: dict[str, Any] = {}
    if route.name:
        translated["name"] = route.name
    match = _match(route.match, f"{where}: match")
    if match:
        translated["match"] = match
    kind = route.WhichOneof("action")
    if kind == "route":
        translated.update(_action(route.route, f"{where}: route"))
        # What Envoy's fields cannot say (its route timeout always covers the whole response)
        # comes in the metadata, as the control plane writes it.
        ours = route.metadata.filter_metadata.get(names.METADATA_KEY)
        if ours is not None and "timeout_covers" in ours.fields:
            translated["timeout_covers"] = ours.fields["timeout_covers"].string_value
    elif kind == "redirect":
        translated["redirect"] = _redirect(route.redirect, f"{where}: redirect")
    elif kind == "direct_response":
        translated["direct_response"] = _direct_response(route.direct_response, f"{where}: direct_response")
    else:
        raise Refused(f"{where}: expected a route, redirect or direct_response action; found {kind or 'none'}")
    translated.update(route_filters(route.typed_per_filter_config, where))
    if "retry" in translated:
        limit = route.per_request_buffer_limit_bytes
        translated["retry"]["max_replay_bytes"] = limit.value if route.HasField("per_request_buffer_limit_bytes") \
            else _ENVOY_BUFFER_LIMIT
    elif route.HasField("per_request_buffer_limit_bytes"):
        raise Refused(f"{where}: per_request_buffer_limit_bytes applies with a retry_policy only in the sidecar")
    return translated


def _redirect(redirect: RedirectAction, where: str) -> dict[str, Any]:
    # Envoy's host_redirect replaces the authority whole, as the sidecar's host does.
    _only(redirect, {"host_redirect", "response_code", "strip_query", "scheme_redirect", "https_redirect",
                     "path_redirect"}, where)
    translated: dict[str, Any] = {"status": _REDIRECT_STATUSES[redirect.response_code],
                                  "strip_query": redirect.strip_query}
    if redirect.path_redirect:
        translated["path"] = redirect.path_redirect
    if redirect.host_redirect:
        translated["host"] = redirect.host_redirect
    if redirect.https_redirect:
        translated["scheme"] = "https"
    elif redirect.scheme_redirect:
        translated["scheme"] = redirect.scheme_redirect
    return translated


def _direct_response(direct: DirectResponseAction, where: str) -> dict[str, Any]:
    _only(direct, {"status", "body"}, where)
    kind = direct.body.WhichOneof("specifier")
    if kind not in (None, "inline_string", "inline_bytes"):
        raise Refused(f"{where}: body: {kind} has no sidecar equivalent; expected inline_string or inline_bytes")
    body = direct.body.inline_string if kind == "inline_string" else direct.body.inline_bytes.decode("utf-8", "replace")
    return {"status": direct.status, "body": body}


def _match(match: RouteMatch, where: str) -> dict[str, Any]:
    _only(match, {"prefix", "path", "safe_regex", "headers", "case_sensitive"}, where)
    if match.HasField("case_sensitive") and not match.case_sensitive.value:
        raise Refused(f"{where}: case-insensitive paths have no sidecar equivalent")
    translated: dict[str, Any] = {}
    kind = match.WhichOneof("path_specifier")
    if kind == "prefix":
        translated["path_prefix"] = match.prefix or "/"
    elif kind == "path":
        translated["path"] = match.path
    elif kind == "safe_regex":
        translated["path_regex"] = match.safe_regex.regex
    headers: dict[str, Any] = {}
    for i, matcher in enumerate(match.headers):
        at = f"{where}: headers[{i}]"
        name = matcher.name.lower()
        if name == ":method":
            if "method" in translated:
                raise Refused(f"{at}: ':method' is matched twice")
            translated["method"] = methods_of(matcher, at)
        elif name.startswith(":"):
            raise Refused(f"{at}: the pseudo-header '{name}' has no sidecar match; use the path or domains")
        elif name in headers:
            raise Refused(f"{at}: header '{name}' is matched twice")
        else:
            headers[name] = header_match(matcher, at)
    if headers:
        translated["headers"] = headers
    return translated


def _action(action: RouteAction, where: str) -> dict[str, Any]:
    _only(action, {"cluster", "weighted_clusters", "timeout", "idle_timeout", "prefix_rewrite",
                   "cluster_not_found_response_code",
                   "hash_policy", "retry_policy", "request_mirror_policies", "regex_rewrite",
                   "host_rewrite_literal", "max_stream_duration"}, where)
    if action.max_stream_duration and action.max_stream_duration != _GRPC_TIMEOUT_AS_SENT:
        raise Refused(f"{where}: max_stream_duration is supported only as grpc_timeout_header_max: 0s (the sidecar "
                      "honours every gRPC call's grpc-timeout)")
    translated: dict[str, Any] = {}
    kind = action.WhichOneof("cluster_specifier")
    if kind == "cluster":
        translated["cluster"] = action.cluster
    elif kind == "weighted_clusters":
        _only(action.weighted_clusters, {"clusters", "total_weight"}, f"{where}: weighted_clusters")
        split = []
        for i, weighted in enumerate(action.weighted_clusters.clusters):
            _only(weighted, {"name", "weight"}, f"{where}: weighted_clusters.clusters[{i}]")
            split.append({"cluster": weighted.name, "weight": weighted.weight.value})
        translated["split"] = split
    else:
        raise Refused(f"{where}: expected cluster or weighted_clusters, found {kind or 'neither'}")
    if action.HasField("timeout"):
        translated["timeout"] = duration(action.timeout)
    if action.HasField("idle_timeout"):
        translated["idle_timeout"] = duration(action.idle_timeout)  # Envoy's 0 disables it, as the sidecar's
    if action.prefix_rewrite:
        translated["prefix_rewrite"] = action.prefix_rewrite
    if action.HasField("regex_rewrite"):
        rewrite = action.regex_rewrite
        _only(rewrite, {"pattern", "substitution"}, f"{where}: regex_rewrite")
        _only(rewrite.pattern, {"regex"}, f"{where}: regex_rewrite.pattern")
        translated["regex_rewrite"] = {"pattern": rewrite.pattern.regex, "substitution": rewrite.substitution}
    if action.host_rewrite_literal:
        translated["host_rewrite"] = action.host_rewrite_literal
    if action.hash_policy:
        translated["hash_policy"] = [_hash_source(policy, f"{where}: hash_policy[{i}]")
                                     for i, policy in enumerate(action.hash_policy)]
    if action.HasField("retry_policy"):
        translated["retry"] = _retry(action.retry_policy, f"{where}: retry_policy")
    if action.request_mirror_policies:
        translated["mirror"] = _mirror(action.request_mirror_policies, f"{where}: request_mirror_policies")
    return translated


def _mirror(policies: Any, where: str) -> dict[str, Any]:
    if len(policies) > 1:
        raise Refused(f"{where}: the sidecar mirrors a route to one cluster; found {len(policies)}")
    policy = policies[0]
    _only(policy, {"cluster", "runtime_fraction"}, f"{where}[0]")
    if not policy.cluster:
        raise Refused(f"{where}[0]: expected a cluster")
    percent = 100.0  # Envoy's, without runtime_fraction
    if policy.HasField("runtime_fraction"):
        _only(policy.runtime_fraction, {"default_value"}, f"{where}[0]: runtime_fraction")
        percent = percent_of(policy.runtime_fraction.default_value)
    return {"cluster": policy.cluster, "percent": percent}


def _retry(policy: RetryPolicy, where: str) -> dict[str, Any]:
    """The sidecar's retry (without its budget and body bound, which Envoy keeps elsewhere)."""
    # host_selection_retry_max_attempts is how hard Envoy looks for another endpoint; the
    # sidecar's balancer always avoids the ones tried when there is another.
    _only(policy, {"retry_on", "num_retries", "per_try_timeout", "retry_back_off", "retriable_status_codes",
                   "retry_host_predicate", "host_selection_retry_max_attempts"}, where)
    conditions = [condition.strip() for condition in policy.retry_on.split(",") if condition.strip()]
    for condition in conditions:
        if condition not in _RETRY_ON:
            raise Refused(f"{where}: retry_on '{condition}' has no sidecar equivalent; expected some of "
                          f"{', '.join(_RETRY_ON)}")
    if not conditions:
        raise Refused(f"{where}: retry_on is empty; expected some of {', '.join(_RETRY_ON)}")
    hosts = policy.retry_host_predicate
    if [p.name for p in hosts] != [_PREVIOUS_HOSTS] or not hosts[0].typed_config.type_url.endswith(
            ".PreviousHostsPredicate"):
        raise Refused(f"{where}: retry_host_predicate must be [{_PREVIOUS_HOSTS}]: the sidecar retries on another "
                      "endpoint when there is one")
    # Envoy's defaults: 1 retry; a back-off from 25ms, at most 10 times the base.
    retries = policy.num_retries.value if policy.HasField("num_retries") else 1
    translated: dict[str, Any] = {"retry_on": conditions, "attempts": retries + 1}
    if policy.HasField("per_try_timeout") and duration(policy.per_try_timeout) != "0ms":
        translated["per_try_timeout"] = duration(policy.per_try_timeout)
    if policy.retriable_status_codes:
        translated["retriable_status_codes"] = list(policy.retriable_status_codes)
    back_off = policy.retry_back_off
    if policy.HasField("retry_back_off"):
        base = back_off.base_interval.seconds * 1000 + back_off.base_interval.nanos // 1_000_000
        translated["backoff"] = {"base_interval": duration(back_off.base_interval),
                                 "max_interval": duration(back_off.max_interval) if back_off.HasField("max_interval")
                                 else f"{10 * base}ms"}
    else:
        translated["backoff"] = {"base_interval": "25ms", "max_interval": "250ms"}
    return translated


def _hash_source(policy: RouteAction.HashPolicy, where: str) -> dict[str, Any]:
    """One source of the route's hash key: a header, a cookie (only read: Envoy's ttl would have
    it set one) or the client's IP."""
    if policy.terminal:
        raise Refused(f"{where}: terminal has no sidecar equivalent; every source the request carries is hashed")
    kind = policy.WhichOneof("policy_specifier")
    if kind == "header":
        _only(policy.header, {"header_name"}, f"{where}: header")
        return {"header": policy.header.header_name}
    if kind == "cookie":
        _only(policy.cookie, {"name"}, f"{where}: cookie")
        return {"cookie": policy.cookie.name}
    if kind == "connection_properties" and policy.connection_properties.source_ip:
        return {"source_ip": True}
    raise Refused(f"{where}: {kind or 'no source'} has no sidecar equivalent; expected header, cookie or "
                  "connection_properties.source_ip")


# === Shared with the RBAC translation ===


def header_match(matcher: HeaderMatcher, where: str) -> dict[str, Any]:
    """A sidecar header match: {exact}, {present} or {regex}."""
    kind = matcher.WhichOneof("header_match_specifier")
    if kind == "present_match":
        return {"present": matcher.present_match != matcher.invert_match}
    if matcher.invert_match:
        raise Refused(f"{where}: an inverted match of header '{matcher.name}' translates only with present_match")
    if kind == "exact_match":
        return {"exact": matcher.exact_match}
    if kind == "safe_regex_match":
        return {"regex": matcher.safe_regex_match.regex}
    if kind == "string_match":
        how, value = string_of(matcher.string_match, f"{where}: string_match")
        if how in ("exact", "regex"):
            return {how: value}
        raise Refused(f"{where}: header '{matcher.name}': a {how} match has no sidecar equivalent; "
                      "expected exact, present or regex")
    raise Refused(f"{where}: header '{matcher.name}': {kind or 'no'} match has no sidecar equivalent; "
                  "expected exact, present or regex")


def methods_of(matcher: HeaderMatcher, where: str) -> list[str]:
    """The methods a ':method' header matcher names: exact one, or a regex 'GET|HEAD'."""
    match = header_match(matcher, where)
    if "exact" in match:
        return [match["exact"]]
    if "regex" in match:
        methods = str(match["regex"]).split("|")
        if all(method.isalpha() and method.isupper() for method in methods):
            return methods
    raise Refused(f"{where}: ':method' must be matched exactly or by a regex like 'GET|HEAD'")


def string_of(matcher: Any, where: str) -> tuple[str, object]:
    """(exact | prefix | suffix | contains | regex, value) of an envoy.type.matcher.v3.StringMatcher."""
    if matcher.ignore_case:
        raise Refused(f"{where}: ignore_case has no sidecar equivalent")
    kind = matcher.WhichOneof("match_pattern")
    if kind == "safe_regex":
        return "regex", matcher.safe_regex.regex
    if kind in ("exact", "prefix", "suffix", "contains"):
        return kind, getattr(matcher, kind)
    raise Refused(f"{where}: a {kind or 'missing'} string match has no sidecar equivalent")
