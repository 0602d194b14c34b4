"""Timeouts of a route's streams and a cluster's connections beyond the route's ``timeout``
(the engine's ``timeouts``): what that timeout covers, a stream's idle timeout, and how long a
cluster keeps an unused upstream connection. Their defaults are the engine's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from .. import _native
from .duration import to_micros
from .messages import invalid

TimeoutCovers = Literal["headers", "response"]
"""What a route's ``timeout`` covers: the wait for the response head (``headers``, the default),
or the whole response to its last byte (``response``, Envoy's meaning)."""


def check_timeout_covers(covers: TimeoutCovers, timeout: timedelta) -> None:
    """``timeout_covers: response`` bounds the response by ``timeout``: without one, it bounds
    nothing, which is surely not what was meant."""
    if covers == "response" and timeout == timedelta(0):
        raise invalid("timeout_covers: response needs a timeout greater than 0 (0 means none)", at=("timeout_covers",))


def positive(field: str, value: timedelta) -> timedelta:
    """A duration that must not be zero (a cluster's ``idle_timeout``): the engine's rule."""
    try:
        _native.check_positive_duration(field, to_micros(value))
    except ValueError as problem:
        raise invalid(str(problem)) from None
    return value
