"""``kind: TrafficPolicy``: how callers balance and watch the instances of one service — the
settings of the clusters every caller's sidecar has for it. Each setting is the sidecar's own
section (``lb``, ``health_check``, ``outlier_detection``, ``circuit_breakers`` of a sidecar
cluster), so it means and
is checked the same in a sidecar file and in ``mesh.yaml``.

Stored, durations are whole milliseconds under ``<key>_ms`` (``interval_ms: 5000``), as a
Route's ``timeout_ms``; :func:`in_millis` writes that form and ``documents.as_document`` reads it
back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from meshproxy.config.clusters import HASHING_LBS, Lb
from meshproxy.config.defaults import default, default_duration
from meshproxy.config.duration import Duration, to_millis
from meshproxy.config.health import HealthCheck, OutlierDetection
from meshproxy.config.retry import CircuitBreakers
from meshproxy.config.route_rules import RateLimit
from meshproxy.config.timeouts import positive
from pydantic import BaseModel, field_validator

from .base import Document, Resource
from .names import Label

__all__ = ["HASHING_LBS", "SECTIONS", "TrafficPolicy", "in_millis"]


class TrafficPolicy(Document):
    """How callers balance calls to one service and find its failing instances; one per service.
    Absent: p2c_ewma, no health checks, no outlier ejection, no circuit breakers."""

    kind: Literal["TrafficPolicy"]
    service: Label
    namespace: Label = "default"
    lb: Lb = default("cluster.lb")
    """As a sidecar cluster's lb; ring_hash and maglev need a Route whose every rule has a
    hash_policy."""
    health_check: HealthCheck | None = None
    """As a sidecar cluster's health_check: each caller checks each instance (through its
    sidecar, so the check reaches the app as a call from the caller would)."""
    outlier_detection: OutlierDetection | None = None
    """As a sidecar cluster's outlier_detection: each caller ejects the instances whose answers
    to it fail."""
    circuit_breakers: CircuitBreakers | None = None
    """As a sidecar cluster's circuit_breakers: limits on what each caller sends the service at
    once; over them, the caller's sidecar answers 503 overflow."""
    idle_timeout: Duration = default_duration("cluster.idle_timeout")
    """As a sidecar cluster's idle_timeout: each caller closes a connection to an instance once
    unused for this long (Envoy's common_http_protocol_options.idle_timeout)."""
    rate_limit: RateLimit | None = None
    """The service's own inbound listener's rate_limit: one token bucket per instance for the
    calls of every caller (Envoy's local_ratelimit filter on the inbound listener); over it,
    the called instance's sidecar answers 429 rate_limited. A tcp service's tokens are
    connections (Envoy's network local_ratelimit): one over it is closed at once. Default: none."""

    @field_validator("idle_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        return positive("idle_timeout", value)

    def stored(self) -> Resource:
        stored: Resource = {"kind": self.kind, "service": self.service, "namespace": self.namespace, "lb": self.lb}
        for section in SECTIONS:
            stored[section] = in_millis(getattr(self, section))
        stored["idle_timeout_ms"] = to_millis(self.idle_timeout)
        stored["rate_limit"] = self.rate_limit.model_dump(mode="json") if self.rate_limit else None
        return stored


SECTIONS = ("health_check", "outlier_detection", "circuit_breakers")
"""The sidecar cluster sections a TrafficPolicy carries: a new one is a field above and a name
here, then its xDS fields in ``xds.cluster_policy`` (and the sidecar's reading of them)."""


def in_millis(section: BaseModel | None) -> dict[str, Any] | None:
    """A sidecar section as plain data with each duration as whole milliseconds under
    ``<key>_ms``."""
    if section is None:
        return None
    return _convert(section.model_dump(mode="python"))


def _convert(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, timedelta):
            out[f"{key}_ms"] = to_millis(value)
        elif isinstance(value, dict):
            out[key] = _convert(value)
        else:
            out[key] = value
    return out
