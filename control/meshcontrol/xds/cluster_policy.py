"""A service's TrafficPolicy as the Envoy fields of the clusters callers have for it: its
balancer (``lb_policy``), ``health_checks``, ``outlier_detection`` and ``circuit_breakers`` (with
the retry budget of the service's Route, which Envoy keeps there), each with Envoy's meaning
made to match the sidecar's where Envoy's defaults differ (a sidecar check opens a connection of
its own, checks a cluster at its interval whether or not it has had traffic, an ejection ends
only when its time has passed, and one endpoint may always be ejected), so an Envoy client of
the control plane behaves as a meshproxy sidecar does. The sidecar reads them back in
``meshproxy.mesh.translate_health``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.type.v3 import http_pb2, percent_pb2, range_pb2
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2
from meshproxy.config.defaults import default
from meshproxy.mesh import names

_LB_POLICIES = {
    "round_robin": cluster_pb2.Cluster.ROUND_ROBIN,
    "random": cluster_pb2.Cluster.RANDOM,
    "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
    "ring_hash": cluster_pb2.Cluster.RING_HASH,
    "maglev": cluster_pb2.Cluster.MAGLEV,
}
DEFAULT_LB = "p2c_ewma"
UNLIMITED = 2**32 - 1
"""A circuit breaker's "no limit": Envoy has limits by default (1024, and 3 retries); a sidecar
without circuit_breakers has none, so an Envoy gets these (as Istio does)."""
BREAKERS = ("max_connections", "max_pending_requests", "max_requests", "max_retries")


def apply_traffic_policy(cluster: cluster_pb2.Cluster, policy: Mapping[str, Any] | None,
                         retry_budget: Mapping[str, Any] | None = None) -> None:
    """Sets ``cluster``'s balancer, health checks, outlier detection and circuit breakers from a
    stored TrafficPolicy (None: the defaults, p2c_ewma and none of the others), and the retry
    budget of the service's Route (``retry_budget``)."""
    cluster.circuit_breakers.CopyFrom(circuit_breakers(policy.get("circuit_breakers") if policy else None,
                                                       retry_budget))
    lb = str(policy["lb"]) if policy is not None else DEFAULT_LB
    if lb in _LB_POLICIES:
        cluster.lb_policy = _LB_POLICIES[lb]
    else:
        # Envoy has no peak-EWMA balancer: its nearest is LEAST_REQUEST, and the sidecar reads
        # the policy it should use from the metadata.
        cluster.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
        metadata = struct_pb2.Struct()
        metadata.update({"lb": lb})
        cluster.metadata.filter_metadata[names.METADATA_KEY].CopyFrom(metadata)
    if policy is None:
        return
    if policy.get("health_check") is not None:
        cluster.health_checks.append(health_check(policy["health_check"]))
    if policy.get("outlier_detection") is not None:
        cluster.outlier_detection.CopyFrom(outlier_detection(policy["outlier_detection"]))


def connection_idle_timeout_ms(policy: Mapping[str, Any] | None) -> int:
    """The TrafficPolicy's ``idle_timeout`` (a policy stored before it had one, or none: the
    sidecar's default), for ``common_http_protocol_options.idle_timeout``: Envoy's own default
    (1 h) would keep connections a sidecar closes after a minute."""
    if policy is not None and policy.get("idle_timeout_ms") is not None:
        return int(policy["idle_timeout_ms"])
    return int(default("cluster.idle_timeout_ms"))


def circuit_breakers(breakers: Mapping[str, Any] | None,
                     retry_budget: Mapping[str, Any] | None) -> circuit_breaker_pb2.CircuitBreakers:
    """One DEFAULT-priority threshold: the sidecar's limits (each UNLIMITED without them), and
    the Route's retry budget. Envoy's budget counts retries in flight against requests in flight,
    the sidecar's counts retries against requests over 10 s: ``percent`` is the share in both, and
    ``min_per_second`` becomes ``min_retry_concurrency`` (the same when a try takes about 1 s).
    Envoy ignores ``max_retries`` where a budget is set; a sidecar applies both."""
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    for name in BREAKERS:
        getattr(threshold, name).value = breakers[name] if breakers is not None else UNLIMITED
    if retry_budget is not None:
        threshold.retry_budget.CopyFrom(circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
            budget_percent=percent_pb2.Percent(value=retry_budget["percent"]),
            min_retry_concurrency=wrappers_pb2.UInt32Value(value=retry_budget["min_per_second"])))
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])


