"""The config schema: one pydantic model per config section, field names exactly as written
in YAML and as read by the engine (one name per concept).

Rules that involve one section only (exactly one of cluster/split, route names unique within
a listener) live here as model validators, so every Config instance satisfies them. Rules that
reach across sections (a route naming a cluster) live in :mod:`.checks`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from operator import attrgetter
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

from ..engine_document import EngineDocument, TracingExport
from ..addresses import parse_endpoint_address
from .duration import Duration, FineDuration, to_micros
from .endpoints import Endpoints, dump_endpoints, endpoints_reader
from .fields import (
    ACCESS_LOG_FIELDS,
    AccessLogField,
    DnsName,
    EndpointAddress,
    FilePath,
    HeaderName,
    HeaderValue,
    Host,
    ListenAddress,
    Method,
    Name,
    OtlpEndpoint,
    Ratio,
    ResolverAddress,
    UrlPath,
)
from .kept import KeptModels
from .messages import describe, duplicate_names, invalid, show

Weight = Annotated[int, Field(ge=0, le=1_000_000)]
# The access log path that means standard output (the engine's access_log::sink::STDOUT).
STDOUT = "stdout"


class _Section(BaseModel):
    # strict: YAML already gives typed scalars, so "5" for an int or `yes` for a number is a
    # mistake worth reporting, not something to coerce. frozen: a Config is an immutable
    # snapshot handed to the engine; derive a new one with model_copy(update=...).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        # The docstrings under fields are the descriptions of the JSON Schema, read by
        # schema.py when one is asked for, not here for every model built (docstrings.py).
    )


def _no_case_duplicates(value: Any) -> Any:
    """Header names are case-insensitive: `X-A` and `x-a` in one mapping would silently merge
    after lowercasing, so reject them before that happens."""
    if isinstance(value, dict):
        seen: dict[str, str] = {}
        for key in value:
            if isinstance(key, str):
                if key.lower() in seen:
                    raise invalid(
                        f"header {show(key)} is listed twice (as {show(seen[key.lower()])} too); "
                        "header names are case-insensitive",
                        at=(key,),
                    )
                seen[key.lower()] = key
    return value


def _header_matches(value: Any) -> Any:
    """The short form `x-channel: beta` means `x-channel: {exact: beta}`; normalize to the
    object form so the engine sees one shape."""
    value = _no_case_duplicates(value)
    if not isinstance(value, dict):
        return value
    for key, match in value.items():
        if not isinstance(match, (str, dict)):
            # Said here because the field takes two shapes: pydantic would name only one.
            raise invalid(
                f"expected a value to match exactly, or a mapping with one of exact, present, "
                f"regex; got {describe(match)}",
                at=(key,),
            )
    return {k: {"exact": v} if isinstance(v, str) else v for k, v in value.items()}


def _by_key(value: dict[str, Any]) -> dict[str, Any]:
    """Mappings are kept sorted by key, so that the engine document of a config is one text
    whatever order its file listed them in."""
    return dict(sorted(value.items()))


def _empty(factory: Callable[[], Any]) -> Any:
    """An empty list or dict default. A literal `[]` or `{}` would be deep-copied for every
    instance (pydantic cannot tell it is never mutated); a factory is one cheap call. The schema
    still shows the default."""
    # Wrapped: pydantic reads the signature of every default factory, and that of a builtin
    # (list, dict) is parsed from its text signature with `tokenize`, whose import and regex
    # cost the `validate` child a few milliseconds.
    return Field(default_factory=lambda: factory(), json_schema_extra={"default": factory()})


def _method_list(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    raise invalid(f"expected an HTTP method or a list of methods, got {describe(value)}")


MAX_BUSY_POLL = timedelta(milliseconds=10)
"""Beyond this a worker would spin through pauses that no event fills (the engine's limit too)."""


def _busy_poll_window(value: timedelta) -> timedelta:
    if value > MAX_BUSY_POLL:
        raise invalid(f"{to_micros(value)}us is too long; at most 10000us (10ms), or 0 to sleep at once")
    return value


# === Top-level sections ===


class Admin(_Section):
    """The admin HTTP server (/ready, /metrics, ...); absent from the config means none."""

    address: ListenAddress = "127.0.0.1:15000"


class Limits(_Section):
    max_header_bytes: Annotated[int, Field(ge=1024, le=1_048_576)] = 65536
    """Most header bytes accepted on one request: an HTTP/1.1 head or an HTTP/2 header list."""
    max_concurrent_streams: Annotated[int, Field(ge=1, le=65535)] = 1024
    """Per downstream HTTP/2 connection."""


class AccessLog(_Section):
    """One JSON line per request, for every listener (each line names its listener and
    direction). Written by a background thread: when it falls behind, lines are dropped and
    counted (stats: access_log.dropped), and requests never wait."""

    path: FilePath = STDOUT
    """'stdout', or a file appended to (created if missing; relative to the config file's folder)."""
    fields: Annotated[list[AccessLogField], Field(min_length=1)] = Field(
        default_factory=lambda: list(ACCESS_LOG_FIELDS), json_schema_extra={"default": list(ACCESS_LOG_FIELDS)}
    )
    """The fields each line carries, written in the order of the field list in the README."""
    sample: Ratio = 1.0
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

    otlp_endpoint: OtlpEndpoint = "http://127.0.0.1:4318"
    """The OTLP/HTTP collector: spans are posted to its /v1/traces (a URL with a path is used as is)."""
    sample: Ratio = 1.0
    """The share of new traces recorded; a sampling decision that comes with the request wins."""
    service_name: Annotated[str, Field(min_length=1)] = "meshproxy"
    """The service.name of the exported spans: usually the service this sidecar runs beside."""


# === Routes ===


class HeaderMatch(_Section):
    """Exactly one of: `exact` value, `present` (true: header must be there, false: absent),
    `regex` (whole value; Rust regex syntax, checked by the engine)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    exact: str | None = None
    present: bool | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HeaderMatch:
        given = [k for k in ("exact", "present", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise invalid(f"a header match needs exactly one of exact, present, regex; found {found}")
        return self

    @model_serializer(mode="wrap")
    def _only_the_one(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dump as `{exact: beta}`, never with null siblings, so the document is unambiguous.
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if v is not None}


# Header conditions and method lists, as route matches and authorization rules both write them.
HeaderMatches = Annotated[
    dict[HeaderName, HeaderMatch],
    BeforeValidator(_header_matches, json_schema_input_type=dict[str, str | HeaderMatch]),
    AfterValidator(_by_key),
]
Methods = Annotated[
    list[Method] | None,
    Field(min_length=1),
    BeforeValidator(_method_list, json_schema_input_type=str | list[str] | None),
]


class RouteMatch(_Section):
    """What a request must look like for its route to apply; every condition given must hold.
    The empty match matches every request."""

    host: Host | None = None
    path: UrlPath | None = None
    path_prefix: UrlPath | None = None
    path_regex: str | None = None
    headers: HeaderMatches = _empty(dict)
    method: Methods = None

    @model_validator(mode="after")
    def _one_path_condition(self) -> RouteMatch:
        if (self.path is None) + (self.path_prefix is None) + (self.path_regex is None) < 2:
            given = [k for k in ("path", "path_prefix", "path_regex") if getattr(self, k) is not None]
            raise invalid(f"at most one of path, path_prefix, path_regex may be set; found {', '.join(given)}")
        return self


# Shared by every route that leaves them out: frozen, so one instance serves all, where a
# factory would build and validate a new one for each of ten thousand routes.
_ANY_REQUEST = RouteMatch()


class WeightedCluster(_Section):
    cluster: str
    weight: Weight


class HeaderEdits(_Section):
    add: Annotated[dict[HeaderName, HeaderValue], BeforeValidator(_no_case_duplicates), AfterValidator(_by_key)] = (
        _empty(dict)
    )
    remove: list[HeaderName] = _empty(list)


_NO_EDITS = HeaderEdits()


class Route(_Section):
    """Sends matching requests to one cluster, or splits them by weight across several."""

    name: Annotated[str, Field(min_length=1)] | None = None
    match_: RouteMatch = Field(default_factory=lambda: _ANY_REQUEST, alias="match")
    cluster: str | None = None
    split: list[WeightedCluster] | None = None
    prefix_rewrite: UrlPath | None = None
    request_headers: HeaderEdits = Field(default_factory=lambda: _NO_EDITS)
    response_headers: HeaderEdits = Field(default_factory=lambda: _NO_EDITS)
    timeout: Duration = timedelta(seconds=15)
    """Whole request, first byte in to last byte out; 0 means no timeout."""

    # One validator for the route's rules rather than one each: it runs for every route.
    @model_validator(mode="after")
    def _one_destination_and_a_prefix_to_rewrite(self) -> Route:
        if self.cluster is not None and self.split is not None:
            raise invalid("a route needs exactly one of cluster or split, not both")
        if self.cluster is None and self.split is None:
            raise invalid("a route needs exactly one of cluster or split; neither is set")
        if self.split is not None and sum(w.weight for w in self.split) == 0:
            raise invalid("split weights sum to 0; at least one weight must be greater than 0", at=("split",))
        if self.prefix_rewrite is not None and self.match_.path_prefix is None:
            raise invalid(
                "prefix_rewrite replaces the matched match.path_prefix, so it needs match.path_prefix",
                at=("prefix_rewrite",),
            )
        return self


# A route given exactly as in the config validated last is the route that config validated
# (see kept.py).
_KEPT_ROUTES = KeptModels(Route)


def _kept_routes(value: Any, handler: ValidatorFunctionWrapHandler) -> list[Route]:
    return _KEPT_ROUTES.validate_list(value, handler)


# === Identity and authorization ===


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


class AuthzRule(_Section):
    """Matches a request when every condition given holds; within a list, any entry may match.
    A `not_` condition holds when no entry of its list matches (for `not_headers`: when none of
    the header matches holds). A plain-text peer has no identity: it never satisfies
    `not_identities` or `not_namespaces` in an allow rule (a missing identity grants nothing),
    and always satisfies them in a deny rule (a missing identity is not excused). A rule with no
    conditions matches every request."""

    name: Name
    action: Literal["allow", "deny"]
    identities: Annotated[list[str], Field(min_length=1)] | None = None
    """Peer SPIFFE IDs: exact, a prefix ending in '*', or '*' for any authenticated peer."""
    namespaces: Annotated[list[str], Field(min_length=1)] | None = None
    """The ns segment of the peer's SPIFFE ID (spiffe://domain/ns/NAMESPACE/sa/...)."""
    paths: Annotated[list[str], Field(min_length=1)] | None = None
    """Exact paths, or prefixes ending in '*' (/orders/*); the query is not part of the path."""
    methods: Methods = None
    headers: HeaderMatches = _empty(dict)
    not_identities: Annotated[list[str], Field(min_length=1)] | None = None
    """Peer SPIFFE IDs the peer must not have, as in `identities`."""
    not_namespaces: Annotated[list[str], Field(min_length=1)] | None = None
    """Namespaces the peer must not be in, as in `namespaces`."""
    not_paths: Annotated[list[str], Field(min_length=1)] | None = None
    """Paths the request must not have, as in `paths`."""
    not_methods: Methods = None
    """Methods the request must not use."""
    not_headers: HeaderMatches = _empty(dict)
    """Header matches of which none may hold, as in `headers` (a missing header satisfies an
    `exact` or `regex` negation)."""


class AuthzPolicy(_Section):
    """Deny rules win; once any enforced allow rule exists on the listener, a request matching
    none is denied (403, x-meshproxy-error: denied)."""

    name: Name
    dry_run: bool = False
    """Count and log what this policy would deny, without denying it."""
    rules: Annotated[list[AuthzRule], Field(min_length=1)]

    @model_validator(mode="after")
    def _rule_names_unique(self) -> AuthzPolicy:
        # Also the control plane's rule for its Route and AccessPolicy rules.
        for at, message in duplicate_names("rules", "rule", (rule.name for rule in self.rules)):
            raise invalid(message, at=at)
        return self


class Listener(_Section):
    name: Name
    address: ListenAddress
    protocol: Literal["auto", "http1", "http2"] = "auto"
    direction: Literal["outbound", "inbound"] = "outbound"
    """outbound: the local app's requests to the mesh; inbound: the mesh's requests to the local
    app. Labels metrics, and on SIGTERM inbound listeners stop accepting first while outbound
    ones keep serving the app until the drain ends."""
    tls: Literal["disable", "strict", "permissive"] = "disable"
    """strict: mutual TLS only; permissive: mutual TLS and plain text on one port, told apart by
    the first bytes; disable: plain text only. strict and permissive need `identity`."""
    authorization: list[AuthzPolicy] = _empty(list)
    """Policies for requests arriving here; the peer's identity comes from its mTLS certificate."""
    routes: Annotated[list[Route], WrapValidator(_kept_routes)] = _empty(list)
    """Tried in order; the first match wins."""

    @model_validator(mode="after")
    def _route_names_unique(self) -> Listener:
        # Names are None or not empty; read in C, without a Python step per route.
        names = list(filter(None, map(attrgetter("name"), self.routes)))
        if len(set(names)) == len(names):
            return self  # the usual case, checked without a step per route
        for at, message in duplicate_names("routes", "route", (route.name for route in self.routes)):
            raise invalid(message, at=at)
        return self

    def engine_json(self) -> str:
        """This listener as the engine document writes it."""
        return _with_key(self.model_dump_json(exclude={"routes"}), "routes", _KEPT_ROUTES.json_list(self.routes))


# === Clusters ===


class Endpoint(_Section):
    address: EndpointAddress
    weight: Weight = 1
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
    min_ttl: Duration = timedelta(seconds=1)
    """dns: the shortest wait before resolving again, whatever the records' TTL."""
    max_ttl: Duration = timedelta(minutes=5)
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
        if self.min_ttl <= timedelta(0):
            raise invalid("min_ttl must be greater than 0, e.g. 1s", at=("min_ttl",))
        if self.max_ttl < self.min_ttl:
            raise invalid("max_ttl must not be less than min_ttl", at=("max_ttl",))
        return self

    @model_serializer(mode="wrap")
    def _only_the_types_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A file source's document carries no DNS defaults, and the other way round.
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if k == "type" or k in _DISCOVERY_KEYS[self.type]}


