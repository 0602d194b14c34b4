"""Which span export failures are retried, and how long the exporter waits before each retry."""

from __future__ import annotations

import email.message
import email.utils
import errno
import socket
import urllib.error

import pytest

from meshproxy.export_retry import RETRY_AFTER_CAP, RETRY_DELAYS, retry_delay, retryable

NOW = 1_700_000_000.0


def refused_with(status: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://127.0.0.1:4318/v1/traces", status, "refused", email.message.Message(), None)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_statuses_the_otlp_specification_calls_retryable_are_retried(status: int) -> None:
    assert retryable(refused_with(status))


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500, 501])
def test_other_statuses_are_not(status: int) -> None:
    assert not retryable(refused_with(status))


def test_no_connection_is_retried_and_a_timeout_is_not() -> None:
    assert retryable(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")))
    assert retryable(ConnectionResetError(104, "Connection reset by peer"))
    assert retryable(urllib.error.URLError(OSError(errno.EHOSTUNREACH, "No route to host")))
    assert not retryable(urllib.error.URLError(socket.timeout("timed out")))
    assert not retryable(TimeoutError("timed out"))
    assert not retryable(urllib.error.URLError(socket.gaierror(-2, "Name or service not known")))


def test_without_retry_after_the_backoff_steps_are_used() -> None:
    assert [retry_delay(attempt, None, NOW) for attempt in range(len(RETRY_DELAYS))] == [0.5, 1.0, 2.0]


def test_retry_after_in_seconds_or_as_a_date_wins_within_the_cap() -> None:
    assert retry_delay(0, "3", NOW) == 3.0
    assert retry_delay(2, "0", NOW) == 0.0
    assert retry_delay(0, "120", NOW) == RETRY_AFTER_CAP
    assert retry_delay(0, email.utils.formatdate(NOW + 4, usegmt=True), NOW) == 4.0
    assert retry_delay(0, email.utils.formatdate(NOW - 60, usegmt=True), NOW) == 0.0


def test_an_unreadable_retry_after_falls_back_to_the_backoff() -> None:
    assert retry_delay(1, "soon", NOW) == RETRY_DELAYS[1]
    assert retry_delay(1, "-5", NOW) == RETRY_DELAYS[1]
