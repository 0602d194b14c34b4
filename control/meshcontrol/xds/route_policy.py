"""A Route rule's answers of its own (``redirect``, ``direct_response``) as Envoy's
``Route.redirect`` and ``Route.direct_response``, its ``mirror`` as a
``RouteAction.request_mirror_policies`` entry, and its retry policy as Envoy's
``RouteAction.retry_policy``, set so that Envoy retries
as a meshproxy sidecar does: the same ``retry_on`` names (the sidecar took Envoy's), tries on
another endpoint when there is one (Envoy's ``previous_hosts`` predicate), the same back-off.
The budget is not here: Envoy keeps it on the cluster (``cluster_policy.circuit_breakers``), and
the body bound on the route (``per_request_buffer_limit_bytes``). The sidecar reads them back in
``meshproxy.mesh.translate_routes`` and ``translate_breakers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
HOST_SELECTION_ATTEMPTS = 3
"""How many draws Envoy makes for a host other than the ones tried (then takes the last drawn)."""


_REDIRECT_CODES = {301: route_components_pb2.RedirectAction.MOVED_PERMANENTLY,
                   302: route_components_pb2.RedirectAction.FOUND,
                   303: route_components_pb2.RedirectAction.SEE_OTHER,
                   307: route_components_pb2.RedirectAction.TEMPORARY_REDIRECT,
                   308: route_components_pb2.RedirectAction.PERMANENT_REDIRECT}


def redirect_action(redirect: Mapping[str, Any]) -> route_components_pb2.RedirectAction:
    """Envoy, as the sidecar, replaces the whole authority with ``host`` (a port with it, or none)
    and keeps the request's otherwise."""
    action = route_components_pb2.RedirectAction(response_code=_REDIRECT_CODES[redirect["status"]],
                                                 strip_query=redirect["strip_query"])
    if redirect.get("path") is not None:
        action.path_redirect = redirect["path"]
    if redirect.get("host") is not None:
        action.host_redirect = redirect["host"]
    if redirect.get("scheme") is not None:
        action.scheme_redirect = redirect["scheme"]
    return action


def direct_response_action(direct: Mapping[str, Any]) -> route_components_pb2.DirectResponseAction:
    action = route_components_pb2.DirectResponseAction(status=direct["status"])
    if direct["body"]:
        action.body.CopyFrom(base_pb2.DataSource(inline_string=direct["body"]))
    return action


def mirror_policy(cluster: str, percent: float) -> route_components_pb2.RouteAction.RequestMirrorPolicy:
    """The share in millionths: the sidecar's percent has fractions (0.5)."""
    return route_components_pb2.RouteAction.RequestMirrorPolicy(
        cluster=cluster, runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=fraction(percent)))


def fraction(percent: float) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def retry_policy(retry: Mapping[str, Any]) -> route_components_pb2.RetryPolicy:
    policy = route_components_pb2.RetryPolicy(
        retry_on=",".join(retry["retry_on"]), num_retries=wrappers_pb2.UInt32Value(value=retry["attempts"] - 1),
        retriable_status_codes=retry["retriable_status_codes"],
        retry_back_off=route_components_pb2.RetryPolicy.RetryBackOff(
            base_interval=_ms(retry["backoff"]["base_interval_ms"]),
            max_interval=_ms(retry["backoff"]["max_interval_ms"])),
        retry_host_predicate=[route_components_pb2.RetryPolicy.RetryHostPredicate(
            name=PREVIOUS_HOSTS, typed_config=_packed(previous_hosts_pb2.PreviousHostsPredicate()))],
        host_selection_retry_max_attempts=HOST_SELECTION_ATTEMPTS)
    if retry.get("per_try_timeout_ms") is not None:
        policy.per_try_timeout.CopyFrom(_ms(retry["per_try_timeout_ms"]))
    return policy


def _packed(message: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url="type.googleapis.com/" + message.DESCRIPTOR.full_name,
                       value=message.SerializeToString(deterministic=True))


def _ms(milliseconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=milliseconds // 1000, nanos=(milliseconds % 1000) * 1_000_000)