_DISCOVERY_KEYS = {"file": ("path",), "dns": ("name", "record", "port", "resolver", "min_ttl", "max_ttl")}


class Cluster(_Section):
    name: Name
    lb: Literal["round_robin", "random", "least_request", "p2c_ewma"] = "p2c_ewma"
    protocol: Literal["http1", "http2"] = "http1"
    connect_timeout: Duration = timedelta(seconds=1)
    tls: ClusterTls = Field(default_factory=lambda: _PLAIN_TEXT)
    endpoints: Annotated[Sequence[Endpoint], _READ_ENDPOINTS, _DUMP_ENDPOINTS] = _empty(list)
    discovery: Discovery | None = None
    """Where the endpoints come from when not listed in `endpoints`."""

    @field_validator("connect_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise invalid("connect_timeout must be greater than 0, e.g. 1s")
        return value

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


def _with_key(document: str, key: str, value: str) -> str:
    """The text of a JSON object with one more key, whose value is JSON text already."""
    return f'{document[:-1]},"{key}":{value}}}' if document != "{}" else f'{{"{key}":{value}}}'


# === The document ===


class Config(_Section):
    """One complete, validated sidecar config: the snapshot the engine runs on."""

    workers: Annotated[int, Field(ge=1)] | None = None
    """Engine worker threads; null means one per core."""
    busy_poll: Annotated[FineDuration, AfterValidator(_busy_poll_window)] = timedelta(0)
    """How long a worker keeps polling its sockets after its last event before it sleeps (e.g.
    300us): less latency per hop on virtual machines, for the CPU it spins with. 0: off."""
    admin: Admin | None = None
    limits: Limits = Field(default_factory=Limits)
    identity: Identity | None = None
    access_log: AccessLog | None = None
    tracing: Tracing | None = None
    listeners: list[Listener] = Field(min_length=1)
    clusters: list[Cluster] = _empty(list)

    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keeping_routes(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        with _KEPT_ROUTES.validation():
            return handler(data)

    @property
    def source(self) -> str | None:
        """Where this config was loaded from: a file path, "<string>" or "<dict>"."""
        return self._source

    def with_files_under(self, folder: str) -> Config:
        """This config with every relative file path it names (identity, cluster CAs, endpoint
        files of discovery, the access log) made absolute under ``folder``: a config file names
        files relative to itself, while the engine reads them from wherever the sidecar runs."""
        def under(path: str) -> str:
            return os.path.normpath(os.path.join(folder, path))

        def cluster_under(cluster: Cluster) -> Cluster:
            update: dict[str, Any] = {}
            if cluster.tls.ca is not None:
                update["tls"] = cluster.tls.model_copy(update={"ca": under(cluster.tls.ca)})
            if cluster.discovery is not None and cluster.discovery.path is not None:
                update["discovery"] = cluster.discovery.model_copy(update={"path": under(cluster.discovery.path)})
            return cluster.model_copy(update=update) if update else cluster

        update: dict[str, Any] = {}
        if self.identity is not None:
            update["identity"] = self.identity.model_copy(
                update={key: under(getattr(self.identity, key)) for key in ("cert", "key", "bundle")}
            )
        if any(cluster.tls.ca is not None or cluster.discovery is not None for cluster in self.clusters):
            update["clusters"] = [cluster_under(cluster) for cluster in self.clusters]
        if self.access_log is not None and self.access_log.path != STDOUT:
            update["access_log"] = self.access_log.model_copy(update={"path": under(self.access_log.path)})
        if not update:
            return self
        copy = self.model_copy(update=update)
        copy._source = self._source
        return copy

    def engine_json(self) -> str:
        """The document the engine deserializes: every default present, durations as
        "NNNms", header matches in object form, methods as lists.

        The text is canonical: keys in schema order and mappings sorted by key (validation
        sorts them), so two configs that mean the same thing give the same string, which is
        how a reload tells "changed" from "rewritten". Written by pydantic's serializer, with
        each cluster's endpoints as the bulk reader wrote them and each route kept from the
        config validated last as it was written then."""
        listeners = ",".join(listener.engine_json() for listener in self.listeners)
        clusters = ",".join(cluster.engine_json() for cluster in self.clusters)
        document = _with_key(self.model_dump_json(exclude={"listeners", "clusters"}), "listeners", f"[{listeners}]")
        return _with_key(document, "clusters", f"[{clusters}]")

    def engine_document(self) -> EngineDocument:
        """The engine document with what a running proxy reads beside it (admin address,
        listener protocols): all a :class:`~meshproxy.Proxy` needs, without the schema."""
        return EngineDocument(
            engine_json=self.engine_json(),
            admin_address=self.admin.address if self.admin is not None else None,
            listener_protocols={listener.name: listener.protocol for listener in self.listeners},
            source=self.source,
            identity_files=(self.identity.cert, self.identity.key, self.identity.bundle) if self.identity else (),
            discovery={
                cluster.name: cluster.discovery.model_dump(mode="json")
                for cluster in self.clusters
                if cluster.discovery is not None
            },
            tracing=TracingExport(self.tracing.otlp_endpoint, self.tracing.service_name) if self.tracing else None,
        )