def health_check(check: Mapping[str, Any]) -> health_check_pb2.HealthCheck:
    interval = _ms(check["interval_ms"])
    result = health_check_pb2.HealthCheck(
        timeout=_ms(check["timeout_ms"]), interval=interval,
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=check["unhealthy_threshold"]),
        healthy_threshold=wrappers_pb2.UInt32Value(value=check["healthy_threshold"]),
        # As the sidecar: a new connection for each check, and checks at `interval` from the
        # start (Envoy's no_traffic_interval, 60 s by default, would slow them until traffic).
        reuse_connection=wrappers_pb2.BoolValue(value=False), no_traffic_interval=interval)
    if check["jitter_ms"]:
        result.interval_jitter.CopyFrom(_ms(check["jitter_ms"]))
    if check.get("http") is not None:
        http = check["http"]
        result.http_health_check.CopyFrom(health_check_pb2.HealthCheck.HttpHealthCheck(
            path=http["path"], host=http.get("host") or "", expected_statuses=status_ranges(http["expected_statuses"]),
            # Peers' sidecars speak HTTP/2 (mTLS, ALPN h2), as the cluster's requests do.
            codec_client_type=http_pb2.HTTP2))
    elif check.get("grpc") is not None:
        result.grpc_health_check.CopyFrom(health_check_pb2.HealthCheck.GrpcHealthCheck(
            service_name=check["grpc"]["service"]))
    else:
        result.tcp_health_check.CopyFrom(health_check_pb2.HealthCheck.TcpHealthCheck())
    return result


def status_ranges(statuses: list[int]) -> list[range_pb2.Int64Range]:
    """Statuses as Envoy's half-open ranges ``[start, end)``, neighbours merged."""
    ranges: list[range_pb2.Int64Range] = []
    for status in sorted(set(statuses)):
        if ranges and ranges[-1].end == status:
            ranges[-1].end = status + 1
        else:
            ranges.append(range_pb2.Int64Range(start=status, end=status + 1))
    return ranges


def outlier_detection(detection: Mapping[str, Any]) -> outlier_detection_pb2.OutlierDetection:
    result = outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=detection["consecutive_5xx"]),
        enforcing_consecutive_5xx=_percent(100),
        interval=_ms(detection["interval_ms"]), base_ejection_time=_ms(detection["base_ejection_time_ms"]),
        max_ejection_time=_ms(detection["max_ejection_time_ms"]),
        max_ejection_percent=_percent(detection["max_ejection_percent"]),
        # The sidecar ends an ejection only when its time has passed, whatever checks say, and
        # may always eject one endpoint, however small max_ejection_percent is of the cluster.
        successful_active_health_check_uneject_host=wrappers_pb2.BoolValue(value=False),
        always_eject_one_host=wrappers_pb2.BoolValue(value=True))
    gateway = detection.get("consecutive_gateway_errors")
    if gateway is not None:
        result.consecutive_gateway_failure.value = gateway
        result.enforcing_consecutive_gateway_failure.value = 100
    success = detection.get("success_rate")
    if success is None:
        result.enforcing_success_rate.value = 0  # Envoy's default is on (100), as the sidecar's
    else:
        result.enforcing_success_rate.value = 100
        result.success_rate_minimum_hosts.value = success["minimum_hosts"]
        result.success_rate_request_volume.value = success["request_volume"]
        result.success_rate_stdev_factor.value = success["stdev_factor"]
    return result


def _percent(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def _ms(milliseconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=milliseconds // 1000, nanos=(milliseconds % 1000) * 1_000_000)
