"""Envoy's ``health_checks`` and ``outlier_detection`` of a Cluster -> the sidecar cluster's
``health_check`` and ``outlier_detection`` (docs/resilience-health.md), as the control plane
writes them (``meshcontrol.xds.cluster_policy``).

Envoy's defaults are read as Envoy means them (an unset ``consecutive_5xx`` is 5, success-rate
ejection is on unless ``enforcing_success_rate`` is 0). What the sidecar cannot do the same way
is refused, naming the field: partial enforcement (a percentage other than 0 or 100), local-origin
errors counted apart, failure-percentage ejection, checks slowed while a cluster has no traffic, ...
"""

from __future__ import annotations

from typing import Any

from .translate_base import Refused, duration
from .xds_pb2 import HTTP1, HTTP2, Cluster, HealthCheck

# Envoy's defaults for the OutlierDetection fields the sidecar has.
_ENVOY_OUTLIER_DEFAULTS = {"consecutive_5xx": 5, "consecutive_gateway_failure": 5, "max_ejection_percent": 10,
                           "success_rate_minimum_hosts": 5, "success_rate_request_volume": 100,
                           "success_rate_stdev_factor": 1900, "enforcing_consecutive_5xx": 100,
                           "enforcing_success_rate": 100, "enforcing_consecutive_gateway_failure": 0}
_ENVOY_OUTLIER_TIMES = {"interval": "10000ms", "base_ejection_time": "30000ms", "max_ejection_time": "300000ms"}
_OUTLIER_FIELDS = {*_ENVOY_OUTLIER_DEFAULTS, *_ENVOY_OUTLIER_TIMES, "successful_active_health_check_uneject_host",
                   "always_eject_one_host", "split_external_local_origin_errors", "max_ejection_time_jitter"}
# reuse_connection is taken either way: it changes how a check connects, not what it finds.
_CHECK_FIELDS = {"timeout", "interval", "interval_jitter", "unhealthy_threshold", "healthy_threshold",
                 "reuse_connection", "no_traffic_interval", "http_health_check", "grpc_health_check",
                 "tcp_health_check"}


def health_check(cluster: Cluster, http2: bool, where: str) -> dict[str, Any] | None:
    """The sidecar's health_check of ``cluster``, or None without one."""
    if not cluster.health_checks:
        return None
    if len(cluster.health_checks) > 1:
        raise Refused(f"{where}: health_checks: the sidecar runs one health check per cluster; found "
                      f"{len(cluster.health_checks)}")
    check = cluster.health_checks[0]
    at = f"{where}: health_checks[0]"
    _only(check, _CHECK_FIELDS, at)
    for required in ("timeout", "interval", "unhealthy_threshold", "healthy_threshold"):
        if not check.HasField(required):
            raise Refused(f"{at}: {required} is required")
    interval = duration(check.interval)
    if check.HasField("no_traffic_interval") and duration(check.no_traffic_interval) != interval:
        raise Refused(f"{at}: no_traffic_interval other than interval has no sidecar equivalent; the sidecar "
                      "checks at interval whether or not the cluster had traffic")
    if not check.HasField("no_traffic_interval") and interval != "60000ms":
        raise Refused(f"{at}: no_traffic_interval (Envoy's default 60s) must equal interval; the sidecar checks "
                      "at interval whether or not the cluster had traffic")
    translated: dict[str, Any] = {
        "interval": interval, "timeout": duration(check.timeout),
        "unhealthy_threshold": check.unhealthy_threshold.value, "healthy_threshold": check.healthy_threshold.value}
    if check.HasField("interval_jitter"):
        translated["jitter"] = duration(check.interval_jitter)
    kind = check.WhichOneof("health_checker")
    if kind == "http_health_check":
        translated["http"] = _http_check(check.http_health_check, http2, f"{at}: http_health_check")
    elif kind == "grpc_health_check":
        _only(check.grpc_health_check, {"service_name"}, f"{at}: grpc_health_check")
        translated["grpc"] = {"service": check.grpc_health_check.service_name}
    elif kind == "tcp_health_check":
        _only(check.tcp_health_check, set(), f"{at}: tcp_health_check")
        translated["tcp"] = {}
    else:
        raise Refused(f"{at}: {kind or 'no health checker'} has no sidecar equivalent; expected "
                      "http_health_check, grpc_health_check or tcp_health_check")
    return translated


