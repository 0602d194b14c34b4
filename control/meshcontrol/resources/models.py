"""The resource documents as pydantic models, built from the sidecar's own field types and
rules (route matches, authorization rules, durations), so a match or a rule means and is
checked the same in a sidecar file and in ``mesh.yaml``.

Each model's :meth:`stored` is the form the store keeps and the xDS side reads: plain JSON
data, every default filled in, durations in integer units (``timeout_ms``,
``cert_lifetime_s``), service references fully qualified (``payments.shop``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from meshproxy.config.duration import Duration, to_millis
from meshproxy.config.fields import Name, UrlPath
from meshproxy.config.messages import invalid, show
from meshproxy.config.hash_policy import HashPolicy
from meshproxy.config.model import AuthzPolicy, AuthzRule, HeaderMatches, Methods, RouteMatch, Weight
from meshproxy.config.retry import RetryPolicy
from meshproxy.config.defaults import default
from meshproxy.config.route_rules import Authority, DirectResponse, Fault, Percent, RateLimit, Redirect, RegexRewrite
from meshproxy.config.timeouts import TimeoutCovers, check_timeout_covers
from meshproxy.config.tunnel import Port
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from .base import Document as _Document
from .base import Resource as Resource
from .names import Label, ServiceRef, TrustDomain, split_ref
from .tcp_ports import MAX_PORT_OFFSET
from .traffic_policy import TrafficPolicy as TrafficPolicy
from .traffic_policy import in_millis

_Refs = Annotated[list[ServiceRef], Field(min_length=1)] | None


def _each_once(values: list[str] | None, field: str) -> list[str] | None:
    seen: dict[str, int] = {}
    for i, value in enumerate(values or []):
        if value in seen:
            raise invalid(f"service {show(value)} is listed twice (as {field}[{seen[value]}] too)", at=(i,))
        seen[value] = i
    return values


def _qualified(refs: list[str] | None, namespace: str) -> list[str] | None:
    if refs is None:
        return None
    return [".".join(split_ref(ref, namespace)) for ref in refs]


def _sidecar_rule(model: type[BaseModel], name: str) -> Callable[[Any], Any]:
    """A model validator of the sidecar's config, as the plain function it wraps (pydantic
    keeps the function on the class once the class is built), to be a validator here too."""
    rule: Callable[[Any], Any] = model.__dict__[name]
    return rule


# === Service ===


class Service(_Document):
    """A service of the mesh: its instances register under it, and it is what others call."""

    kind: Literal["Service"]
    name: Label
    namespace: Label = "default"
    protocol: Literal["http1", "http2", "grpc", "tcp"] = "http1"
    """What the app speaks behind its sidecar: grpc is HTTP/2 (h2c) to the app, and tells the
    sidecars and Envoy to honour the calls' grpc-timeout. tcp: opaque bytes (a database, Redis):
    callers reach it on a port of their sidecar's outbound address (`port`, or `port_offset`),
    over mutual TLS, authorized by identity (docs/protocols-tcp.md)."""
    calls: list[ServiceRef] | None = None
    """The services this one calls (its sidecar gets routes and clusters for these only);
    absent: every service of its namespace."""
    port: Port | None = None
    """protocol tcp: the port callers connect to on their sidecar's outbound address (its IP),
    as a Kubernetes Service's port (e.g. 6379); one per service in the mesh. Absent: `port_offset`."""
    port_offset: Annotated[int, Field(ge=1, le=MAX_PORT_OFFSET)] | None = None
    """protocol tcp without `port`: callers connect to their sidecar's outbound port plus this.
    Absent: the control plane assigns the lowest one no other TCP service holds when the
    Service is first applied, and keeps it (`meshctl get services` shows it)."""

    @field_validator("calls")
    @classmethod
    def _calls_once(cls, calls: list[str] | None) -> list[str] | None:
        return _each_once(calls, "calls")

    @model_validator(mode="after")
    def _tcp_ports(self) -> Service:
        given = [key for key in ("port", "port_offset") if getattr(self, key) is not None]
        if given and self.protocol != "tcp":
            raise invalid(f"applies to protocol tcp only; this service's protocol is {self.protocol} (its callers "
                          "reach it by name on their outbound listener)", at=(given[0],))
        if len(given) == 2:
            raise invalid("give port or port_offset, not both", at=("port_offset",))
        return self

    def stored(self) -> Resource:
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace, "protocol": self.protocol,
                "calls": _qualified(self.calls, self.namespace), "port": self.port, "port_offset": self.port_offset}


# === Route ===


class Match(_Document):
    """A sidecar route's match without `host`: the service a Route belongs to is the host."""

    path: UrlPath | None = None
    path_prefix: UrlPath | None = None
    path_regex: str | None = None
    headers: HeaderMatches = Field(default_factory=dict)
    method: Methods = None

    # The sidecar's own rule, so the two never drift apart.
    _one_path_condition = model_validator(mode="after")(_sidecar_rule(RouteMatch, "_one_path_condition"))


