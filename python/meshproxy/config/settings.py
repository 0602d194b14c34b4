"""The sidecar-wide sections of the config schema: admin server, limits, access log, tracing,
identity, and the busy-polling window's limit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, field_validator

from .. import _native
from .duration import to_micros
from .fields import ACCESS_LOG_FIELDS, AccessLogField, FilePath, ListenAddress, OtlpEndpoint, Ratio
from .messages import invalid, show
from .section import _Section
from .defaults import default

# The access log path that means standard output (the engine's meshproxy_config::STDOUT).
STDOUT = "stdout"

MAX_BUSY_POLL = timedelta(microseconds=_native.MAX_BUSY_POLL_MICROS)
"""Beyond this a worker would spin through pauses that no event fills (the engine's limit)."""


def _busy_poll_window(value: timedelta) -> timedelta:
    try:
        _native.check_busy_poll(to_micros(value))
    except ValueError as problem:
        raise invalid(str(problem)) from None
    return value


class Admin(_Section):
    """The admin HTTP server (/ready, /metrics, ...); absent from the config means none."""

    address: ListenAddress = default("admin.address")


class Limits(_Section):
    max_header_bytes: Annotated[int, Field(ge=1024, le=1_048_576)] = default("limits.max_header_bytes")
    """Most header bytes accepted on one request: an HTTP/1.1 head or an HTTP/2 header list."""
    max_concurrent_streams: Annotated[int, Field(ge=1, le=65535)] = default("limits.max_concurrent_streams")
    """Per downstream HTTP/2 connection."""


class AccessLog(_Section):
    """One JSON line per request, for every listener (each line names its listener and
    direction). Written by a background thread: when it falls behind, lines are dropped and
    counted (stats: access_log.dropped), and requests never wait."""

    path: FilePath = default("access_log.path")
    """'stdout', or a file appended to (created if missing; relative to the config file's folder)."""
    fields: Annotated[list[AccessLogField], Field(min_length=1)] = Field(
        default_factory=lambda: list(ACCESS_LOG_FIELDS), json_schema_extra={"default": list(ACCESS_LOG_FIELDS)}
    )
    """The fields each line carries, written in the order of the field list in docs/access-log.md."""
    sample: Ratio = default("access_log.sample")
    """The share of requests logged: 1.0 logs every request, 0.0 none."""

    @field_validator("fields")
    @classmethod
    def _each_once(cls, fields: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for i, name in enumerate(fields):
            if name in seen:
                raise invalid(f"{show(name)} is listed twice (as fields[{seen[name]}] too)", at=(i,))
            seen[name] = i
        return fields


class Tracing(_Section):
    """The proxy's span of each request: propagated to the upstream in traceparent (and in B3
    headers when the request came with them), and exported over OTLP/HTTP when sampled."""

    otlp_endpoint: OtlpEndpoint = default("tracing.otlp_endpoint")
    """The OTLP/HTTP collector: spans are posted to its /v1/traces (a URL with a path is used as is)."""
    sample: Ratio = default("tracing.sample")
    """The share of new traces recorded; a sampling decision that comes with the request wins."""
    service_name: Annotated[str, Field(min_length=1)] = default("tracing.service_name")
    """The service.name of the exported spans: usually the service this sidecar runs beside."""


class Identity(_Section):
    """This sidecar's mesh credentials, as PEM files (relative paths are read from the config
    file's folder). Needed by listeners with `tls: strict` or `permissive` and by clusters with
    `tls.mode: mesh`. Rotated in place: when the files change, new handshakes use them."""

    trust_domain: Annotated[str, Field(min_length=1)]
    """Every SPIFFE ID this sidecar presents or accepts lies in it, e.g. mesh.local."""
    cert: FilePath
    """Certificate chain, leaf first; the leaf's URI SAN is this sidecar's SPIFFE ID."""
    key: FilePath
    """The leaf's private key (PKCS#8, SEC1 or PKCS#1 PEM)."""
    bundle: FilePath
    """The CA certificates peers must chain to; old and new ones together during a CA rotation."""
