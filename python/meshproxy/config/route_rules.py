"""Request rules of routes and listeners besides where a route sends: local rate limits, fault
injection, redirects, direct responses and rewrites (the engine's ``route_rules``). A rule that
is left out costs the data path nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .defaults import default
from .duration import Duration
from .fields import HeaderName, UrlPath
from .messages import invalid, show
from .section import _Section

# host or host:port, or a bracketed IPv6 literal with an optional port: what `Host` carries.
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


def _authority(value: str) -> str:
    if not _AUTHORITY.match(value):
        raise invalid(f"{show(value)} is not a valid host; expected a name or address, with an optional :port")
    return value


Authority = Annotated[str, AfterValidator(_authority)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]
"""A share of requests, from 0 to 100; fractions allowed (0.5)."""
Status = Annotated[int, Field(ge=200, le=599)]


class RateLimit(_Section):
    """A token bucket shared by every worker: `requests_per_second` tokens come back each
    second, at most `burst` are held. A request takes one; with none left it is answered 429
    with `retry-after` (x-meshproxy-error: rate_limited). Kept, tokens and all, by a reload
    that gives it again."""

    requests_per_second: Annotated[int, Field(ge=1, le=1_000_000_000)]
    """Tokens that come back each second; a request takes one, and with none left is answered 429
    (x-meshproxy-error: rate_limited) with retry-after, the seconds until one is back."""
    burst: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """Tokens held when full; default: requests_per_second (one second's worth)."""


class FaultDelay(_Section):
    fixed: Duration
    """How long a delayed request is held before it is forwarded."""
    percent: Percent = default("fault.percent")
    """The share of requests (of those carrying `header`, if set) delayed."""
    header: HeaderName | None = None
    """Only requests carrying this header may be delayed."""


class FaultAbort(_Section):
    status: Status
    """The status the proxy answers with (x-meshproxy-error: fault_injected)."""
    percent: Percent = default("fault.percent")
    """The share of requests (of those carrying `header`, if set) aborted."""
    header: HeaderName | None = None
    """Only requests carrying this header may be aborted (a test channel)."""


class Fault(_Section):
    """Faults injected before forwarding, for chaos tests: a delay, an abort, or both (the
    delay first). Counted per route in /stats and /metrics."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _some_fault(self) -> Fault:
        if self.delay is None and self.abort is None:
            raise invalid("a fault needs a delay, an abort, or both")
        return self


class Redirect(_Section):
    """Answers with a redirect to the request's URL with the parts given replaced; the query
    is kept unless `strip_query`."""

    path: UrlPath | None = None
    host: Authority | None = None
    """The new URL's host (and port)."""
    scheme: Literal["http", "https"] | None = None
    status: Literal[301, 302, 303, 307, 308] = default("redirect.status")
    strip_query: bool = False

    @model_validator(mode="after")
    def _something_changes(self) -> Redirect:
        if self.path is None and self.host is None and self.scheme is None:
            raise invalid("a redirect needs at least one of path, host, scheme; to the same URL it would loop")
        return self


class DirectResponse(_Section):
    """Answers with this status and body (text/plain), without any cluster."""

    status: Status
    body: str = ""


class Mirror(_Section):
    """Copies a share of the route's requests to a shadow cluster, fire and forget: its answer
    is dropped, its slowness or failure never reaches the caller. The copy's Host (or
    :authority) is suffixed -shadow (orders:8080 becomes orders-shadow:8080), as Envoy does.
    A request body is copied when its Content-Length is at most 64 KiB (it is then read whole
    before forwarding); a request with a longer body, or one of unknown length, is not copied.
    At most 128 copies per route are in flight (more are dropped and counted); each is bounded
    by the route's timeout (15s without one)."""

    cluster: str
    percent: Percent = default("mirror.percent")
    """The share of requests copied."""


class RegexRewrite(_Section):
    """Rewrites the path sent upstream (not the query): every match of `pattern` (Rust regex
    syntax, checked by the engine) is replaced by `substitution`, where `\\1` is the first
    group, as in Envoy."""

    pattern: str
    substitution: str
