"""Durations: every accepted spelling, every rejected one, and the engine's "NNNms" form."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest
from meshproxy.config.duration import format_duration, parse_duration, to_millis

ACCEPTED: list[tuple[object, int]] = [
    ("250ms", 250),
    ("0ms", 0),
    ("1s", 1_000),
    ("1.5s", 1_500),
    (".5s", 500),
    ("2.s", 2_000),
    ("2m", 120_000),
    ("1h", 3_600_000),
    ("0.25h", 900_000),
    ("1.0005s", 1_001),  # rounds half up to the millisecond
    ("0.0004s", 0),
    ("0.0005s", 1),
    ("1.2ms", 1),
    ("1.5ms", 2),
    (0, 0),
    (15, 15_000),
    (0.25, 250),
    (1.5, 1_500),
    (timedelta(milliseconds=42), 42),
]

REJECTED: list[tuple[object, str]] = [
    ("", "is not a valid duration"),
    ("15", "is not a valid duration"),  # a string needs a unit; a bare number must be a YAML number
    ("ms", "is not a valid duration"),
    ("1 s", "is not a valid duration"),
    ("1S", "is not a valid duration"),
    ("1d", "is not a valid duration"),
    ("1e3ms", "is not a valid duration"),
    ("-1s", "is not a valid duration"),
    (" 1s", "is not a valid duration"),
    (-1, "must not be negative"),
    (-0.5, "must not be negative"),
    (math.nan, "is not a valid duration"),
    (math.inf, "is too long for a duration"),
    ("99999999999999999h", "is too long for a duration"),
    (True, "is not a valid duration"),
    (None, "is not a valid duration"),
    ([1], "is not a valid duration"),
]


@pytest.mark.parametrize(("text", "millis"), ACCEPTED, ids=repr)
def test_accepted_duration(text: object, millis: int) -> None:
    parsed = parse_duration(text)
    assert to_millis(parsed) == millis
    assert format_duration(parsed) == f"{millis}ms"


@pytest.mark.parametrize(("value", "reason"), REJECTED, ids=repr)
def test_rejected_duration(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(value)


def test_rejection_names_the_value_and_the_valid_forms() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("10 seconds")
    assert str(caught.value) == (
        "'10 seconds' is not a valid duration; expected a number with a unit ms, s, m or h "
        "(e.g. 250ms, 1.5s, 2m) or a number of seconds"
    )


def test_units_scale_and_formatting_is_a_fixed_point() -> None:
    """Property over many random whole-millisecond values: each unit scales exactly, and the
    engine form parses back to itself."""
    rng = random.Random(20240601)
    for _ in range(2_000):
        n = rng.randrange(0, 10**9)
        assert to_millis(parse_duration(f"{n}ms")) == n
        assert format_duration(parse_duration(format_duration(parse_duration(f"{n}ms")))) == f"{n}ms"
        small = n % 100_000
        assert to_millis(parse_duration(f"{small}s")) == small * 1_000
        assert to_millis(parse_duration(small)) == small * 1_000
        assert to_millis(parse_duration(f"{small % 10_000}m")) == (small % 10_000) * 60_000
        assert to_millis(parse_duration(f"{small % 1_000}h")) == (small % 1_000) * 3_600_000
        # A fraction of a second with at most three decimals is exact in milliseconds.
        assert to_millis(parse_duration(f"{n // 1000}.{n % 1000:03d}s")) == n
