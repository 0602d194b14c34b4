"""What a drained listener still has once the drain timeout has passed is closed, as Envoy does
at the end of its drain time: an opaque TCP connection (to `redis-server`) and a WebSocket
tunnel, each ending with an access log line whose error is `drained`. For a listener a reload
removes, for an inbound listener `drain()` closes, and for every listener at `stop()`; and an
HTTP request still in progress then. Real peers: `redis-server` spoken to over a socket, the
`websockets` package, the test upstream's `/delay/MS`."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import access_lines
from meshproxy import Proxy
from tcp_peers import connect, redis_server
from upstreams import Upstream, wait_until
from websocket_app import EchoApp
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket_connect

DRAIN_TIMEOUT = 0.5


@pytest.fixture
def redis() -> Iterator[str]:
    with redis_server() as address:
        yield address


@pytest.fixture
def echo() -> Iterator[EchoApp]:
    app = EchoApp()
    yield app
    app.stop()


def config(redis: str, echo: EchoApp, other: Upstream, log: Path, direction: str = "outbound") -> dict[str, Any]:
    """A TCP listener to redis and an HTTP one to the WebSocket app (both in ``direction``),
    and one more that stays."""
    return {
        "admin": {"address": "127.0.0.1:0"},
        "access_log": {"path": str(log)},
        "listeners": [
            {"name": "redis", "address": "127.0.0.1:0", "protocol": "tcp", "direction": direction,
             "routes": [{"cluster": "redis"}]},
            {"name": "chat", "address": "127.0.0.1:0", "protocol": "http1", "direction": direction,
             "routes": [{"cluster": "chat"}]},
            {"name": "other", "address": "127.0.0.1:0", "routes": [{"cluster": "other"}]},
        ],
        "clusters": [
            {"name": "redis", "protocol": "tcp", "endpoints": [{"address": redis}]},
            {"name": "chat", "endpoints": [{"address": echo.address}]},
            {"name": "other", "endpoints": [{"address": other.address}]},
        ],
    }


def ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


def open_websocket(proxy_address: str) -> ClientConnection:
    host, port = proxy_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return websocket_connect("ws://chat.local/room", sock=sock, open_timeout=10, close_timeout=10, ping_interval=None)


class OpenPair:
    """A redis connection through the ``redis`` listener and a WebSocket through ``chat``, both
    shown working."""

    def __init__(self, proxy: Proxy, stack: contextlib.ExitStack) -> None:
        self.redis = stack.enter_context(connect(proxy.address("redis"), timeout=30))
        assert ping(self.redis) == b"+PONG\r\n"
        self.websocket = stack.enter_context(open_websocket(proxy.address("chat")))
        self.websocket.send("hello")
        assert self.websocket.recv(timeout=10) == "echo: hello"

    def assert_closed_by_the_proxy(self) -> None:
        """Both end, though neither the client nor the peer closed them."""
        try:
            assert self.redis.recv(64) == b"", "redis connection closed"
        except ConnectionResetError:
            pass
        with pytest.raises(ConnectionClosed):
            self.websocket.recv(timeout=30)


def drained_lines(log: Path) -> list[tuple[str, str | None]]:
    return sorted((line["listener"], line["error"]) for line in access_lines(log) if line["error"] == "drained")


def test_a_reload_removing_listeners_closes_their_tcp_connections_and_tunnels_after_the_drain_timeout(
        redis: str, echo: EchoApp, upstreams: Any, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    first = config(redis, echo, upstreams("v1"), log)
    with Proxy(first, drain_timeout=DRAIN_TIMEOUT) as proxy, contextlib.ExitStack() as stack:
        pair = OpenPair(proxy, stack)
        proxy.reload({**first, "listeners": first["listeners"][2:]})
        pair.assert_closed_by_the_proxy()
        wait_until(lambda: len(drained_lines(log)) == 2, what="an access log line for each closed connection")
        assert drained_lines(log) == [("chat", "drained"), ("redis", "drained")]
        assert proxy.stats()["errors"]["drained"] == 2
        # The listener that stayed serves on.
        assert proxy.address("other")


def test_drain_closes_what_inbound_listeners_still_have_after_the_drain_timeout(
        redis: str, echo: EchoApp, upstreams: Any, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    inbound = config(redis, echo, upstreams("v1"), log, direction="inbound")
    with Proxy(inbound, drain_timeout=DRAIN_TIMEOUT) as proxy, contextlib.ExitStack() as stack:
        pair = OpenPair(proxy, stack)
        proxy.drain()
        pair.assert_closed_by_the_proxy()
        wait_until(lambda: len(drained_lines(log)) == 2, what="an access log line for each closed connection")


def test_stop_closes_what_is_still_open_at_the_end_of_the_drain_and_logs_it(
        redis: str, echo: EchoApp, upstreams: Any, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    proxy = Proxy(config(redis, echo, upstreams("v1"), log), drain_timeout=DRAIN_TIMEOUT).start()
    with contextlib.ExitStack() as stack:
        pair = OpenPair(proxy, stack)
        proxy.stop()
        # The lines are written before stop() returns.
        assert drained_lines(log) == [("chat", "drained"), ("redis", "drained")]
        pair.assert_closed_by_the_proxy()


def test_stop_waits_for_a_websocket_alone_then_closes_it_and_logs_it(
        redis: str, echo: EchoApp, upstreams: Any, tmp_path: Path) -> None:
    """An HTTP/1.1 connection handed over to its tunnel counts as open: the drain waits for it."""
    log = tmp_path / "access.jsonl"
    proxy = Proxy(config(redis, echo, upstreams("v1"), log), drain_timeout=DRAIN_TIMEOUT).start()
    with open_websocket(proxy.address("chat")) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=10) == "echo: hello"
        assert proxy.stats()["listeners"]["chat"]["connections_active"] == 1
        proxy.stop()
        assert drained_lines(log) == [("chat", "drained")]
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=30)


def test_a_request_still_in_progress_when_the_drain_ends_is_cut(upstreams: Any) -> None:
    """A response that goes on past the drain timeout is cut, as a shutdown cuts it."""
    slow, stays = upstreams("v1"), upstreams("v2")
    first = {
        "listeners": [{"name": "slow", "address": "127.0.0.1:0", "routes": [{"cluster": "slow"}]},
                      {"name": "other", "address": "127.0.0.1:0", "routes": [{"cluster": "other"}]}],
        "clusters": [{"name": "slow", "endpoints": [{"address": slow.address}]},
                     {"name": "other", "endpoints": [{"address": stays.address}]}],
    }
    with Proxy(first, drain_timeout=DRAIN_TIMEOUT) as proxy, connect(proxy.address("slow"), timeout=60) as sock:
        sock.sendall(b"GET /delay/60000 HTTP/1.1\r\nHost: slow\r\n\r\n")
        wait_until(lambda: proxy.stats()["clusters"]["slow"]["upstream_requests_total"] == 1,
                   what="the request to reach the app")
        proxy.reload({**first, "listeners": first["listeners"][1:]})
        try:
            assert sock.recv(65536) == b"", "no response: the connection closed"
        except ConnectionResetError:
            pass
