"""A Route rule's ``fault`` and ``rate_limit`` for Envoy: its HTTP filters
(``envoy.filters.http.fault``, ``envoy.filters.http.local_ratelimit``) in the caller's outbound
listener, doing nothing there, and the rule's settings as their per-route config
(``typed_per_filter_config``), set so that Envoy acts as a meshproxy sidecar does. The sidecar
reads them back in ``meshproxy.mesh.translate_filters``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import token_bucket_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from meshproxy.mesh import names

from .route_policy import fraction

FAULT = "envoy.filters.http.fault"
RATE_LIMIT = "envoy.filters.http.local_ratelimit"
# The order a sidecar applies them in: a limited call is answered 429 before any fault.
_ORDER = (("rate_limit", RATE_LIMIT), ("fault", FAULT))


def needed(rules: Iterable[Mapping[str, Any]]) -> set[str]:
    """The rule keys (``fault``, ``rate_limit``) some of ``rules`` set: the filters the listener needs."""
    return {key for rule in rules for key, _ in _ORDER if rule.get(key) is not None}


def listener_filters(keys: set[str]) -> list[hcm_pb2.HttpFilter]:
    """The filters for ``keys``, before the router; configured to do nothing but per route."""
    empty = {"fault": fault_pb2.HTTPFault(), "rate_limit": local_rate_limit_pb2.LocalRateLimit(stat_prefix=names.OUTBOUND)}
    return [hcm_pb2.HttpFilter(name=name, typed_config=_packed(empty[key])) for key, name in _ORDER if key in keys]


def apply_route_filters(route: route_components_pb2.Route, rule: Mapping[str, Any]) -> None:
    if rule.get("rate_limit") is not None:
        route.typed_per_filter_config[RATE_LIMIT].CopyFrom(_packed(rate_limit(rule["rate_limit"])))
    if rule.get("fault") is not None:
        route.typed_per_filter_config[FAULT].CopyFrom(_packed(fault(rule["fault"])))


def fault(settings: Mapping[str, Any]) -> fault_pb2.HTTPFault:
    """Envoy conditions a whole fault on its headers: the Route's checks made the delay's and
    the abort's header the same."""
    config = fault_pb2.HTTPFault()
    header = None
    if settings.get("delay") is not None:
        delay = settings["delay"]
        header = delay.get("header")
        config.delay.CopyFrom(common_fault_pb2.FaultDelay(fixed_delay=_ms(delay["fixed_ms"]),
                                                          percentage=fraction(delay["percent"])))
    if settings.get("abort") is not None:
        abort = settings["abort"]
        header = header or abort.get("header")
        config.abort.CopyFrom(fault_pb2.FaultAbort(http_status=abort["status"], percentage=fraction(abort["percent"])))
    if header is not None:
        config.headers.append(route_components_pb2.HeaderMatcher(name=header, present_match=True))
    return config


def rate_limit(settings: Mapping[str, Any], stat_prefix: str = names.OUTBOUND) -> local_rate_limit_pb2.LocalRateLimit:
    """A token bucket for the route (or, on the inbound listener, for the service's instance),
    on every request (Envoy's default enables it for none)."""
    every = base_pb2.RuntimeFractionalPercent(default_value=fraction(100))
    return local_rate_limit_pb2.LocalRateLimit(stat_prefix=stat_prefix, filter_enabled=every, filter_enforced=every,
                                               token_bucket=token_bucket(settings))


def token_bucket(settings: Mapping[str, Any]) -> token_bucket_pb2.TokenBucket:
    """A sidecar ``rate_limit`` as Envoy's token bucket: ``requests_per_second`` tokens each
    second, ``burst`` (default: one second's worth) held at most."""
    per_second = settings["requests_per_second"]
    return token_bucket_pb2.TokenBucket(
        max_tokens=settings.get("burst") or per_second, tokens_per_fill=wrappers_pb2.UInt32Value(value=per_second),
        fill_interval=duration_pb2.Duration(seconds=1))


def inbound_rate_limit(settings: Mapping[str, Any] | None) -> list[hcm_pb2.HttpFilter]:
    """A TrafficPolicy's ``rate_limit`` as the inbound listener's filter, after authorization and
    before the router, as a sidecar listener takes its own: every caller's calls take a token."""
    if settings is None:
        return []
    return [hcm_pb2.HttpFilter(name=RATE_LIMIT, typed_config=_packed(rate_limit(settings, names.INBOUND)))]


def _packed(message: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url="type.googleapis.com/" + message.DESCRIPTOR.full_name,
                       value=message.SerializeToString(deterministic=True))


def _ms(milliseconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=milliseconds // 1000, nanos=(milliseconds % 1000) * 1_000_000)
