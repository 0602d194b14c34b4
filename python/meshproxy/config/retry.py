"""Resilience settings of the config schema: a route's retry policy (`retry`) and a cluster's
circuit breakers (`circuit_breakers`). Their defaults are the engine's (Envoy's and Linkerd's).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .. import _native
from .defaults import default, default_duration
from .duration import Duration, to_micros
from .messages import invalid
from .section import _empty, _Section

RetryOn = Literal["connect-failure", "refused-stream", "reset", "5xx", "gateway-error", "retriable-status-codes",
                  "cancelled", "deadline-exceeded", "resource-exhausted", "unavailable"]
Limit = Annotated[int, Field(ge=1, le=1_000_000_000)]


def _check_positive(field: str, value: timedelta) -> None:
    """A duration that must not be zero: the engine's rule, named for ``field``."""
    try:
        _native.check_positive_duration(field, to_micros(value))
    except ValueError as problem:
        raise invalid(str(problem), at=(field,)) from None


class Backoff(_Section):
    """Fully jittered exponential back-off (Envoy's): before retry n, a wait drawn at random
    from 0 to base_interval * (2^n - 1), at most max_interval."""

    base_interval: Duration = default_duration("backoff.base_interval")
    """The first retry waits up to this long."""
    max_interval: Duration = default_duration("backoff.max_interval")
    """No retry waits longer than this."""

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        _check_positive("base_interval", self.base_interval)
        if self.max_interval < self.base_interval:
            raise invalid("max_interval must not be less than base_interval", at=("max_interval",))
        return self


class RetryBudget(_Section):
    """Linkerd's retry budget: over the last 10 seconds, retries are at most `percent` % of the
    route's requests, plus `min_per_second` each second whatever the traffic; a retry beyond it
    is not made (counted as retry_budget_exhausted)."""

    percent: Annotated[float, Field(ge=0.0, le=100.0)] = default("budget.percent")
    """Retries allowed, as a percentage of requests (0 to 100)."""
    min_per_second: Annotated[int, Field(ge=0, le=1_000_000)] = default("budget.min_per_second")
    """Retries allowed each second even with little traffic."""


_BUDGET = RetryBudget()
_BACKOFF = Backoff()


class RetryPolicy(_Section):
    """When a failed try is tried again, on another endpoint when there is one. Without `retry`
    a route has the built-in policy: requests without a body are tried again after a connect
    failure (3 tries) or a refused HTTP/2 stream (8 tries), at once, without a budget."""

    retry_on: Annotated[list[RetryOn], Field(min_length=1)] = default("retry.retry_on")
    """What a try may fail with to be retried: connect-failure, refused-stream, reset (no
    response: reset, disconnect, per-try timeout), 5xx (any 5xx, and what reset covers),
    gateway-error (502, 503, 504, and what reset covers), retriable-status-codes; for gRPC calls,
    cancelled, deadline-exceeded, resource-exhausted, unavailable (that grpc-status in the
    response headers, as a trailers-only response has it)."""
    attempts: Annotated[int, Field(ge=1, le=100)] = default("retry.attempts")
    """Tries in all, the first included."""
    per_try_timeout: Duration | None = None
    """Time allowed for each try's response headers; default: only the route's timeout, which
    covers every try and the waits between them."""
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = _empty(list)
    """With retriable-status-codes in retry_on: the response statuses retried."""
    backoff: Backoff = Field(default_factory=lambda: _BACKOFF)
    budget: RetryBudget = Field(default_factory=lambda: _BUDGET)
    max_replay_bytes: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = default("retry.max_replay_bytes")
    """A request body up to this size, with its length announced (content-length), is kept to
    be sent again; larger and streamed bodies are sent once and never retried. 0: only requests
    without a body are retried."""

    @model_validator(mode="after")
    def _codes_with_their_condition(self) -> RetryPolicy:
        listed = "retriable-status-codes" in self.retry_on
        if listed and not self.retriable_status_codes:
            raise invalid(
                "retry_on retriable-status-codes needs retriable_status_codes: the statuses to retry, e.g. [409]",
                at=("retriable_status_codes",),
            )
        if self.retriable_status_codes and not listed:
            raise invalid(
                "retriable_status_codes apply with retriable-status-codes in retry_on only",
                at=("retriable_status_codes",),
            )
        if self.per_try_timeout is not None:
            _check_positive("per_try_timeout", self.per_try_timeout)
        return self


class CircuitBreakers(_Section):
    """Limits on what the cluster takes at once (Envoy's circuit breakers). Over a limit, a
    request is answered 503 at once with x-meshproxy-error: overflow (counted as overflow); a
    retry over max_retries is not made. Without the section: no limits."""

    max_connections: Limit = default("circuit_breakers.max_connections")
    """Upstream connections the cluster opens and keeps open; a request needing one more is refused."""
    max_pending_requests: Limit = default("circuit_breakers.max_pending_requests")
    """Requests waiting for a new upstream connection to be made."""
    max_requests: Limit = default("circuit_breakers.max_requests")
    """Requests in flight to the cluster, until their response bodies end."""
    max_retries: Annotated[int, Field(ge=0, le=1_000_000_000)] = default("circuit_breakers.max_retries")
    """Retries in progress in the cluster at once; 0 allows none."""
