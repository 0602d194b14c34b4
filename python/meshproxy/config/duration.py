"""Durations: written as ``250ms``/``1.5s``/``2m``/``1h`` or a number of seconds, held as a
:class:`datetime.timedelta`, handed to the engine as whole milliseconds (``"15000ms"``).

Milliseconds are the engine's resolution for every timeout, so rounding happens once, here,
and the engine never parses units. The one setting finer than that, ``busy_poll``, is a
:data:`FineDuration`: it also takes ``us`` and goes to the engine as whole microseconds
(``"300us"``).
"""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from .messages import invalid, show

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TEXT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)$")
_EXPECTED = "expected a number with a unit ms, s, m or h (e.g. 250ms, 1.5s, 2m) or a number of seconds"
_FINE_UNIT_SECONDS = {"us": 0.000_001, **_UNIT_SECONDS}
_FINE_TEXT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(us|ms|s|m|h)$")
_FINE_EXPECTED = "expected a number with a unit us, ms or s (e.g. 300us, 0.5ms) or a number of seconds"


def parse_duration(value: object) -> timedelta:
    """Parse one duration. Raises a ValueError (a pydantic custom error, so it slots into
    model validation) whose text is the user-facing message."""
    return _parse(value, _TEXT, _UNIT_SECONDS, _EXPECTED)


def parse_fine_duration(value: object) -> timedelta:
    """Parse one duration that may also be written in microseconds (``300us``)."""
    return _parse(value, _FINE_TEXT, _FINE_UNIT_SECONDS, _FINE_EXPECTED)


def _parse(value: object, text: re.Pattern[str], units: dict[str, float], expected: str) -> timedelta:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        # bool is an int subclass; `timeout: yes` is a typo, not one second.
        raise invalid(f"{show(value)} is not a valid duration; {expected}")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = text.match(value)
        if m is None:
            raise invalid(f"{show(value)} is not a valid duration; {expected}")
        seconds = float(m[1]) * units[m[2]]
    else:
        raise invalid(f"{show(value)} is not a valid duration; {expected}")
    if math.isnan(seconds):
        raise invalid(f"{show(value)} is not a valid duration; {expected}")
    if seconds < 0:
        raise invalid(f"{show(value)} is not a valid duration; it must not be negative")
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


def _schema(text: re.Pattern[str], description: str) -> WithJsonSchema:
    """How the JSON Schema shows a duration: text matching ``text``, or a number of seconds."""
    return WithJsonSchema({"anyOf": [{"type": "string", "pattern": text.pattern}, {"type": "number", "minimum": 0}],
                           "description": description})


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    _schema(_TEXT, "a duration: 250ms, 1.5s, 2m, 1h, or a number of seconds"),
]
"""A non-negative duration; see the module docstring for the accepted forms."""

FineDuration = Annotated[
    timedelta,
    BeforeValidator(parse_fine_duration),
    PlainSerializer(format_fine_duration, return_type=str, when_used="json"),
    _schema(_FINE_TEXT, "a duration to the microsecond: 300us, 0.5ms, or a number of seconds"),
]
"""A non-negative duration that may be finer than a millisecond (``300us``)."""
