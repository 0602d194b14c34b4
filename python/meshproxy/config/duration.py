"""Durations: written as ``250ms``/``1.5s``/``2m``/``1h`` or a number of seconds, held as a
:class:`datetime.timedelta`, handed to the engine as whole milliseconds (``"15000ms"``).

Milliseconds are the engine's resolution for every timeout, so rounding happens once, here,
and the engine never parses units. The one setting finer than that, ``busy_poll``, is a
:data:`FineDuration`: it also takes ``us`` and goes to the engine as whole microseconds
(``"300us"``).

What a duration may be written as, and its limits, are the engine's rules (``values.rs``,
through ``_native``); this module turns them into schema types.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from .. import _native
from .messages import invalid, show


def parse_duration(value: object) -> timedelta:
    """Parse one duration. Raises a ValueError (a pydantic custom error, so it slots into
    model validation) whose text is the user-facing message."""
    return _parse(value, fine=False)


def parse_fine_duration(value: object) -> timedelta:
    """Parse one duration that may also be written in microseconds (``300us``)."""
    return _parse(value, fine=True)


def _parse(value: object, fine: bool) -> timedelta:
    # The engine's rule reads text and numbers; a timedelta is read as its seconds.
    given = value.total_seconds() if isinstance(value, timedelta) else value
    try:
        seconds = _native.parse_duration(given, fine)
    except ValueError as problem:
        raise invalid(f"{show(value)} is not a valid duration; {problem}") from None
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise invalid(f"{show(value)} is too long for a duration") from None


def to_millis(value: timedelta) -> int:
    """Whole milliseconds, rounding half up (timedelta is exact to the microsecond)."""
    return (to_micros(value) + 500) // 1000


def to_micros(value: timedelta) -> int:
    """Whole microseconds: all a timedelta holds."""
    # Integer fields rather than `value // timedelta(microseconds=1)`: no object per call, and
    # the engine document writes one duration per route.
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


# Every route writes its timeout, and ten thousand routes share a few values (most the default).
@functools.lru_cache(maxsize=1024)
def format_duration(value: timedelta) -> str:
    return f"{to_millis(value)}ms"


def format_fine_duration(value: timedelta) -> str:
    return f"{to_micros(value)}us"


def _schema(pattern: str, description: str) -> WithJsonSchema:
    """How the JSON Schema shows a duration: text matching ``pattern``, or a number of seconds."""
    return WithJsonSchema({"anyOf": [{"type": "string", "pattern": pattern}, {"type": "number", "minimum": 0}],
                           "description": description})


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    _schema(_native.DURATION_PATTERN, "a duration: 250ms, 1.5s, 2m, 1h, or a number of seconds"),
]
"""A non-negative duration; see the module docstring for the accepted forms."""

FineDuration = Annotated[
    timedelta,
    BeforeValidator(parse_fine_duration),
    PlainSerializer(format_fine_duration, return_type=str, when_used="json"),
    _schema(_native.FINE_DURATION_PATTERN, "a duration to the microsecond: 300us, 0.5ms, or a number of seconds"),
]
"""A non-negative duration that may be finer than a millisecond (``300us``)."""
