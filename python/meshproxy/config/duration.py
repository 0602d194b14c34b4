"""Durations: written as ``250ms``/``1.5s``/``2m``/``1h`` or a number of seconds, held as a
:class:`datetime.timedelta`, handed to the engine as whole milliseconds (``"15000ms"``).

Milliseconds are the engine's resolution for every timeout, so rounding happens once, here,
and the engine never parses units.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from .messages import invalid, show

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TEXT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)$")
_EXPECTED = "expected a number with a unit ms, s, m or h (e.g. 250ms, 1.5s, 2m) or a number of seconds"


def parse_duration(value: object) -> timedelta:
    """Parse one duration. Raises a ValueError (a pydantic custom error, so it slots into
    model validation) whose text is the user-facing message."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        # bool is an int subclass; `timeout: yes` is a typo, not one second.
        raise invalid(f"{show(value)} is not a valid duration; {_EXPECTED}")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _TEXT.match(value)
        if m is None:
            raise invalid(f"{show(value)} is not a valid duration; {_EXPECTED}")
        seconds = float(m[1]) * _UNIT_SECONDS[m[2]]
    else:
        raise invalid(f"{show(value)} is not a valid duration; {_EXPECTED}")
    if math.isnan(seconds):
        raise invalid(f"{show(value)} is not a valid duration; {_EXPECTED}")
    if seconds < 0:
        raise invalid(f"{show(value)} is not a valid duration; it must not be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise invalid(f"{show(value)} is too long for a duration") from None


def to_millis(value: timedelta) -> int:
    """Whole milliseconds, rounding half up (timedelta is exact to the microsecond)."""
    # Integer fields rather than `value // timedelta(microseconds=1)`: no object per call, and
    # the engine document writes one duration per route.
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return (micros + 500) // 1000


def format_duration(value: timedelta) -> str:
    return f"{to_millis(value)}ms"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _TEXT.pattern},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: 250ms, 1.5s, 2m, 1h, or a number of seconds",
        }
    ),
]
"""A non-negative duration; see the module docstring for the accepted forms."""
