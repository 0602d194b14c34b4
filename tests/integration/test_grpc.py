"""gRPC through one sidecar, with real peers: a grpcio server behind an h2c cluster and a grpcio
client (or, where the client's own deadline would answer first, an HTTP/2 client sending gRPC
framing by hand). Every call type keeps its messages and trailers; the call's grpc-status
reaches the stats, /metrics and the access log; grpc-timeout is the call's deadline; the
proxy's own errors are gRPC statuses; the retry policy's gRPC conditions retry a trailers-only
UNAVAILABLE; and an upstream that breaks off mid-message harms no other stream."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_app import EchoApp, EchoClient, error_of
from h2_upstreams import BatchUpstream, CutMessageUpstream
from raw_http import H2Client, StreamOutcome
from upstreams import wait_until

from meshproxy import Proxy


def grpc_config(app: str, *, route: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """One `auto` listener whose route `echo` (with `route`'s settings) sends to the h2c `app`;
    `top` adds top-level sections."""
    return {
        **top,
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "protocol": "auto", "routes": [{"name": "echo", "cluster": "echo", **(route or {})}]}],
        "clusters": [{"name": "echo", "protocol": "http2", "endpoints": [{"address": app}]}],
    }


@pytest.fixture(scope="module")
def app() -> Iterator[EchoApp]:
    running = EchoApp()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def proxy(app: EchoApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    log = tmp_path_factory.mktemp("grpc") / "access.log"
    with Proxy(grpc_config(app.address, access_log={"path": str(log)})) as running:
        running.log = log  # type: ignore[attr-defined]
        yield running


def grpc_counts(proxy: Proxy) -> dict[str, int]:
    for entry in proxy.stats()["traffic"]["stats"]:
        if entry["route"] == "echo":
            counted: dict[str, int] = entry["grpc"]
            return counted
    return {}


def test_every_call_type_keeps_its_messages_and_statuses(proxy: Proxy) -> None:
    before = grpc_counts(proxy)
    with EchoClient(proxy.address("outbound"), "echo") as client:
        assert client.echo(b"hello", timeout=10) == b"hello"
        assert list(client.count(b"3", timeout=10)) == [b"0", b"1", b"2"]
        assert client.join(iter([b"a", b"b", b"c"]), timeout=10) == b"a,b,c"
        assert list(client.chat(iter([b"x", b"y"]), timeout=10)) == [b"re:x", b"re:y"]
        failed = error_of(lambda: client.echo(b"fail:order 42 is not valid", timeout=10))
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.details() == "order 42 is not valid"
    after = grpc_counts(proxy)
    assert after.get("0", 0) - before.get("0", 0) == 4
    assert after.get("3", 0) - before.get("3", 0) == 1
    metrics = proxy.metrics().decode()
    assert 'meshproxy_grpc_requests_total{cluster="echo",direction="outbound",grpc_status="3",listener="outbound",' \
           'route="echo"}' in metrics


def test_the_access_log_has_the_calls_grpc_status(proxy: Proxy) -> None:
    with EchoClient(proxy.address("outbound"), "echo") as client:
        error_of(lambda: client.echo(b"fail:logged", timeout=10))
    log: Path = proxy.log  # type: ignore[attr-defined]

    def logged() -> list[dict[str, Any]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]

    wait_until(lambda: any(line["grpc_status"] == 3 for line in logged()), what="the failed call's access log line")
    plain = httpx.get(f"http://{proxy.address('outbound')}/", timeout=10)
    assert "grpc-status" not in plain.headers


def h2c_call(address: str, path: str, message: bytes, headers: dict[str, str]) -> httpx.Response:
    """One gRPC-framed POST over h2c, with no deadline of the client's own."""
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        framed = struct.pack(">BI", 0, len(message)) + message
        return client.post(f"http://{address}{path}", content=framed,
                           headers={"content-type": "application/grpc", "te": "trailers", **headers})


def test_grpc_timeout_is_the_calls_deadline_answered_deadline_exceeded(proxy: Proxy) -> None:
    response = h2c_call(proxy.address("outbound"), "/test.Echo/Echo", b"sleep:3000", {"grpc-timeout": "200m"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/grpc"
    assert response.headers["grpc-status"] == "4"
    assert "did not answer within 200ms" in response.headers["grpc-message"]
    assert response.headers["x-meshproxy-error"] == "timeout"


def test_an_upstream_that_is_down_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = "{}:{}".format(*closed.getsockname())
    with Proxy(grpc_config(address)) as proxy, EchoClient(proxy.address("outbound"), "echo") as client:
        error = error_of(lambda: client.echo(b"hello", timeout=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert f"cannot connect to {address} of cluster 'echo'" in error.details()
        assert grpc_counts(proxy) == {"14": 1}
        plain = httpx.get(f"http://{proxy.address('outbound')}/", timeout=10)
        assert (plain.status_code, plain.headers["x-meshproxy-error"]) == (502, "connect_failure")


def test_a_trailers_only_unavailable_is_retried_as_the_policy_says(app: EchoApp) -> None:
    retry = {"retry_on": ["unavailable"], "attempts": 2, "backoff": {"base_interval": "1ms", "max_interval": "2ms"}}
    with Proxy(grpc_config(app.address, route={"retry": retry})) as proxy, EchoClient(proxy.address("outbound"), "echo") as client:
        calls_before = app.calls.get("Echo", 0)
        assert client.echo(b"flaky:retried", timeout=10) == b"flaky:retried"
        assert app.calls["Echo"] - calls_before == 2
        assert proxy.stats()["clusters"]["echo"]["retries_total"] == 1
        # Another status is not retried.
        assert error_of(lambda: client.echo(b"fail:once", timeout=10)).code() == grpc.StatusCode.INVALID_ARGUMENT
        assert proxy.stats()["clusters"]["echo"]["retries_total"] == 1
    with Proxy(grpc_config(app.address)) as proxy, EchoClient(proxy.address("outbound"), "echo") as client:
        assert error_of(lambda: client.echo(b"flaky:not-retried", timeout=10)).code() == grpc.StatusCode.UNAVAILABLE


def test_a_message_cut_by_the_upstream_closing_resets_that_call_only(app: EchoApp) -> None:
    cut = CutMessageUpstream(100, hang_up=True)
    config = grpc_config(app.address)
    config["listeners"][0]["routes"] = [
        {"name": "cut", "match": {"path_prefix": "/test.Cut/"}, "cluster": "cut"},
        {"name": "echo", "cluster": "echo"},
    ]
    config["clusters"].append({"name": "cut", "protocol": "http2", "endpoints": [{"address": cut.address}]})
    try:
        with Proxy(config) as proxy, EchoClient(proxy.address("outbound"), "echo") as client:
            cut_call = client.channel.unary_unary("/test.Cut/Echo", lambda b: b, lambda b: b)
            # A long call in flight on the same connection the whole time.
            chat = client.chat(iter([b"before"] + [b"after"]), timeout=10)
            error = error_of(lambda: cut_call(b"hello", timeout=10))
            # RFC 9113 §8.1: the response cannot complete; the proxy resets that stream, and
            # the client reads its own INTERNAL (a message cut short) or the reset's code.
            assert error.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
            assert list(chat) == [b"re:before", b"re:after"]
            assert client.echo(b"still served", timeout=10) == b"still served"
    finally:
        cut.close()


def test_hundreds_of_responses_arriving_at_once_keep_the_upstream_connection(tmp_path: Path) -> None:
    # Each gRPC response is a small DATA frame then trailers. h2 closes a connection holding
    # too many small DATA frames unread (ENHANCE_YOUR_CALM) relative to its window: with the
    # 64 KiB one of hyper's adaptive windows, ~140 such responses arriving together did it.
    calls = 400
    upstream = BatchUpstream(calls)
    config = grpc_config(upstream.address, limits={"max_concurrent_streams": 2 * calls})
    try:
        with Proxy(config) as proxy:
            client = H2Client(proxy.address("outbound"))
            framed = struct.pack(">BI", 0, 5) + b"hello"
            streams = []
            for _ in range(calls):
                stream_id = client.conn.get_next_available_stream_id()
                client.streams[stream_id] = StreamOutcome()
                client.conn.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"), (":authority", "echo"),
                                                     (":path", "/test.Echo/Echo"), ("content-type", "application/grpc"),
                                                     ("te", "trailers")])
                client.conn.send_data(stream_id, framed, end_stream=True)
                streams.append(stream_id)
                client.flush()
            client.read_until(lambda: all(client.streams[s].ended or client.streams[s].reset for s in streams))
            outcomes = [(client.streams[s].status, client.streams[s].body) for s in streams]
            client.close()
            assert outcomes == [(200, framed)] * calls
            assert proxy.stats()["clusters"]["echo"]["upstream_failures_total"] == 0
    finally:
        upstream.close()
