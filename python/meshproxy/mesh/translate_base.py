"""What every translation of Envoy resources shares: the refusal (a NACK's message), durations
and shares in the sidecar's form, and the check that a message sets only what the sidecar
translates."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration

from .xds_pb2 import FractionalPercent


class Refused(ValueError):
    """Resources with no sidecar equivalent; the message says which part and why. It becomes the
    NACK's error_detail."""


def duration(value: Duration) -> str:
    """A protobuf Duration in the sidecar's form (milliseconds; ``0`` for none)."""
    millis = value.seconds * 1000 + value.nanos // 1_000_000
    if millis == 0 and value.nanos > 0:
        millis = 1  # shorter than the sidecar's resolution, but not "no timeout"
    return f"{millis}ms"


def percent_of(fraction: FractionalPercent) -> float:
    """An Envoy FractionalPercent as the sidecar's percent (0 to 100, fractions allowed)."""
    size = {FractionalPercent.HUNDRED: 100, FractionalPercent.TEN_THOUSAND: 10_000,
            FractionalPercent.MILLION: 1_000_000}[fraction.denominator]
    return min(fraction.numerator, size) * 100 / size


def only(message: Any, allowed: set[str], where: str) -> None:
    """Refuses a message with any field set beyond ``allowed``: each has a meaning the sidecar
    would otherwise drop without a word."""
    extra = sorted(field.name for field, _ in message.ListFields() if field.name not in allowed)
    if extra:
        raise Refused(f"{where}: {', '.join(extra)} {'has' if len(extra) == 1 else 'have'} no sidecar equivalent")
