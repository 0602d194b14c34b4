"""Routes of the config schema: what a request must look like, where it goes, what is edited
on its way. A route given exactly as in the config validated last is kept as it was (see
kept.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidatorFunctionWrapHandler, model_validator

from .capture import OriginalDestinations
from .duration import Duration
from .fields import HeaderName, HeaderValue, Host, UrlPath
from .hash_policy import HashPolicy
from .kept import KeptModels
from .messages import invalid
from .section import HeaderMatches, Methods, Weight, _by_key, _empty, _no_case_duplicates, _Section
from .defaults import default, default_duration
from .retry import RetryPolicy
from .route_rules import Authority, DirectResponse, Fault, Mirror, RateLimit, Redirect, RegexRewrite
from .timeouts import TimeoutCovers, check_timeout_covers
from .tunnel import Port, check_connect_match

# Where a route's requests go: exactly one of these.
_DESTINATIONS = ("cluster", "split", "redirect", "direct_response")


class RouteMatch(_Section):
    """What a request must look like for its route to apply; every condition given must hold.
    The empty match matches every request."""

    host: Host | None = None
    path: UrlPath | None = None
    path_prefix: UrlPath | None = None
    path_regex: str | None = None
    headers: HeaderMatches = _empty(dict)
    method: Methods = None
    original_destination: OriginalDestinations = None
    """Where the connection was going before `meshproxy capture` redirected it: one entry must
    match, IP:PORT (10.0.2.2:8080, [fd00::2]:8080), an IP (any port), a network (10.0.2.0/24),
    a network and a port (10.0.2.0/24:8080) or *:PORT (any address). Only on a listener with
    `original_destination: true`."""
    connect: bool = False
    """Matches CONNECT requests (tunnels of HTTPS_PROXY clients), and only those: a route without
    it never matches one, and a CONNECT no route matches is answered 403."""
    ports: list[Port] | None = None
    """The port of the request's authority (a CONNECT's host:port) is one of these."""

    @model_validator(mode="after")
    def _one_path_condition(self) -> RouteMatch:
        if (self.path is None) + (self.path_prefix is None) + (self.path_regex is None) < 2:
            given = [k for k in ("path", "path_prefix", "path_regex") if getattr(self, k) is not None]
            raise invalid(f"at most one of path, path_prefix, path_regex may be set; found {', '.join(given)}")
        check_connect_match(self)
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
    """Sends matching requests to one cluster, or splits them by weight across several; or
    answers them itself, with a redirect or a direct response."""

    name: Annotated[str, Field(min_length=1)] | None = None
    match_: RouteMatch = Field(default_factory=lambda: _ANY_REQUEST, alias="match")
    cluster: str | None = None
    split: list[WeightedCluster] | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    prefix_rewrite: UrlPath | None = None
    regex_rewrite: RegexRewrite | None = None
    """At most one of prefix_rewrite and regex_rewrite."""
    host_rewrite: Authority | None = None
    """The Host (:authority) sent upstream instead of the request's."""
    rate_limit: RateLimit | None = None
    """Applies after the listener's, if both are set."""
    fault: Fault | None = None
    mirror: Mirror | None = None
    request_headers: HeaderEdits = Field(default_factory=lambda: _NO_EDITS)
    response_headers: HeaderEdits = Field(default_factory=lambda: _NO_EDITS)
    timeout: Duration = default_duration("route.timeout")
    """From sending the request upstream to the response's headers (retries included), or to
    its last byte with timeout_covers: response; 0 means no timeout. Past it before the headers:
    504 (x-meshproxy-error: timeout); after them: the response is cut (reset)."""
    timeout_covers: TimeoutCovers = default("route.timeout_covers")
    """headers: timeout ends at the response's headers (a long download or stream is not cut);
    response: at its last byte, as Envoy's route timeout (docs/resilience-timeouts.md)."""
    idle_timeout: Duration = default_duration("route.idle_timeout")
    """A stream that moves no byte either way for this long ends (checked four times per
    timeout, so within a quarter more): before the response's headers, 504 timeout; after, the
    response is cut (reset) and counted as the cluster's timeout. 0 means never (the default)."""
    hash_policy: list[HashPolicy] = _empty(list)
    """What a cluster with lb ring_hash or maglev keys this route's requests by (affinity):
    requests with one key land on one endpoint. Needed by those clusters, read by no other."""
    retry: RetryPolicy | None = None
    """When failed tries are tried again. Without it: requests without a body are tried again
    after a connect failure (3 tries) or a refused HTTP/2 stream (8 tries), at once."""

    # One validator for the route's rules rather than one each: it runs for every route.
    @model_validator(mode="after")
    def _one_destination_and_a_prefix_to_rewrite(self) -> Route:
        given = [k for k in _DESTINATIONS if getattr(self, k) is not None]
        if len(given) != 1:
            found = f"found {', '.join(given)}" if given else "none is set"
            raise invalid(f"a route needs exactly one of cluster, split, redirect, direct_response; {found}")
        if self.regex_rewrite is not None and self.prefix_rewrite is not None:
            raise invalid("give at most one of prefix_rewrite and regex_rewrite", at=("regex_rewrite",))
        if self.split is not None and sum(w.weight for w in self.split) == 0:
            raise invalid("split weights sum to 0; at least one weight must be greater than 0", at=("split",))
        check_timeout_covers(self.timeout_covers, self.timeout)
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