def _http_check(check: HealthCheck.HttpHealthCheck, http2: bool, where: str) -> dict[str, Any]:
    _only(check, {"host", "path", "expected_statuses", "codec_client_type"}, where)
    # The sidecar checks in the cluster's own protocol.
    if check.codec_client_type not in ((HTTP2,) if http2 else (HTTP1,)):
        raise Refused(f"{where}: codec_client_type must be the cluster's protocol, {'HTTP2' if http2 else 'HTTP1'}")
    translated: dict[str, Any] = {"path": check.path}
    if check.host:
        translated["host"] = check.host
    if check.expected_statuses:
        statuses: list[int] = []
        for i, statuses_range in enumerate(check.expected_statuses):
            if not 100 <= statuses_range.start < statuses_range.end <= 600:
                raise Refused(f"{where}: expected_statuses[{i}]: expected a range of statuses within [100, 600)")
            statuses += range(statuses_range.start, statuses_range.end)
        translated["expected_statuses"] = sorted(set(statuses))
    return translated


def outlier_detection(cluster: Cluster, where: str) -> dict[str, Any] | None:
    """The sidecar's outlier_detection of ``cluster``, or None without one."""
    if not cluster.HasField("outlier_detection"):
        return None
    detection = cluster.outlier_detection
    at = f"{where}: outlier_detection"
    _only(detection, _OUTLIER_FIELDS, at)
    value = {name: getattr(detection, name).value if detection.HasField(name) else default
             for name, default in _ENVOY_OUTLIER_DEFAULTS.items()}
    if detection.split_external_local_origin_errors:
        raise Refused(f"{at}: split_external_local_origin_errors has no sidecar equivalent; the sidecar counts a "
                      "failed connection, a reset and a timeout as gateway errors and 5xx")
    if detection.HasField("max_ejection_time_jitter") and duration(detection.max_ejection_time_jitter) != "0ms":
        raise Refused(f"{at}: max_ejection_time_jitter has no sidecar equivalent")
    uneject = detection.successful_active_health_check_uneject_host
    if cluster.health_checks and (not detection.HasField("successful_active_health_check_uneject_host")
                                  or uneject.value):
        raise Refused(f"{at}: successful_active_health_check_uneject_host (Envoy's default true) must be false; "
                      "the sidecar ends an ejection only when its time has passed")
    if value["max_ejection_percent"] < 100 and not detection.always_eject_one_host.value:
        raise Refused(f"{at}: always_eject_one_host must be true; the sidecar may always eject one endpoint, "
                      "whatever max_ejection_percent")
    for enforcing in ("enforcing_consecutive_5xx", "enforcing_success_rate", "enforcing_consecutive_gateway_failure"):
        if value[enforcing] not in (0, 100):
            raise Refused(f"{at}: {enforcing} {value[enforcing]}: the sidecar enforces a detection fully or not "
                          "at all; expected 0 or 100")
    if value["enforcing_consecutive_5xx"] == 0:
        raise Refused(f"{at}: enforcing_consecutive_5xx 0 has no sidecar equivalent; consecutive 5xx always eject")
    translated: dict[str, Any] = {"consecutive_5xx": value["consecutive_5xx"]}
    if value["enforcing_consecutive_gateway_failure"]:
        translated["consecutive_gateway_errors"] = value["consecutive_gateway_failure"]
    for name, default in _ENVOY_OUTLIER_TIMES.items():
        translated[name] = duration(getattr(detection, name)) if detection.HasField(name) else default
    translated["max_ejection_percent"] = value["max_ejection_percent"]
    translated["success_rate"] = {
        "minimum_hosts": value["success_rate_minimum_hosts"], "request_volume": value["success_rate_request_volume"],
        "stdev_factor": value["success_rate_stdev_factor"]} if value["enforcing_success_rate"] else None
    return translated


def _only(message: Any, allowed: set[str], where: str) -> None:
    extra = sorted(field.name for field, _ in message.ListFields() if field.name not in allowed)
    if extra:
        raise Refused(f"{where}: {', '.join(extra)} {'has' if len(extra) == 1 else 'have'} no sidecar equivalent")

