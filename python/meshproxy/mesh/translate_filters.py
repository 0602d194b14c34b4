"""A route's ``typed_per_filter_config`` for Envoy's fault and local rate limit filters -> the
sidecar route's ``fault`` and ``rate_limit`` (docs/resilience-route-rules.md), as the control
plane writes them (``meshcontrol.xds.route_filters``); and those filters in a listener, where
they must do nothing but per route (the sidecar has no listener-wide fault, and a listener's
rate_limit is not the same bucket as a route's).

A fault's ``headers`` condition the whole fault: one header that must be present, which becomes
both the delay's and the abort's ``header``. A rate limit must apply to every request
(``filter_enabled`` and ``filter_enforced`` at 100 %) and refill each second, as the sidecar's
``requests_per_second``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import any_pb2

from .translate_base import Refused, duration, only, percent_of
from .xds_messages import ENVOY_NAMES, type_name, unpack
from .xds_pb2 import HttpFault, LocalRateLimit, NetworkLocalRateLimit

FAULT = ENVOY_NAMES[HttpFault]
RATE_LIMIT = ENVOY_NAMES[LocalRateLimit]
ROUTE_FILTERS = {FAULT: "fault", RATE_LIMIT: "rate_limit"}
"""The filters a route may configure, by their config's type, and the route key each sets."""


def listener_filter(config: any_pb2.Any, where: str) -> dict[str, Any] | None:
    """A listener's fault or rate limit filter: doing nothing but per route (``None``), or, for a
    rate limit with a token bucket, the listener's own ``rate_limit`` (a TrafficPolicy's, on the
    inbound listener). A listener-wide fault is refused."""
    fault, limit = unpack(config, HttpFault), unpack(config, LocalRateLimit)
    if fault is not None and fault.ListFields():
        raise Refused(f"{where}: a listener-wide fault has no sidecar equivalent; expected it per route only")
    if limit is not None and any(field.name != "stat_prefix" for field, _ in limit.ListFields()):
        return _rate_limit(limit, where)
    return None


def route_filters(configs: Mapping[str, any_pb2.Any], where: str) -> dict[str, Any]:
    """The sidecar route keys of a route's per-filter configs."""
    translated: dict[str, Any] = {}
    for name in sorted(configs):
        at = f"{where}: typed_per_filter_config '{name}'"
        kind = type_name(configs[name])
        if kind == FAULT:
            translated["fault"] = _fault(HttpFault.FromString(configs[name].value), at)
        elif kind == RATE_LIMIT:
            translated["rate_limit"] = _rate_limit(LocalRateLimit.FromString(configs[name].value), at)
        else:
            raise Refused(f"{at}: {kind or 'no typed config'} has no sidecar equivalent; expected {FAULT} or "
                          f"{RATE_LIMIT}")
    return translated


def _fault(fault: HttpFault, where: str) -> dict[str, Any]:
    only(fault, {"delay", "abort", "headers"}, where)
    header = None
    if fault.headers:
        matcher = fault.headers[0]
        if len(fault.headers) > 1 or matcher.WhichOneof("header_match_specifier") != "present_match" \
                or not matcher.present_match or matcher.invert_match:
            raise Refused(f"{where}: headers: the sidecar conditions a fault on one header being present; expected "
                          "one present_match")
        header = matcher.name
    translated: dict[str, Any] = {}
    if fault.HasField("delay"):
        only(fault.delay, {"fixed_delay", "percentage"}, f"{where}: delay")
        if not fault.delay.HasField("fixed_delay"):
            raise Refused(f"{where}: delay: expected a fixed_delay")
        # An unset percentage is Envoy's 0 %.
        translated["delay"] = {"fixed": duration(fault.delay.fixed_delay), "percent": percent_of(fault.delay.percentage),
                               "header": header}
    if fault.HasField("abort"):
        only(fault.abort, {"http_status", "percentage"}, f"{where}: abort")
        if fault.abort.WhichOneof("error_type") != "http_status":
            raise Refused(f"{where}: abort: expected an http_status")
        translated["abort"] = {"status": fault.abort.http_status, "percent": percent_of(fault.abort.percentage),
                               "header": header}
    if not translated:
        raise Refused(f"{where}: a fault needs a delay, an abort, or both")
    return translated


def _rate_limit(limit: LocalRateLimit, where: str) -> dict[str, Any]:
    only(limit, {"stat_prefix", "token_bucket", "filter_enabled", "filter_enforced"}, where)
    for name in ("filter_enabled", "filter_enforced"):
        fraction = getattr(limit, name)
        if not limit.HasField(name) or fraction.runtime_key or percent_of(fraction.default_value) != 100:
            raise Refused(f"{where}: {name} must be 100 % without a runtime_key: the sidecar limits every request "
                          "of the route")
    return token_bucket(limit, where)


def token_bucket(limit: LocalRateLimit | NetworkLocalRateLimit, where: str) -> dict[str, Any]:
    """A local rate limit's token bucket (of the HTTP filter, or of the network one, whose tokens
    are connections) as the sidecar's ``rate_limit``: refilled each second."""
    if not limit.HasField("token_bucket"):
        raise Refused(f"{where}: expected a token_bucket")
    bucket = limit.token_bucket
    only(bucket, {"max_tokens", "tokens_per_fill", "fill_interval"}, f"{where}: token_bucket")
    if duration(bucket.fill_interval) != "1000ms":
        raise Refused(f"{where}: token_bucket.fill_interval must be 1s: the sidecar refills requests_per_second "
                      "tokens each second")
    per_second = bucket.tokens_per_fill.value if bucket.HasField("tokens_per_fill") else 1  # Envoy's default
    return {"requests_per_second": per_second, "burst": bucket.max_tokens}