class Destination(_Document):
    version: Label
    weight: Weight = 1
    """Relative share of the rule's requests."""


class Mirror(_Document):
    """A sidecar route's mirror, to a version of the service: a share of the rule's calls is
    copied to it, fire and forget."""

    version: Label
    percent: Percent = default("mirror.percent")
    """The share of the rule's calls copied (0 to 100)."""


class RouteRule(_Document):
    name: Name | None = None
    match_: Match = Field(default_factory=Match, alias="match")
    """Every condition given must hold; absent: every request."""
    to: Annotated[list[Destination], Field(min_length=1)] | None = None
    """The versions the rule's calls go to; or, instead, `redirect` or `direct_response`."""
    fault: Fault | None = None
    """As a sidecar route's fault: the caller's sidecar delays or aborts a share of the rule's
    calls (chaos tests, test channels). A delay and an abort name the same header, or none."""
    rate_limit: RateLimit | None = None
    """As a sidecar route's rate_limit: each caller's sidecar limits its own calls of the rule."""
    regex_rewrite: RegexRewrite | None = None
    """As a sidecar route's regex_rewrite: the path the called instance gets."""
    host_rewrite: Authority | None = None
    """As a sidecar route's host_rewrite: the Host (:authority) the called instance gets."""
    mirror: Mirror | None = None
    """As a sidecar route's mirror, to a version of this service (a dark launch): its answers are
    dropped, its slowness or failure never reaches the caller; Host is suffixed -shadow."""
    redirect: Redirect | None = None
    """As a sidecar route's redirect: the caller's sidecar answers with it."""
    direct_response: DirectResponse | None = None
    """As a sidecar route's direct_response: the caller's sidecar answers with it."""
    timeout: Duration = timedelta(seconds=15)
    """As a sidecar route's timeout: until the response's headers, or its last byte with
    timeout_covers: response; 0 means none. An Envoy client's covers the whole response."""
    timeout_covers: TimeoutCovers = default("route.timeout_covers")
    """As a sidecar route's timeout_covers (docs/resilience-timeouts.md)."""
    idle_timeout: Duration = timedelta(0)
    """As a sidecar route's idle_timeout (Envoy's route idle_timeout): a call that moves no byte
    either way for this long ends; 0 means never."""
    hash_policy: list[HashPolicy] = Field(default_factory=list)
    """As a sidecar route's hash_policy: what the service's TrafficPolicy (lb ring_hash or
    maglev) keys this rule's calls by."""
    retry: RetryPolicy | None = None
    """As a sidecar route's retry: which failed tries the caller's sidecar tries again, within
    the retry budget (one per Route: Envoy keeps it on the clusters the rules send to)."""

    @model_validator(mode="after")
    def _weights(self) -> RouteRule:
        answers = [key for key in ("to", "redirect", "direct_response") if getattr(self, key) is not None]
        if len(answers) != 1:
            raise invalid(f"a rule needs exactly one of to, redirect, direct_response; found "
                          f"{' and '.join(answers) or 'none'}")
        if self.to is None:
            # The caller's sidecar answers itself: no call is made for these to apply to.
            for key in ("timeout", "timeout_covers", "idle_timeout", "hash_policy", "retry", "mirror", "fault",
                        "rate_limit", "regex_rewrite", "host_rewrite"):
                if key in self.model_fields_set:
                    raise invalid(f"applies to a rule with to only; this one answers with {answers[0]}", at=(key,))
            return self
        check_timeout_covers(self.timeout_covers, self.timeout)
        if self.fault is not None and self.fault.delay is not None and self.fault.abort is not None \
                and self.fault.delay.header != self.fault.abort.header:
            raise invalid("the delay and the abort must name the same header, or neither: an Envoy client "
                          "conditions a rule's whole fault on its header", at=("fault", "abort", "header"))
        first: dict[str, int] = {}
        for i, destination in enumerate(self.to):
            if destination.version in first:
                raise invalid(
                    f"version {show(destination.version)} is listed twice (as to[{first[destination.version]}] too)",
                    at=("to", i, "version"),
                )
            first[destination.version] = i
        if sum(d.weight for d in self.to) == 0:
            raise invalid("weights sum to 0; at least one weight must be greater than 0", at=("to",))
        return self

    def stored(self) -> Resource:
        return {
            "name": self.name,
            "match": self.match_.model_dump(mode="json"),
            "to": [d.model_dump(mode="json") for d in self.to or ()],
            "redirect": self.redirect.model_dump(mode="json") if self.redirect else None,
            "direct_response": self.direct_response.model_dump(mode="json") if self.direct_response else None,
            "timeout_ms": to_millis(self.timeout) if self.to else None,
            "timeout_covers": self.timeout_covers if self.to else None,
            "idle_timeout_ms": to_millis(self.idle_timeout) if self.to else None,
            "hash_policy": [h.model_dump(mode="json", exclude_none=True) for h in self.hash_policy],
            "retry": in_millis(self.retry),
            "mirror": self.mirror.model_dump(mode="json") if self.mirror else None,
            "fault": in_millis(self.fault),
            "rate_limit": self.rate_limit.model_dump(mode="json") if self.rate_limit else None,
            "regex_rewrite": self.regex_rewrite.model_dump(mode="json") if self.regex_rewrite else None,
            "host_rewrite": self.host_rewrite,
        }


