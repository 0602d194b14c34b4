"""A route's `idle_timeout` and `timeout_covers`, and a cluster's `idle_timeout`, against an
upstream that stalls (before its head, or after it mid-body), one that trickles its body, and
one that notes when the proxy closes a pooled connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import ProxyProcess, metric_value, one_route_config, wait_until
from raw_upstream import RawUpstream

IDLE = "300ms"
TRICKLE_CHUNKS = 12
TRICKLE_EVERY_S = 0.1


class ScriptedUpstream(RawUpstream):
    """HTTP/1.1 on a raw socket, answering by path: `/silent` never answers, `/stall` sends its
    head and 5 of 100 bytes then nothing, `/trickle` sends a chunk every 0.1 s (1.2 s in all),
    anything else `ok`. Counts the connections it accepted and those the proxy closed."""

    def __init__(self) -> None:
        self.closed_by_proxy = 0
        self._stop = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            pending = b""
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.closed_by_proxy += 1
                    return
                pending += data
                while b"\r\n\r\n" in pending:
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    path = head.split(b" ", 2)[1]
                    if not self._answer(conn, path):
                        return

    def _answer(self, conn: socket.socket, path: bytes) -> bool:
        """Answers one request; False when the connection is done."""
        try:
            if path == b"/silent":
                self._stop.wait(30)
                return False
            if path == b"/stall":
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                self._stop.wait(30)
                return False
            if path == b"/trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for _ in range(TRICKLE_CHUNKS):
                    time.sleep(TRICKLE_EVERY_S)
                    conn.sendall(b"1\r\nx\r\n")
                conn.sendall(b"0\r\n\r\n")
                return True
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            return True
        except OSError:
            return False

    def close(self) -> None:
        self._stop.set()
        super().close()


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    yield upstream
    upstream.close()


def start(meshproxy_run: Callable[..., ProxyProcess], upstream: ScriptedUpstream, route: dict[str, Any],
          cluster: dict[str, Any] | None = None) -> ProxyProcess:
    config = one_route_config(
        {"name": "app", "endpoints": [{"address": upstream.address}], **(cluster or {})},
        routes=[{"cluster": "app", **route}],
        admin={"address": "127.0.0.1:0"},
        # One worker, one pool: each request finds the connection the last one left.
        workers=1,
    )
    return meshproxy_run(config)


def read_body(address: str, path: str, http2: bool = False) -> tuple[int, bytes, str | None]:
    """Status, body read as far as it goes, and the error that cut it (None if it ended); over
    h2c with prior knowledge with ``http2``."""
    client = httpx.Client(timeout=20, http1=not http2, http2=http2)
    with client, client.stream("GET", f"http://{address}{path}") as response:
        body = b""
        try:
            for chunk in response.iter_raw():
                body += chunk
        except httpx.HTTPError as cut:
            return response.status_code, body, type(cut).__name__
        return response.status_code, body, None


def timeouts(proxy: ProxyProcess) -> float:
    assert proxy.admin is not None
    return metric_value(proxy.admin, "meshproxy_upstream_timeouts_total")


def test_idle_timeout_answers_504_when_the_upstream_is_silent_before_its_head(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {"idle_timeout": IDLE})
    response = httpx.get(f"http://{proxy.address('outbound')}/silent", timeout=20)
    assert response.status_code == 504
    assert response.headers["x-meshproxy-error"] == "timeout"
    assert "idle_timeout" in response.text
    assert timeouts(proxy) == 1


def test_idle_timeout_cuts_a_body_that_stalls_after_the_head(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {"idle_timeout": IDLE})
    status, body, cut = read_body(proxy.address("outbound"), "/stall")
    assert status == 200
    assert body == b"hello"
    assert cut is not None, "the stalled body ended as if complete"
    assert timeouts(proxy) == 1


def test_idle_timeout_resets_an_http2_clients_stream_that_stalls_after_the_head(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {"idle_timeout": IDLE})
    status, body, cut = read_body(proxy.address("outbound"), "/stall", http2=True)
    assert (status, body) == (200, b"hello")
    assert cut is not None, "the stalled body ended as if complete"
    assert timeouts(proxy) == 1


def test_idle_timeout_lets_a_trickling_body_finish(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    # 1.2 s in all, four times the idle timeout, but never 300 ms without a byte.
    proxy = start(meshproxy_run, scripted, {"idle_timeout": IDLE})
    status, body, cut = read_body(proxy.address("outbound"), "/trickle")
    assert (status, cut) == (200, None)
    assert body == b"x" * TRICKLE_CHUNKS
    assert timeouts(proxy) == 0


def test_a_timeout_covering_the_response_cuts_a_body_that_runs_past_it(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {"timeout": "500ms", "timeout_covers": "response"})
    status, body, cut = read_body(proxy.address("outbound"), "/trickle")
    assert status == 200
    assert cut is not None
    assert 0 < len(body) < TRICKLE_CHUNKS
    assert timeouts(proxy) == 1


def test_a_timeout_covering_the_headers_lets_the_same_body_finish(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {"timeout": "500ms"})
    status, body, cut = read_body(proxy.address("outbound"), "/trickle")
    assert (status, cut, body) == (200, None, b"x" * TRICKLE_CHUNKS)
    assert timeouts(proxy) == 0


def test_a_pooled_connection_is_closed_after_the_clusters_idle_timeout(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {}, {"idle_timeout": IDLE})
    assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).text == "ok"
    assert scripted.accepted == 1
    # The upstream sees the proxy close its end, with no request to prompt it.
    wait_until(lambda: scripted.closed_by_proxy == 1, timeout=10)
    # The next request opens a new connection.
    assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).text == "ok"
    assert scripted.accepted == 2


def test_the_default_cluster_idle_timeout_keeps_a_pooled_connection(
        meshproxy_run: Callable[..., ProxyProcess], scripted: ScriptedUpstream) -> None:
    proxy = start(meshproxy_run, scripted, {})
    for _ in range(2):
        assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).text == "ok"
        time.sleep(0.5)
    assert (scripted.accepted, scripted.closed_by_proxy) == (1, 0)


class Http2Upstream(RawUpstream):
    """h2c on a raw socket: answers every request `ok`, and counts the connections it accepted
    and those the proxy ended (GOAWAY or close)."""

    def __init__(self) -> None:
        self.ended_by_proxy = 0
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events

        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        with conn:
            conn.sendall(server.data_to_send())
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                events = server.receive_data(data) if data else []
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        server.send_headers(event.stream_id, [(":status", "200"), ("content-length", "2")])
                        server.send_data(event.stream_id, b"ok", end_stream=True)
                try:
                    conn.sendall(server.data_to_send())
                except OSError:
                    data = b""
                if not data or any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                    self.ended_by_proxy += 1
                    return



def test_an_unused_http2_connection_is_let_go_of_after_the_clusters_idle_timeout(
        meshproxy_run: Callable[..., ProxyProcess]) -> None:
    upstream = Http2Upstream()
    try:
        config = one_route_config({"name": "app", "protocol": "http2", "idle_timeout": IDLE,
                                   "endpoints": [{"address": upstream.address}]}, workers=1)
        proxy = meshproxy_run(config)
        assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).text == "ok"
        assert upstream.accepted == 1
        wait_until(lambda: upstream.ended_by_proxy == 1, timeout=10)
        assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).text == "ok"
        assert upstream.accepted == 2
    finally:
        upstream.close()
