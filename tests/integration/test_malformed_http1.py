"""Malformed HTTP/1.1 requests, sent as raw bytes: what the parser must refuse, a missing or
invalid Host, and a header block over the limit. Each is answered as RFC 9112 and RFC 9110
say, and stays contained (tests/malformed_input.py)."""

from __future__ import annotations

import pytest
from malformed_input import HOST, MAX_HEADER_BYTES, assert_from_proxy, assert_served_by_upstream, still_served
# The fixtures this module's tests use, and those they depend on: pytest finds them here by name.
from malformed_input import proxy, recorded_proxy, recorder, upstream  # noqa: F401
from meshproxy import Proxy
from raw_http import raw_exchange, request_bytes
from recording_upstream import RecordingUpstream


# --- messages the parser must refuse -------------------------------------------------------

MALFORMED_HTTP1 = {
    "garbage request line": b"\x01\x02 this is not http\r\n\r\n",
    "space inside the target": request_bytes(b"GET /a b HTTP/1.1", HOST),
    "space in a header name": request_bytes(b"GET / HTTP/1.1", HOST, b"Bad Header: x"),
    "header line without colon": request_bytes(b"GET / HTTP/1.1", HOST, b"NoColonHere"),
    "obs-fold continuation line": request_bytes(b"GET / HTTP/1.1", HOST, b"X-Folded: a", b"  b"),
    "NUL in a header value": request_bytes(b"GET / HTTP/1.1", HOST, b"X-Value: a\x00b"),
    "bare CR in a header value": request_bytes(b"GET / HTTP/1.1", HOST, b"X-Value: a\rb"),
    "invalid method token": request_bytes(b"G(T / HTTP/1.1", HOST),
}


@pytest.mark.parametrize("payload", MALFORMED_HTTP1.values(), ids=MALFORMED_HTTP1.keys())
def test_malformed_http1_request_gets_400_and_close(proxy: Proxy, payload: bytes) -> None:
    # RFC 9112 §2.2, §3, §5: invalid syntax and obs-fold in a request are answered with 400.
    address = proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert_from_proxy(response)
        assert reply.closed
    assert proxy.stats()["clusters"]["app"]["upstream_requests_total"] == 3, "only the bystander's requests reach the upstream"


INVALID_HOST = {
    "HTTP/1.1 without Host": request_bytes(b"GET /no-host HTTP/1.1"),
    "absolute-form without Host": request_bytes(b"GET http://app.test/no-host HTTP/1.1"),
    "two Host lines": request_bytes(b"GET /two-hosts HTTP/1.1", HOST, b"Host: other.test"),
    "Host with a space": request_bytes(b"GET /bad-host HTTP/1.1", b"Host: app test"),
    "Host with a path": request_bytes(b"GET /bad-host HTTP/1.1", b"Host: app.test/x"),
}


@pytest.mark.parametrize("payload", INVALID_HOST.values(), ids=INVALID_HOST.keys())
def test_missing_duplicate_or_invalid_host_gets_400_from_the_proxy(recorded_proxy: Proxy, recorder: RecordingUpstream,
                                                                   payload: bytes) -> None:
    # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request lacking Host, and to any
    # request with more than one Host or an invalid one; forwarding it would let the proxy
    # route on one host while the upstream reads another.
    address = recorded_proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert response.headers["x-meshproxy-error"] == "bad_request"
        assert reply.closed
    assert recorder.targets() == ["/before", "/after", "/fresh"]


def test_empty_host_is_valid_when_the_target_has_no_authority(recorded_proxy: Proxy, recorder: RecordingUpstream) -> None:
    # RFC 9112 §3.2: an empty Host says the target URI has no authority; it is not an error.
    reply = raw_exchange(recorded_proxy.address("outbound"), request_bytes(b"GET /empty-host HTTP/1.1", b"Host:", b"Connection: close"))
    assert reply.only_response().status == 200
    assert recorder.targets() == ["/empty-host"]


# --- a header block over the limit ---------------------------------------------------------


def test_http1_header_block_over_the_limit_gets_431_and_close(proxy: Proxy) -> None:
    # RFC 6585 §5: 431 Request Header Fields Too Large.
    address = proxy.address("outbound")
    with still_served(address):
        reply = raw_exchange(address, request_bytes(b"GET /big HTTP/1.1", HOST, b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 1000)))
        response = reply.only_response()
        assert response.status == 431
        assert_from_proxy(response)
        assert reply.closed


def test_http1_header_block_under_the_limit_is_forwarded(proxy: Proxy) -> None:
    reply = raw_exchange(proxy.address("outbound"),
                         request_bytes(b"GET /big HTTP/1.1", HOST, b"Connection: close", b"X-Big: " + b"a" * (MAX_HEADER_BYTES // 2)))
    response = reply.only_response()
    assert_served_by_upstream(response.status, response.body, "/big")
