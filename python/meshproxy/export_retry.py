"""When a span batch that failed to reach the collector is sent again, and after how long.

The OTLP/HTTP specification calls a failure retryable when the collector could not be reached,
or answered 429, 502, 503 or 504; a ``Retry-After`` it sends says how long to wait. Every other
answer means the batch will never be taken, and a collector that did not answer in time may
have taken it: those batches are not sent again.
"""

from __future__ import annotations

import email.utils
import errno
import time
import urllib.error

RETRY_DELAYS = (0.5, 1.0, 2.0)
"""Seconds before each retry of a batch: three retries, then the batch is dropped."""
RETRY_AFTER_CAP = 5.0
"""Longest wait a collector's ``Retry-After`` is granted, in seconds: spans pile up meanwhile."""
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# "No connection" beyond ConnectionError (refused, reset, aborted): no route to the collector.
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


def retryable(error: BaseException) -> bool:
    """Whether the failure ``error`` of one POST is worth a retry: no connection, or a status
    the collector uses for "not now"."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code in RETRYABLE_STATUSES
    # urllib wraps what happens while connecting and sending in URLError; what happens while
    # waiting for the answer comes as it is.
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    # A timeout is not retried: the collector may have taken the batch and be slow to say so.
    if isinstance(cause, TimeoutError):
        return False
    return isinstance(cause, ConnectionError) or (isinstance(cause, OSError) and cause.errno in _UNREACHABLE)


def retry_delay(attempt: int, retry_after: str | None, now: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): the collector's
    ``Retry-After`` (seconds or an HTTP date) when it sent a readable one, capped, else the
    backoff of :data:`RETRY_DELAYS`."""
    asked = _retry_after_seconds(retry_after, time.time() if now is None else now)
    if asked is None:
        return RETRY_DELAYS[attempt]
    return min(max(asked, 0.0), RETRY_AFTER_CAP)


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now
