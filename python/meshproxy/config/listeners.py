"""Listeners of the config schema, with the authorization policies of the requests arriving
on them.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Literal

from pydantic import Field, WrapValidator, model_validator

from .defaults import default_duration
from .capture import check_capture_routes
from .duration import Duration
from .fields import ListenAddress, Name
from .messages import duplicate_names, invalid
from .route_rules import RateLimit
from .routes import _KEPT_ROUTES, Route, _kept_routes
from .section import HeaderMatches, Methods, _empty, _Section, _with_key


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
    protocol: Literal["auto", "http1", "http2", "tcp"] = "auto"
    """auto: HTTP/1.1 or h2c, told apart by the first bytes (and, with `tcp_fallback`, other
    traffic too); tcp: opaque bytes to the cluster of its one route, `routes: [{cluster: NAME}]`
    (docs/protocols-tcp.md)."""
    direction: Literal["outbound", "inbound"] = "outbound"
    """outbound: the local app's requests to the mesh; inbound: the mesh's requests to the local
    app. Labels metrics, and on SIGTERM inbound listeners stop accepting first while outbound
    ones keep serving the app until the drain ends."""
    tls: Literal["disable", "strict", "permissive"] = "disable"
    """strict: mutual TLS only; permissive: mutual TLS and plain text on one port, told apart by
    the first bytes; disable: plain text only. strict and permissive need `identity`."""
    idle_timeout: Duration = default_duration("listener.idle_timeout")
    """A connection that moves no byte either way for this long is closed (checked four times
    per timeout, so closed within a quarter more); 0 means never. An HTTP/2 connection carrying
    a stream that waits that long without a byte is closed too."""
    authorization: list[AuthzPolicy] = _empty(list)
    """Policies for requests arriving here; the peer's identity comes from its mTLS certificate."""
    rate_limit: RateLimit | None = None
    """Taken by every request of the listener, before routing (a route's own comes after). On
    a tcp listener, and by the connections an auto listener serves as TCP, by every connection
    once authorized: with no token left it is closed at once (error: rate_limited)."""
    original_destination: bool = False
    """Read where each connection was going before `meshproxy capture`'s rules redirected it
    here (SO_ORIGINAL_DST), for routes to match on (`match.original_destination`). Routes to
    tcp clusters are then TCP routes, chosen by that address when the connection is accepted
    (docs/protocols-capture.md)."""
    detect_timeout: Duration = default_duration("listener.detect_timeout")
    """auto listeners with `tcp_fallback`: a client that sends nothing for this long speaks a
    server-first protocol (MySQL, SMTP) and goes to `tcp_fallback`."""
    tcp_fallback: Name | None = None
    """auto listeners: the tcp cluster that connections other than HTTP go to (a client-first
    protocol at once, a silent client after `detect_timeout`, TLS this listener does not
    terminate); without it, such connections are served as HTTP and fail."""
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

    @model_validator(mode="after")
    def _capture_routes(self) -> Listener:
        check_capture_routes(self.original_destination, self.routes)
        return self

    def engine_json(self) -> str:
        """This listener as the engine document writes it."""
        return _with_key(self.model_dump_json(exclude={"routes"}), "routes", _KEPT_ROUTES.json_list(self.routes))
