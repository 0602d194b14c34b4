"""A listener's `idle_timeout`: a connection that moves no byte for that long is closed; one
that keeps moving stays open."""

from __future__ import annotations

import socket
import time
from typing import Callable

import h2.config
import h2.connection
from conftest import Upstream, one_route_config
from meshproxy import Proxy

IDLE_TIMEOUT_S = 0.4


def idle_proxy(upstream: Upstream, idle_timeout: str = f"{int(IDLE_TIMEOUT_S * 1000)}ms") -> Proxy:
    config = one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]})
    config["listeners"][0]["idle_timeout"] = idle_timeout
    return Proxy(config)


def closed_after(connection: socket.socket, limit_s: float) -> float | None:
    """Seconds until the proxy closed ``connection`` (EOF or reset), or None if it was still open
    after ``limit_s``."""
    started = time.monotonic()
    connection.settimeout(limit_s)
    try:
        while connection.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def get(connection: socket.socket) -> bytes:
    connection.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    connection.settimeout(5)
    answer = b""
    while not _complete(answer):
        chunk = connection.recv(65536)
        assert chunk, f"closed mid-answer: {answer!r}"
        answer += chunk
    return answer


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return len(body) >= length


def test_a_silent_connection_is_closed_after_the_idle_timeout(upstreams: Callable[[str], Upstream]) -> None:
    with idle_proxy(upstreams("v1")) as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as silent:
            took = closed_after(silent, limit_s=10)
    assert took is not None, "still open after 10 s"
    # Closed after the timeout, and within a quarter more (plus scheduling slack).
    assert took >= IDLE_TIMEOUT_S * 0.9, took


def test_a_keep_alive_connection_in_use_stays_open_and_closes_once_idle(upstreams: Callable[[str], Upstream]) -> None:
    with idle_proxy(upstreams("v1")) as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as client:
            # Requests every 0.1 s for three timeouts' time, all on one connection.
            deadline = time.monotonic() + IDLE_TIMEOUT_S * 3
            requests = 0
            while time.monotonic() < deadline:
                assert get(client).startswith(b"HTTP/1.1 200"), "the connection broke while in use"
                requests += 1
                time.sleep(0.1)
            took = closed_after(client, limit_s=10)
    assert requests >= 5
    assert took is not None, "still open after 10 s of quiet"


def test_an_http2_connection_is_closed_once_idle(upstreams: Callable[[str], Upstream]) -> None:
    with idle_proxy(upstreams("v1")) as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as client:
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            h2c.initiate_connection()
            client.sendall(h2c.data_to_send())
            took = closed_after(client, limit_s=10)
    assert took is not None, "still open after 10 s"


def test_zero_keeps_a_silent_connection_open(upstreams: Callable[[str], Upstream]) -> None:
    with idle_proxy(upstreams("v1"), idle_timeout="0s") as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as silent:
            assert closed_after(silent, limit_s=IDLE_TIMEOUT_S * 3) is None