class Route(_Document):
    """How calls to one service are routed among its versions: first matching rule wins."""

    kind: Literal["Route"]
    service: Label
    namespace: Label = "default"
    rules: Annotated[list[RouteRule], Field(min_length=1)]

    # The sidecar's rule for a policy's rule names: one rule for every list of named rules.
    _rule_names_unique = model_validator(mode="after")(_sidecar_rule(AuthzPolicy, "_rule_names_unique"))

    @model_validator(mode="after")
    def _one_retry_budget(self) -> Route:
        # Envoy keeps a retry budget per cluster, not per route, and the rules' clusters are the
        # service's versions, which rules share: so a Route has one budget, whichever rules retry.
        budgets = [(i, rule.retry.budget) for i, rule in enumerate(self.rules) if rule.retry is not None]
        for i, budget in budgets[1:]:
            if budget != budgets[0][1]:
                raise invalid(f"differs from rules[{budgets[0][0]}].retry.budget; a Route's rules share one retry "
                              "budget (an Envoy client keeps it on the service's clusters)",
                              at=("rules", i, "retry", "budget"))
        return self

    def stored(self) -> Resource:
        return {"kind": self.kind, "service": self.service, "namespace": self.namespace,
                "rules": [rule.stored() for rule in self.rules]}


# === AccessPolicy ===


class PolicyRule(AuthzRule):
    """A sidecar authorization rule, plus peers named as services of the trust domain."""

    services: _Refs = None
    """Services whose identity the peer must have: name (this namespace) or name.namespace."""
    not_services: _Refs = None
    """Services whose identity the peer must not have, as in `services`."""

    @field_validator("services", "not_services")
    @classmethod
    def _services_once(cls, refs: list[str] | None, info: ValidationInfo) -> list[str] | None:
        return _each_once(refs, info.field_name or "services")

    def stored(self, namespace: str) -> Resource:
        dumped: Resource = self.model_dump(mode="json")
        dumped["services"] = _qualified(self.services, namespace)
        dumped["not_services"] = _qualified(self.not_services, namespace)
        return dumped

    def sidecar_rule(self) -> Resource:
        """The rule as a sidecar config writes it (services left out): for the engine's check."""
        return self.model_dump(mode="json", exclude={"services", "not_services"})


class AccessPolicy(_Document):
    """Who may call one service: deny rules win; once an allow rule exists, a request matching
    none is denied."""

    kind: Literal["AccessPolicy"]
    service: Label
    namespace: Label = "default"
    dry_run: bool = False
    """Count and log what this policy would deny, without denying it."""
    rules: Annotated[list[PolicyRule], Field(min_length=1)]

    _rule_names_unique = model_validator(mode="after")(_sidecar_rule(AuthzPolicy, "_rule_names_unique"))

    def stored(self) -> Resource:
        return {"kind": self.kind, "service": self.service, "namespace": self.namespace, "dry_run": self.dry_run,
                "rules": [rule.stored(self.namespace) for rule in self.rules]}


# === Mesh ===


class Mesh(_Document):
    """Settings of the whole mesh; absent, every default holds."""

    kind: Literal["Mesh"]
    trust_domain: TrustDomain | None = None
    """Every SPIFFE ID of the mesh lies in it: spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE.
    Absent: the one `meshctl serve --trust-domain` names (mesh.local)."""
    mtls: Literal["strict", "permissive"] = "strict"
    """strict: sidecars accept mutual TLS only; permissive: plain text too, for gradual adoption."""
    cert_lifetime: Duration = timedelta(hours=24)
    """How long a sidecar certificate is valid; sidecars renew at about half of it."""

    @field_validator("cert_lifetime")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise invalid("must be at least 1s, e.g. 24h")
        return value

    def stored(self) -> Resource:
        return {"kind": self.kind, "trust_domain": self.trust_domain, "mtls": self.mtls,
                "cert_lifetime_s": round(self.cert_lifetime.total_seconds())}


Document = Service | Route | AccessPolicy | TrafficPolicy | Mesh
KINDS: dict[str, type[Service] | type[Route] | type[AccessPolicy] | type[TrafficPolicy] | type[Mesh]] = {
    "Service": Service, "Route": Route, "AccessPolicy": AccessPolicy, "TrafficPolicy": TrafficPolicy, "Mesh": Mesh,
}
MESH_DEFAULTS: Resource = Mesh(kind="Mesh").stored()
"""The Mesh in force when none was applied."""
