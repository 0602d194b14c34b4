"""The health of a cluster's endpoints: active checks (`health_check`) and passive outlier
ejection (`outlier_detection`), both run by the engine (``rust/proxy/src/health``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from .. import _native
from .defaults import default, default_duration
from .duration import Duration, to_micros
from .fields import Host, UrlPath
from .messages import invalid
from .section import _Section

Threshold = Annotated[int, Field(ge=1, le=1_000_000)]
Percent = Annotated[int, Field(ge=0, le=100)]
Status = Annotated[int, Field(ge=100, le=599)]


def _positive(field: str, value: timedelta) -> timedelta:
    try:
        _native.check_positive_duration(field, to_micros(value))
    except ValueError as problem:
        raise invalid(str(problem)) from None
    return value


class HttpCheck(_Section):
    """GET `path` on a connection of its own; healthy when the status is one of `expected_statuses`."""

    path: UrlPath
    """The path to ask, starting with /, e.g. /healthz."""
    host: Host | None = None
    """The Host (:authority) sent; default: the cluster's name, as Envoy sends."""
    expected_statuses: Annotated[list[Status], Field(min_length=1)] = Field(
        default_factory=lambda: list(default("health_check.http.expected_statuses"))
    )
    """The statuses that pass; default: 200 only, as Envoy."""


class GrpcCheck(_Section):
    """grpc.health.v1.Health/Check over HTTP/2 (the cluster's protocol must be http2); healthy when
    the answer is SERVING."""

    service: str = ""
    """The service asked about; empty: the server as a whole."""


class TcpCheck(_Section):
    """Healthy when a connection (and the cluster's TLS handshake, if any) can be made."""


class HealthCheck(_Section):
    """Active checks of each endpoint, by exactly one of http, grpc, tcp. An endpoint starts
    unchecked (counted as unhealthy) and is checked at once; one pass makes it healthy."""

    http: HttpCheck | None = None
    grpc: GrpcCheck | None = None
    tcp: TcpCheck | None = None
    interval: Duration = default_duration("health_check.interval")
    """The wait between the end of one check and the start of the next."""
    timeout: Duration = default_duration("health_check.timeout")
    """A check with no answer within this fails. May be longer than interval, as in Envoy: checks
    of one endpoint never overlap."""
    unhealthy_threshold: Threshold = default("health_check.unhealthy_threshold")
    """Failed checks in a row that take a healthy endpoint out of the balancer's choice."""
    healthy_threshold: Threshold = default("health_check.healthy_threshold")
    """Passed checks in a row that bring an unhealthy endpoint back."""
    jitter: Duration = default_duration("health_check.jitter")
    """Up to this much, at random, is added to each wait, so that many sidecars' checks spread out."""

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: timedelta, info: object) -> timedelta:
        return _positive(getattr(info, "field_name", "interval"), value)

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        given = [kind for kind in ("http", "grpc", "tcp") if getattr(self, kind) is not None]
        if len(given) != 1:
            found = "none" if not given else " and ".join(given)
            raise invalid(f"a health check needs exactly one of http, grpc, tcp; found {found}")
        return self


class SuccessRate(_Section):
    """Ejects endpoints whose success rate over an interval lies more than stdev_factor / 1000
    standard deviations below the mean of the cluster's endpoints (as Envoy)."""

    minimum_hosts: Threshold = default("success_rate.minimum_hosts")
    """Endpoints with enough attempts in an interval needed to compare rates at all."""
    request_volume: Threshold = default("success_rate.request_volume")
    """Attempts an endpoint needs in an interval for its rate to count."""
    stdev_factor: Threshold = default("success_rate.stdev_factor")


class OutlierDetection(_Section):
    """Passive ejection: an endpoint whose answers fail leaves the balancer's choice for
    base_ejection_time × the times it was ejected (at most max_ejection_time). Gateway errors:
    connect failure, reset, timeout, 502, 503, 504; each is also a 5xx."""

    consecutive_5xx: Threshold = default("outlier_detection.consecutive_5xx")
    """5xx answers and gateway errors in a row that eject an endpoint."""
    consecutive_gateway_errors: Threshold | None = None
    """Gateway errors in a row that eject an endpoint; default: not checked on their own (as Envoy)."""
    interval: Duration = default_duration("outlier_detection.interval")
    """How often ejections end and success rates are compared."""
    base_ejection_time: Duration = default_duration("outlier_detection.base_ejection_time")
    max_ejection_time: Duration = default_duration("outlier_detection.max_ejection_time")
    max_ejection_percent: Percent = default("outlier_detection.max_ejection_percent")
    """The largest share of the endpoints ejected at once; one endpoint may always be."""
    success_rate: SuccessRate | None = Field(default_factory=lambda: SuccessRate())
    """Success-rate ejection (on by default, as Envoy); null turns it off."""

    @field_validator("interval", "base_ejection_time")
    @classmethod
    def _positive(cls, value: timedelta, info: object) -> timedelta:
        return _positive(getattr(info, "field_name", "interval"), value)

    @model_validator(mode="after")
    def _ejection_times_in_order(self) -> OutlierDetection:
        if self.max_ejection_time < self.base_ejection_time:
            raise invalid("max_ejection_time must not be less than base_ejection_time", at=("max_ejection_time",))
        return self
