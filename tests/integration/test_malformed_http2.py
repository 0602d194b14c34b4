"""Malformed and hostile HTTP/2, crafted with the `h2` package: header lists over the limit,
malformed requests, rapid reset (CVE-2023-44487), broken connection prefaces and oversized
frames. Each gets RFC 9113's answer and stays contained (tests/malformed_input.py)."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from malformed_input import (
    HOST,
    MAX_HEADER_BYTES,
    assert_fresh_connection_served,
    assert_from_proxy,
    assert_served_by_upstream,
    still_served,
)
# The fixtures this module's tests use, and those they depend on: pytest finds them here by name.
from malformed_input import any_h2_proxy, h2_proxy, proxy, upstream  # noqa: F401
from meshproxy import Proxy
from raw_http import h2_client, raw_exchange, request_bytes, request_headers


# --- header lists over the limit -----------------------------------------------------------


def test_http2_header_list_over_the_limit_gets_431_on_that_stream_only(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §10.5.1: a server MAY answer a field block larger than it is willing to handle
    # with 431; h2 decodes it (keeping HPACK state in step) and the connection goes on.
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        big = client.outcome(client.send_headers(request_headers("/big") + [("x-big", "a" * (MAX_HEADER_BYTES + 1000))]))
        assert big.status == 431
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")


def test_http2_header_block_far_over_the_limit_gets_goaway_compression_error(any_h2_proxy: Proxy) -> None:
    # Spread over CONTINUATION frames, a block this big is not buffered to be decoded: h2
    # closes the connection with COMPRESSION_ERROR (RFC 9113 §4.3: HPACK state is lost).
    address = any_h2_proxy.address("outbound")
    huge = [(f"x-big-{i}", "a" * 1000) for i in range(70)]
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers(request_headers("/huge") + huge))
        assert stream.status is None
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.COMPRESSION_ERROR


# --- malformed requests --------------------------------------------------------------------

GOOD = request_headers("/malformed")

# RFC 9113 §8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
MALFORMED_H2_STREAM = {
    "missing :method": [h for h in GOOD if h[0] != ":method"],
    "missing :path": [h for h in GOOD if h[0] != ":path"],
    "missing :scheme": [h for h in GOOD if h[0] != ":scheme"],
    "pseudo-header after a regular header": [GOOD[0], ("x-regular", "1"), *GOOD[1:]],
    "connection-specific header": [*GOOD, ("connection", "keep-alive")],
    "transfer-encoding header": [*GOOD, ("transfer-encoding", "chunked")],
    "te other than trailers": [*GOOD, ("te", "gzip")],
    "empty :path": [*GOOD[:3], (":path", "")],
    "duplicated :path": [*GOOD, (":path", "/other")],
}


@pytest.mark.parametrize("headers", MALFORMED_H2_STREAM.values(), ids=MALFORMED_H2_STREAM.keys())
def test_malformed_http2_request_gets_rst_stream_protocol_error(any_h2_proxy: Proxy, headers: list[tuple[str, str]]) -> None:
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers(headers))
        assert stream.reset == ErrorCodes.PROTOCOL_ERROR
        assert stream.status is None
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")
    served = any_h2_proxy.stats()["listeners"]["outbound"]["requests_total"]
    assert served == 4, "only the well-formed requests (/before, /same-connection, /after, /fresh) are served"


# h2 finds these while decoding the HPACK block and escalates them to a connection error,
# which RFC 9113 §5.4 allows for any stream error.
MALFORMED_H2_CONNECTION = {
    "unknown pseudo-header": [*GOOD, (":foo", "bar")],
    "uppercase header name": [*GOOD, ("X-Upper", "1")],
}


@pytest.mark.parametrize("headers", MALFORMED_H2_CONNECTION.values(), ids=MALFORMED_H2_CONNECTION.keys())
def test_malformed_http2_header_block_gets_goaway_protocol_error(any_h2_proxy: Proxy, headers: list[tuple[str, str]]) -> None:
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers(headers))
        assert stream.status is None
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
        assert client.goaway.last_stream_id == 0, "the malformed stream was not processed"


def test_http2_request_with_two_host_headers_gets_400_on_that_stream(any_h2_proxy: Proxy) -> None:
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream = client.outcome(client.send_headers([*GOOD, ("host", "app.test"), ("host", "other.test")]))
        assert stream.status == 400
        assert stream.headers["x-meshproxy-error"] == "bad_request"
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")


def test_http2_body_shorter_than_content_length_gets_rst_stream_protocol_error(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §8.1.1: content-length that does not match the DATA frames is malformed.
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        stream_id = client.send_headers([(":method", "POST"), *GOOD[1:], ("content-length", "10")], end_stream=False)
        client.conn.send_data(stream_id, b"abc", end_stream=True)
        client.flush()
        stream = client.outcome(stream_id)
        assert stream.reset == ErrorCodes.PROTOCOL_ERROR
        after = client.request("/same-connection")
        assert_served_by_upstream(after.status or 0, after.body, "/same-connection")


# --- rapid reset (CVE-2023-44487) ----------------------------------------------------------

RAPID_RESET_STREAMS = 2000


def test_http2_rapid_reset_gets_goaway_enhance_your_calm_and_spares_other_connections(any_h2_proxy: Proxy) -> None:
    address = any_h2_proxy.address("outbound")
    with h2_client(address) as bystander, h2_client(address) as attacker:
        # A request in flight on another connection for the whole attack.
        in_flight = bystander.send_headers(request_headers("/delay/300"))
        upstream_requests_before = any_h2_proxy.stats()["clusters"]["app"]["upstream_requests_total"]

        sent = 0
        try:
            while sent < RAPID_RESET_STREAMS:
                stream_id = attacker.conn.get_next_available_stream_id()
                attacker.conn.send_headers(stream_id, request_headers("/reset"), end_stream=True)
                attacker.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                sent += 1
                if sent % 50 == 0:
                    attacker.flush()
            attacker.flush()
        except OSError:
            pass  # the proxy closed the connection mid-attack
        attacker.read_until(lambda: False)

        assert attacker.goaway is not None, f"no GOAWAY after {sent} reset streams"
        assert attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert attacker.goaway.additional_data == b"too_many_resets"
        assert attacker.goaway.last_stream_id is not None
        streams_accepted = (attacker.goaway.last_stream_id + 1) // 2
        assert streams_accepted <= 100, f"the proxy took {streams_accepted} streams before going away"
        forwarded = any_h2_proxy.stats()["clusters"]["app"]["upstream_requests_total"] - upstream_requests_before
        assert forwarded <= streams_accepted

        answered = bystander.outcome(in_flight)
        assert_served_by_upstream(answered.status or 0, answered.body, "/delay/300")
        after = bystander.request("/after")
        assert_served_by_upstream(after.status or 0, after.body, "/after")
    assert_fresh_connection_served(address, http2=True)


# --- broken connection prefaces ------------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BROKEN_PREFACES = {
    "HTTP/1.1 request": request_bytes(b"GET / HTTP/1.1", HOST),
    "preface with wrong magic": b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    "binary garbage": bytes(range(256)),
}


@pytest.mark.parametrize("payload", BROKEN_PREFACES.values(), ids=BROKEN_PREFACES.keys())
def test_broken_preface_on_http2_listener_closes_the_connection(h2_proxy: Proxy, payload: bytes) -> None:
    # RFC 9113 §3.4: an invalid preface is a connection error; the GOAWAY MAY be omitted
    # since the peer is not speaking HTTP/2. The proxy sends at most its SETTINGS frame.
    address = h2_proxy.address("outbound")
    with still_served(address, http2=True):
        reply = raw_exchange(address, payload)
        assert reply.closed
        assert b"HTTP/1.1" not in reply.data
    assert h2_proxy.stats()["listeners"]["outbound"]["requests_total"] == 3, "only the bystander's requests are served"


@pytest.mark.parametrize("payload", [b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", bytes(range(256))], ids=["wrong magic", "binary garbage"])
def test_broken_preface_on_auto_listener_gets_http1_400_and_close(proxy: Proxy, payload: bytes) -> None:
    # Not the HTTP/2 preface, so the auto listener reads HTTP/1.1, which it is not either.
    address = proxy.address("outbound")
    with still_served(address), still_served(address, http2=True):
        reply = raw_exchange(address, payload)
        response = reply.only_response()
        assert response.status == 400
        assert_from_proxy(response)
        assert reply.closed


def test_oversized_frame_after_a_valid_preface_gets_goaway_frame_size_error(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §4.2: a frame longer than SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR.
    address = any_h2_proxy.address("outbound")
    with still_served(address, http2=True), h2_client(address) as client:
        client.sock.sendall(b"\xff" * 9)  # a frame header announcing 16 MiB - 1 of payload
        client.read_until(lambda: False)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_initial_window_size_over_the_maximum_gets_goaway_flow_control_error(any_h2_proxy: Proxy) -> None:
    # RFC 9113 §6.5.2: SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 is a connection error of type
    # FLOW_CONTROL_ERROR. The h2 package refuses to send it, so the preface is written by hand
    # and the answer read with a client-side h2 connection.
    address = any_h2_proxy.address("outbound")
    setting = struct.pack(">HI", SettingCodes.INITIAL_WINDOW_SIZE, 2**31)
    preface = H2_PREFACE + struct.pack(">I", len(setting))[1:] + b"\x04\x00\x00\x00\x00\x00" + setting
    with still_served(address, http2=True):
        reply = raw_exchange(address, preface)
        assert reply.closed
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        events = conn.receive_data(reply.data)
        goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert [g.error_code for g in goaways] == [ErrorCodes.FLOW_CONTROL_ERROR]
        assert isinstance(events[0], h2.events.RemoteSettingsChanged), "the server's SETTINGS come first"


def test_initial_window_size_over_the_maximum_in_a_later_settings_frame_gets_goaway_flow_control_error(
        any_h2_proxy: Proxy) -> None:
    # The same value in a SETTINGS frame after the preface, on a connection that has served a
    # request: still a connection error of type FLOW_CONTROL_ERROR (RFC 9113 §6.5.2).
    address = any_h2_proxy.address("outbound")
    setting = struct.pack(">HI", SettingCodes.INITIAL_WINDOW_SIZE, 2**31)
    later = struct.pack(">I", len(setting))[1:] + b"\x04\x00\x00\x00\x00\x00" + setting
    with still_served(address, http2=True), h2_client(address) as client:
        served = client.request("/first")
        assert served.status == 200
        client.sock.sendall(later)
        client.read_until(lambda: False)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR
