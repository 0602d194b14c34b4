"""The sidecar's reading of Envoy's health checks, outlier detection and route hash policies:
resources built with Envoy's own classes, decoded through the wire with the sidecar's subset
(xds_pb2), translated into the sidecar's settings with Envoy's defaults read as Envoy means them;
what the sidecar would do differently is refused, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.type.v3 import http_pb2, range_pb2
from google.protobuf import duration_pb2, wrappers_pb2
from meshproxy.config.health import HealthCheck, OutlierDetection
from meshproxy.mesh import xds_pb2
from meshproxy.mesh.translate import Refused
from meshproxy.mesh.translate_health import health_check, outlier_detection
from meshproxy.mesh.translate_routes import route_config_routes

WHERE = "cluster 'c'"


def seconds(value: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(value), nanos=round(value % 1 * 1e9))


def subset(message: Any) -> Any:
    return getattr(xds_pb2, message.DESCRIPTOR.name).FromString(message.SerializeToString())


def http_check(**fields: Any) -> health_check_pb2.HealthCheck:
    check = health_check_pb2.HealthCheck(
        timeout=seconds(0.5), interval=seconds(1), no_traffic_interval=seconds(1),
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=3), healthy_threshold=wrappers_pb2.UInt32Value(value=2),
        http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(
            path="/healthz", codec_client_type=http_pb2.HTTP2,
            expected_statuses=[range_pb2.Int64Range(start=200, end=203)]))
    for name, value in fields.items():
        getattr(check, name).CopyFrom(value)
    return check


def checked(check: health_check_pb2.HealthCheck, http2: bool = True) -> dict[str, Any] | None:
    return health_check(subset(cluster_pb2.Cluster(name="c", health_checks=[check])), http2, WHERE)


def detected(detection: outlier_detection_pb2.OutlierDetection, *, with_checks: bool = False) -> dict[str, Any] | None:
    cluster = cluster_pb2.Cluster(name="c", outlier_detection=detection)
    if with_checks:
        cluster.health_checks.append(http_check())
    return outlier_detection(subset(cluster), WHERE)


def test_an_http_check_becomes_the_sidecars_and_its_schema_takes_it() -> None:
    translated = checked(http_check(interval_jitter=seconds(0.2)))
    assert translated == {"interval": "1000ms", "timeout": "500ms", "unhealthy_threshold": 3, "healthy_threshold": 2,
                          "jitter": "200ms", "http": {"path": "/healthz", "expected_statuses": [200, 201, 202]}}
    HealthCheck.model_validate(translated)


def test_grpc_and_tcp_checks() -> None:
    grpc = http_check()
    grpc.grpc_health_check.service_name = "orders"
    assert checked(grpc)["grpc"] == {"service": "orders"}  # type: ignore[index]
    tcp = http_check()
    tcp.tcp_health_check.SetInParent()
    assert checked(tcp)["tcp"] == {}  # type: ignore[index]


@pytest.mark.parametrize(("change", "message"), [
    ({"no_traffic_interval": seconds(60)},
     r"health_checks\[0\]: no_traffic_interval other than interval has no sidecar equivalent"),
    ({"alt_port": wrappers_pb2.UInt32Value(value=9000)}, r"health_checks\[0\]: alt_port has no sidecar equivalent"),
    ({"http_health_check": health_check_pb2.HealthCheck.HttpHealthCheck(path="/h", codec_client_type=http_pb2.HTTP1)},
     "http_health_check: codec_client_type must be the cluster's protocol, HTTP2"),
    ({"http_health_check": health_check_pb2.HealthCheck.HttpHealthCheck(
        path="/h", codec_client_type=http_pb2.HTTP2, expected_statuses=[range_pb2.Int64Range(start=200, end=700)])},
     r"expected_statuses\[0\]: expected a range of statuses within \[100, 600\)"),
    ({"http_health_check": health_check_pb2.HealthCheck.HttpHealthCheck(
        path="/h", codec_client_type=http_pb2.HTTP2, request_headers_to_remove=["x"])},
     "http_health_check: request_headers_to_remove has no sidecar equivalent"),
])
def test_check_settings_the_sidecar_lacks_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(Refused, match=message):
        checked(http_check(**change))


def test_envoys_default_no_traffic_interval_is_refused_unless_it_is_the_interval() -> None:
    check = http_check()
    check.ClearField("no_traffic_interval")
    with pytest.raises(Refused, match=r"no_traffic_interval \(Envoy's default 60s\) must equal interval"):
        checked(check)
    check.interval.CopyFrom(seconds(60))
    assert checked(check)["interval"] == "60000ms"  # type: ignore[index]


def test_outlier_detection_reads_envoys_defaults_as_envoy_means_them() -> None:
    translated = detected(outlier_detection_pb2.OutlierDetection(always_eject_one_host=wrappers_pb2.BoolValue(value=True)))
    assert translated == {"consecutive_5xx": 5, "interval": "10000ms", "base_ejection_time": "30000ms",
                          "max_ejection_time": "300000ms", "max_ejection_percent": 10,
                          "success_rate": {"minimum_hosts": 5, "request_volume": 100, "stdev_factor": 1900}}
    OutlierDetection.model_validate(translated)


def test_gateway_errors_count_once_enforced_and_success_rate_stops_at_zero() -> None:
    translated = detected(outlier_detection_pb2.OutlierDetection(
        consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=2),
        enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=100)))
    assert translated is not None
    assert (translated["consecutive_gateway_errors"], translated["success_rate"]) == (2, None)


@pytest.mark.parametrize(("fields", "message"), [
    ({"enforcing_consecutive_5xx": 50}, "enforcing_consecutive_5xx 50: the sidecar enforces a detection fully"),
    ({"enforcing_consecutive_5xx": 0}, "enforcing_consecutive_5xx 0 has no sidecar equivalent"),
    ({"failure_percentage_threshold": 85}, "outlier_detection: failure_percentage_threshold has no sidecar equivalent"),
    ({"split_external_local_origin_errors": True}, "split_external_local_origin_errors has no sidecar equivalent"),
    ({"always_eject_one_host": False}, "always_eject_one_host must be true"),
])
def test_outlier_settings_the_sidecar_lacks_are_refused(fields: dict[str, Any], message: str) -> None:
    detection = outlier_detection_pb2.OutlierDetection(always_eject_one_host=wrappers_pb2.BoolValue(value=True))
    for name, value in fields.items():
        if isinstance(value, bool) and name == "split_external_local_origin_errors":
            detection.split_external_local_origin_errors = value
        else:
            getattr(detection, name).value = value
    with pytest.raises(Refused, match=message):
        detected(detection)


def test_unejecting_on_a_passed_check_is_refused_with_checks() -> None:
    detection = outlier_detection_pb2.OutlierDetection(always_eject_one_host=wrappers_pb2.BoolValue(value=True))
    with pytest.raises(Refused, match=r"successful_active_health_check_uneject_host \(Envoy's default true\) must be false"):
        detected(detection, with_checks=True)
    detection.successful_active_health_check_uneject_host.value = False
    assert detected(detection, with_checks=True) is not None


# === Hash policies ===


def routes_with(*policies: route_components_pb2.RouteAction.HashPolicy) -> list[dict[str, Any]]:
    action = route_components_pb2.RouteAction(cluster="c", hash_policy=policies)
    config = route_pb2.RouteConfiguration(name="outbound", virtual_hosts=[route_components_pb2.VirtualHost(
        name="orders", domains=["orders"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"), route=action)])])
    return route_config_routes(subset(config))


HashPolicy = route_components_pb2.RouteAction.HashPolicy


def test_hash_policies_become_the_routes_hash_policy() -> None:
    [route] = routes_with(HashPolicy(header=HashPolicy.Header(header_name="x-user")),
                          HashPolicy(cookie=HashPolicy.Cookie(name="session")),
                          HashPolicy(connection_properties=HashPolicy.ConnectionProperties(source_ip=True)))
    assert route["hash_policy"] == [{"header": "x-user"}, {"cookie": "session"}, {"source_ip": True}]


@pytest.mark.parametrize(("policy", "message"), [
    (HashPolicy(header=HashPolicy.Header(header_name="x-user"), terminal=True), r"hash_policy\[0\]: terminal"),
    (HashPolicy(cookie=HashPolicy.Cookie(name="session", ttl=duration_pb2.Duration(seconds=60))),
     r"hash_policy\[0\]: cookie: ttl has no sidecar equivalent"),
    (HashPolicy(query_parameter=HashPolicy.QueryParameter(name="user")),
     r"hash_policy\[0\]: query_parameter has no sidecar equivalent"),
])
def test_hash_policies_the_sidecar_lacks_are_refused(policy: Any, message: str) -> None:
    with pytest.raises(Refused, match=message):
        routes_with(policy)
