"""A gRPC call's deadline covers the whole call, streaming responses included (as a gRPC client
means it, and as Envoy's `max_stream_duration.grpc_timeout_header_max` enforces it): the shorter
of the call's grpc-timeout and the route's timeout ends a response still streaming, with
trailers `grpc-status: 4` between two messages. Counted as the call's status 4 and as the
cluster's timeout; the upstream's stream is cancelled; the sidecar serves the next call. Calls
without grpc-timeout keep the route's timeout on the head only."""

from __future__ import annotations

import struct
from typing import Any

import grpc
import pytest
from grpc_app import EchoApp, EchoClient
from h2.errors import ErrorCodes
from h2_upstreams import CutMessageUpstream
from raw_http import H2Client, StreamOutcome
from test_grpc import app, grpc_config, grpc_counts  # noqa: F401 (app: the module's fixture)
from upstreams import wait_until

from meshproxy import Proxy


def raw_call(address: str, message: bytes, headers: list[tuple[str, str]]) -> StreamOutcome:
    """A server-streaming call over h2c by hand: a client with no deadline of its own, which
    reads the trailers the proxy sends."""
    client = H2Client(address)
    try:
        stream_id = client.send_headers([(":method", "POST"), (":scheme", "http"), (":authority", "echo"),
                                         (":path", "/test.Echo/Count"), ("content-type", "application/grpc"),
                                         ("te", "trailers"), *headers], end_stream=False)
        client.conn.send_data(stream_id, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
        client.flush()
        return client.outcome(stream_id)
    finally:
        client.close()


def messages(body: bytes) -> list[bytes]:
    """The gRPC messages of a response body, which must hold whole messages only."""
    out = []
    while body:
        assert len(body) >= 5, body
        _, length = struct.unpack(">BI", body[:5])
        assert len(body) >= 5 + length, body
        out.append(body[5:5 + length])
        body = body[5 + length:]
    return out


def test_grpc_timeout_ends_a_streaming_response_with_deadline_exceeded_trailers(app: EchoApp) -> None:
    ended_before = app.streams_ended
    with Proxy(grpc_config(app.address)) as proxy:
        outcome = raw_call(proxy.address("outbound"), b"every:50", [("grpc-timeout", "400m")])
        assert outcome.status == 200
        assert outcome.reset is None and outcome.ended
        streamed = messages(outcome.body)
        assert streamed[:2] == [b"0", b"1"], "the response streamed before the deadline passed"
        assert outcome.trailers["grpc-status"] == "4"
        assert outcome.trailers["grpc-message"] == "the call's deadline (400ms) passed"
        assert grpc_counts(proxy) == {"4": 1}
        assert proxy.stats()["clusters"]["echo"]["timeouts_total"] == 1
        # The upstream's stream was cancelled: the server's call ended well before its limit.
        wait_until(lambda: app.streams_ended > ended_before, what="the server's streaming call to end")


def test_the_routes_timeout_is_a_grpcio_calls_deadline_over_its_whole_stream(app: EchoApp) -> None:
    # The client's own deadline is far; the route's timeout, shorter, is the call's deadline
    # because the call has a grpc-timeout.
    with Proxy(grpc_config(app.address, route={"timeout": "500ms"})) as proxy, EchoClient(proxy.address("outbound"), "echo") as client:
        received = []
        with pytest.raises(grpc.RpcError) as raised:
            for message in client.count(b"every:50", timeout=15):
                received.append(message)
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "deadline (500ms) passed" in error.details()
        assert received[:2] == [b"0", b"1"]
        assert grpc_counts(proxy) == {"4": 1}
        metrics = proxy.metrics().decode()
        assert 'meshproxy_grpc_requests_total{cluster="echo",direction="outbound",grpc_status="4",' \
               'listener="outbound",route="echo"} 1' in metrics
        # The sidecar is healthy for the next call, on the same channel.
        assert client.echo(b"next", timeout=15) == b"next"
        assert list(client.count(b"3", timeout=15)) == [b"0", b"1", b"2"]


def test_a_call_without_grpc_timeout_streams_past_the_routes_timeout_on_the_head(app: EchoApp) -> None:
    # Without grpc-timeout, the route's timeout covers the head only, as for any request.
    with Proxy(grpc_config(app.address, route={"timeout": "300ms"})) as proxy:
        outcome = raw_call(proxy.address("outbound"), b"every:100:8", [])
        assert (outcome.status, outcome.reset, outcome.trailers.get("grpc-status")) == (200, None, "0")
        assert messages(outcome.body) == [str(i).encode() for i in range(8)]
        assert proxy.stats()["clusters"]["echo"]["timeouts_total"] == 0


def test_a_deadline_in_the_middle_of_a_message_resets_the_call_with_cancel() -> None:
    # Trailers after a cut message would leave the client a broken message: the stream is reset
    # with CANCEL instead, and the upstream's stream too.
    upstream = CutMessageUpstream(10, hang_up=False)
    try:
        with Proxy(grpc_config(upstream.address)) as proxy:
            outcome = raw_call(proxy.address("outbound"), b"1", [("grpc-timeout", "300m")])
            assert outcome.status == 200
            assert outcome.body == struct.pack(">BI", 0, 10) + b"cut"
            assert outcome.reset == ErrorCodes.CANCEL
            assert grpc_counts(proxy) == {"4": 1}
            wait_until(lambda: upstream.resets == [ErrorCodes.CANCEL], what="the upstream's stream to be reset")
    finally:
        upstream.close()
