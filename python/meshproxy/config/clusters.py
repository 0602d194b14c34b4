"""Clusters of the config schema: their endpoints (listed, or found by a discovery source),
how the sidecar secures its connections to them, and how it balances requests across them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    ValidationInfo,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from .. import _native
from ..addresses import parse_endpoint_address
from .duration import Duration, to_micros
from .endpoints import Endpoints, dump_endpoints, endpoints_reader
from .health import HealthCheck, OutlierDetection
from .fields import DnsName, EndpointAddress, FilePath, Host, Name, ResolverAddress
from .messages import invalid, show
from .section import Weight, _empty, _Section, _with_key
from .capture import check_passthrough
from .defaults import default, default_duration
from .retry import CircuitBreakers


def _positive(field: str, value: timedelta, at: tuple[str, ...] = ()) -> timedelta:
    """A duration that must not be zero: the engine's rule, named for ``field``."""
    try:
        # Durations are never negative: their parser refuses that.
        _native.check_positive_duration(field, to_micros(value))
    except ValueError as problem:
        raise invalid(str(problem), at=at) from None
    return value


class Endpoint(_Section):
    address: EndpointAddress
    weight: Weight = default("endpoint.weight")
    """Relative share of requests; 0 keeps the endpoint configured but never picks it."""


# Read in bulk and held as columns: see `endpoints`.
_READ_ENDPOINTS = PlainValidator(endpoints_reader(Endpoint), json_schema_input_type=list[Endpoint])
_DUMP_ENDPOINTS = PlainSerializer(dump_endpoints)


class ClusterTls(_Section):
    """mesh: mutual TLS with sidecars presenting one of `identities` (needs `identity`);
    tls: ordinary server-authenticated TLS (`sni`, `ca`); disable: plain text."""

    mode: Literal["disable", "mesh", "tls"] = "disable"
    identities: list[str] = _empty(list)
    """mesh: the SPIFFE IDs the endpoints may present; at least one."""
    sni: Host | None = None
    """tls: the server name to send and verify; default: the endpoint's host name."""
    ca: FilePath | None = None
    """tls: a PEM file of CA certificates to trust instead of the system's."""

    @model_validator(mode="after")
    def _fields_of_the_mode(self) -> ClusterTls:
        if self.mode == "mesh" and not self.identities:
            raise invalid("mode mesh needs identities: the SPIFFE IDs the endpoints may present", at=("identities",))
        if self.mode != "mesh" and self.identities:
            raise invalid(f"identities apply to mode mesh only; mode is {self.mode}", at=("identities",))
        for key in ("sni", "ca"):
            if self.mode != "tls" and getattr(self, key) is not None:
                raise invalid(f"{key} applies to mode tls only; mode is {self.mode}", at=(key,))
        return self


_PLAIN_TEXT = ClusterTls()


class Discovery(_Section):
    """Where the cluster's endpoints come from instead of `endpoints`, followed while the proxy
    runs: a watched file (type file) or DNS records re-resolved as their TTL runs out (type dns)."""

    type: Literal["file", "dns"]
    path: FilePath | None = None
    """file: a YAML or JSON list of {address, weight}, relative to the config file's folder."""
    name: DnsName | None = None
    """dns: the name to resolve, e.g. orders.mesh.local, or _http._tcp.orders.mesh.local for SRV."""
    record: Literal["A", "AAAA", "SRV"] = "A"
    """dns: A or AAAA (every address, at `port`) or SRV (each target's addresses, ports and weights)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """dns, records A and AAAA: the endpoints' port."""
    resolver: ResolverAddress | None = None
    """dns: IP:PORT of the DNS server to ask; default: the system's (/etc/resolv.conf)."""
    min_ttl: Duration = default_duration("discovery.min_ttl")
    """dns: the shortest wait before resolving again, whatever the records' TTL."""
    max_ttl: Duration = default_duration("discovery.max_ttl")
    """dns: the longest wait before resolving again, whatever the records' TTL."""

    @model_validator(mode="before")
    @classmethod
    def _keys_of_the_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") in _DISCOVERY_KEYS:
            for key in data:
                if key != "type" and key not in _DISCOVERY_KEYS[data["type"]] and key in cls.model_fields:
                    other = "dns" if data["type"] == "file" else "file"
                    raise invalid(f"{key} applies to type {other} only; type is {data['type']}", at=(key,))
        return data

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> Discovery:
        if self.type == "file" and self.path is None:
            raise invalid("type file needs path: the file listing the endpoints", at=("path",))
        if self.type != "dns":
            return self
        if self.name is None:
            raise invalid("type dns needs name: the DNS name to resolve", at=("name",))
        if self.record == "SRV" and self.port is not None:
            raise invalid("SRV records give each endpoint's port; remove port", at=("port",))
        if self.record != "SRV" and self.port is None:
            raise invalid(f"record {self.record} needs port: the endpoints' port, e.g. 8080", at=("port",))
        _positive("min_ttl", self.min_ttl, at=("min_ttl",))
        if self.max_ttl < self.min_ttl:
            raise invalid("max_ttl must not be less than min_ttl", at=("max_ttl",))
        return self

    @model_serializer(mode="wrap")
    def _only_the_types_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A file source's document carries no DNS defaults, and the other way round.
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if k == "type" or k in _DISCOVERY_KEYS[self.type]}


_DISCOVERY_KEYS = {"file": ("path",), "dns": ("name", "record", "port", "resolver", "min_ttl", "max_ttl")}


Lb = Literal["round_robin", "random", "least_request", "p2c_ewma", "ring_hash", "maglev"]
"""The balancers; the control plane's TrafficPolicy takes the same."""
HASHING_LBS = ("ring_hash", "maglev")


class Cluster(_Section):
    name: Name
    lb: Lb = default("cluster.lb")
    """p2c_ewma prefers endpoints that answer fast and are not busy; ring_hash and maglev keep
    requests with one key (a route's hash_policy) on one endpoint."""
    protocol: Literal["http1", "http2", "tcp"] = "http1"
    """tcp: opaque bytes, one upstream connection per downstream one, for tcp listeners and
    tcp_fallback (docs/protocols-tcp.md)."""
    connect_timeout: Duration = default_duration("cluster.connect_timeout")
    idle_timeout: Duration = default_duration("cluster.idle_timeout")
    """An upstream connection unused for this long is closed; an HTTP/2 one takes no new
    request and closes once its streams end (Envoy's common_http_protocol_options.idle_timeout)."""
    tls: ClusterTls = Field(default_factory=lambda: _PLAIN_TEXT)
    endpoints: Annotated[Sequence[Endpoint], _READ_ENDPOINTS, _DUMP_ENDPOINTS] = _empty(list)
    discovery: Discovery | None = None
    """Where the endpoints come from when not listed in `endpoints`."""
    health_check: HealthCheck | None = None
    """Active checks of the endpoints; unhealthy ones leave the balancer's choice (docs/resilience-health.md)."""
    outlier_detection: OutlierDetection | None = None
    """Passive ejection of endpoints whose answers fail (docs/resilience-health.md)."""
    circuit_breakers: CircuitBreakers | None = None
    """Limits on connections, pending requests, requests and retries; default: none."""
    original_destination: bool = False
    """Send each request where its connection was going before `meshproxy capture` redirected
    it (passthrough, from a listener with `original_destination: true`), instead of to
    endpoints: no endpoints, discovery, health_check or tls. With protocol tcp, each
    connection's bytes go there (a capture listener's tcp_fallback)."""

    @field_validator("connect_timeout", "idle_timeout")
    @classmethod
    def _positive(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        return _positive(info.field_name or "", value)

    @model_validator(mode="after")
    def _grpc_checks_over_http2(self) -> Cluster:
        if self.health_check is not None and self.health_check.grpc is not None and self.protocol != "http2":
            raise invalid("a grpc health check needs protocol http2", at=("health_check", "grpc"))
        return self

    @model_validator(mode="after")
    def _passthrough_alone(self) -> Cluster:
        check_passthrough(self)
        return self

    @model_validator(mode="after")
    def _endpoints_from_one_place_each_once(self) -> Cluster:
        if self.discovery is not None and len(self.endpoints) > 0:
            raise invalid(
                "a cluster's endpoints come either from endpoints or from discovery, not both; remove one",
                at=("discovery",),
            )
        if isinstance(self.endpoints, Endpoints) and self.endpoints.unique:
            return self  # the bulk reader found no address twice
        first: dict[tuple[str, int], int] = {}
        for i, endpoint in enumerate(self.endpoints):
            key = parse_endpoint_address(endpoint.address)
            if key in first:
                raise invalid(
                    f"duplicate endpoint {show(endpoint.address)}; already listed as endpoints[{first[key]}]",
                    at=("endpoints", i, "address"),
                )
            first[key] = i
        return self

    def engine_json(self) -> str:
        """This cluster as the engine document writes it."""
        return _with_key(self.model_dump_json(exclude={"endpoints"}), "endpoints", self._endpoints().engine_json())

    def _endpoints(self) -> Endpoints[Endpoint]:
        # A Cluster made by model_construct or model_copy(update=...) may hold a plain list.
        if isinstance(self.endpoints, Endpoints):
            return self.endpoints
        return endpoints_reader(Endpoint)(list(self.endpoints))
