"""Opaque TCP through meshproxy, with real peers on loopback: Debian's ``redis-server`` used by
redis-py and ``redis-cli`` through a ``tcp`` listener and through an mTLS hop between two
sidecars (authorized by the caller's SPIFFE ID), a peer that answers after a half-close, and
protocol detection on an ``auto`` listener: HTTP/1.1 and h2c served as HTTP, redis (a
client-first protocol) and a TLS ClientHello sent to ``tcp_fallback`` at once, and a silent
client given to ``tcp_fallback`` after ``detect_timeout``, where it hears the server's banner. A
listener's ``rate_limit`` admits connections by its token bucket."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import ProxyProcess, Upstream, closed_port_address, wait_until
from tcp_peers import (
    BANNER,
    answer_after_eof_server,
    banner_server,
    connect,
    echo_server,
    read_to_end,
    redis_server,
)

Run = Callable[..., ProxyProcess]


@pytest.fixture(scope="module")
def redis_address() -> Iterator[str]:
    with redis_server() as address:
        yield address


def tcp_config(*endpoints: str, tmp_path: Path, **cluster: Any) -> dict[str, Any]:
    return {
        "admin": {"address": "127.0.0.1:0"},
        "access_log": {"path": str(tmp_path / "access.jsonl")},
        "listeners": [{"name": "redis", "address": "127.0.0.1:0", "protocol": "tcp", "routes": [{"cluster": "redis"}]}],
        "clusters": [{"name": "redis", "protocol": "tcp", "endpoints": [{"address": a} for a in endpoints], **cluster}],
    }


def client(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=10, single_connection_client=True)


def stats(proxy: ProxyProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()
    return document


def log_lines(tmp_path: Path, count: int) -> list[dict[str, Any]]:
    path = tmp_path / "access.jsonl"
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= count, what=f"{count} access log lines")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_redis_through_a_tcp_listener_is_counted_and_logged_per_connection(
        redis_address: str, meshproxy_run: Run, tmp_path: Path) -> None:
    proxy = meshproxy_run(tcp_config(redis_address, tmp_path=tmp_path))
    with client(proxy.address("redis")) as r:
        assert r.set("greeting", "hello through the sidecar")
        assert r.get("greeting") == b"hello through the sidecar"
        assert r.incr("counter") == 1
    [line] = log_lines(tmp_path, 1)
    assert (line["protocol"], line["listener"], line["cluster"], line["upstream_address"], line["error"]) == (
        "TCP", "redis", "redis", redis_address, None)
    assert line["bytes_in"] > 0 and line["bytes_out"] > 0 and line["method"] is None
    document = stats(proxy)
    listener, cluster = document["listeners"]["redis"], document["clusters"]["redis"]
    assert (listener["tcp_bytes_received_total"], listener["tcp_bytes_sent_total"]) == (line["bytes_in"], line["bytes_out"])
    assert (cluster["tcp_connections_total"], cluster["tcp_bytes_sent_total"], cluster["tcp_bytes_received_total"]) == (
        1, line["bytes_in"], line["bytes_out"])
    metrics = httpx.get(f"http://{proxy.admin}/metrics", timeout=10).text
    assert 'meshproxy_upstream_tcp_connections_total{cluster="redis"} 1.0' in metrics


def test_redis_cli_through_a_tcp_listener(redis_address: str, meshproxy_run: Run, tmp_path: Path) -> None:
    proxy = meshproxy_run(tcp_config(redis_address, tmp_path=tmp_path))
    host, port = proxy.address("redis").rsplit(":", 1)
    answer = subprocess.run(["redis-cli", "-h", host, "-p", port, "PING"], capture_output=True, text=True, timeout=30)
    assert answer.stdout.strip() == "PONG"


def test_a_half_close_is_passed_on_and_the_answer_still_comes_back(meshproxy_run: Run, tmp_path: Path) -> None:
    with answer_after_eof_server() as server:
        proxy = meshproxy_run(tcp_config(server, tmp_path=tmp_path))
        with connect(proxy.address("redis")) as sock:
            sock.sendall(b"stressed")
            sock.shutdown(socket.SHUT_WR)
            assert read_to_end(sock) == b"after your FIN: desserts"


def test_a_failed_connect_is_tried_again_on_another_endpoint(meshproxy_run: Run, tmp_path: Path) -> None:
    down = closed_port_address()
    with echo_server() as up:
        proxy = meshproxy_run(tcp_config(down, up, tmp_path=tmp_path, lb="round_robin"))
        for _ in range(4):
            with connect(proxy.address("redis")) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
    # Round robin per worker: which connections met the closed port first depends on the workers.
    assert 1 <= stats(proxy)["clusters"]["redis"]["connect_failures_total"] <= 4
    assert {line["upstream_address"] for line in log_lines(tmp_path, 4)} == {up}


def test_an_endpoint_that_is_down_closes_the_connection_counted_and_logged(meshproxy_run: Run, tmp_path: Path) -> None:
    proxy = meshproxy_run(tcp_config(closed_port_address(), tmp_path=tmp_path))
    with connect(proxy.address("redis")) as sock:
        assert read_to_end(sock) == b"", "closed without a byte"
    [line] = log_lines(tmp_path, 1)
    assert (line["error"], line["bytes_in"]) == ("connect_failure", 0)
    assert stats(proxy)["errors"]["connect_failure"] == 1


# --- protocol detection on an auto listener ------------------------------------------------


def auto_config(fallback: str, app: Upstream, tmp_path: Path, **listener: Any) -> dict[str, Any]:
    return {
        "admin": {"address": "127.0.0.1:0"},
        "access_log": {"path": str(tmp_path / "access.jsonl")},
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "protocol": "auto", "tcp_fallback": "legacy",
                       "routes": [{"cluster": "app"}], **listener}],
        "clusters": [{"name": "legacy", "protocol": "tcp", "endpoints": [{"address": fallback}]},
                     {"name": "app", "endpoints": [{"address": app.address}]}],
    }


def test_a_silent_client_hears_the_server_first_banner_after_detect_timeout(
        upstreams: Callable[[str], Upstream], meshproxy_run: Run, tmp_path: Path) -> None:
    with banner_server() as smtp:
        proxy = meshproxy_run(auto_config(smtp, upstreams("app"), tmp_path, detect_timeout="100ms"))
        with connect(proxy.address("outbound")) as sock:
            assert sock.recv(1024) == BANNER
            sock.sendall(b"EHLO client\r\n")
            assert sock.recv(1024) == b"250 EHLO client\r\n"
    [line] = log_lines(tmp_path, 1)
    assert (line["protocol"], line["cluster"], line["upstream_address"]) == ("TCP", "legacy", smtp)


def test_redis_cli_goes_to_tcp_fallback_and_http_on_the_same_listener_is_served_as_http(
        redis_address: str, upstreams: Callable[[str], Upstream], meshproxy_run: Run, tmp_path: Path) -> None:
    # A long detect_timeout: redis is told apart by its first bytes, not by waiting.
    proxy = meshproxy_run(auto_config(redis_address, upstreams("app"), tmp_path, detect_timeout="30s"))
    host, port = proxy.address("outbound").rsplit(":", 1)
    answer = subprocess.run(["redis-cli", "-h", host, "-p", port, "PING"], capture_output=True, text=True, timeout=20)
    assert answer.stdout.strip() == "PONG"
    with httpx.Client(timeout=10) as http1:
        response = http1.get(f"http://{proxy.address('outbound')}/anything")
        assert (response.status_code, response.http_version) == (200, "HTTP/1.1")
    with httpx.Client(timeout=10, http1=False, http2=True) as h2c:
        response = h2c.get(f"http://{proxy.address('outbound')}/anything")
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
    protocols = sorted(line["protocol"] for line in log_lines(tmp_path, 3))
    assert protocols == ["HTTP/1.1", "HTTP/2", "TCP"]


def test_tls_the_listener_does_not_terminate_passes_through_to_tcp_fallback(
        upstreams: Callable[[str], Upstream], meshproxy_run: Run, tmp_path: Path) -> None:
    with echo_server() as echo:
        proxy = meshproxy_run(auto_config(echo, upstreams("app"), tmp_path, detect_timeout="30s"))
        hello = bytes([0x16, 0x03, 0x01, 0x00, 0x04]) + b"mock"
        with connect(proxy.address("outbound")) as sock:
            sock.sendall(hello)
            assert sock.recv(1024) == hello


def test_without_tcp_fallback_an_auto_listener_serves_http_only(
        upstreams: Callable[[str], Upstream], meshproxy_run: Run, tmp_path: Path) -> None:
    config = auto_config("127.0.0.1:1", upstreams("app"), tmp_path)
    del config["listeners"][0]["tcp_fallback"]
    proxy = meshproxy_run(config)
    with connect(proxy.address("outbound")) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert read_to_end(sock).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"http://{proxy.address('outbound')}/anything", timeout=10).status_code == 200


def test_max_connections_closes_a_connection_over_the_limit(meshproxy_run: Run, tmp_path: Path) -> None:
    with echo_server() as echo:
        proxy = meshproxy_run(tcp_config(echo, tmp_path=tmp_path, circuit_breakers={"max_connections": 1}))
        with connect(proxy.address("redis")) as first:
            first.sendall(b"hold")
            assert first.recv(4) == b"hold"
            with connect(proxy.address("redis")) as second:
                assert read_to_end(second) == b"", "over max_connections: closed at once"
    assert stats(proxy)["clusters"]["redis"]["overflow_total"] == 1
    assert [line["error"] for line in log_lines(tmp_path, 2)] == ["overflow", None]


def test_a_quiet_connection_is_closed_after_the_listeners_idle_timeout(meshproxy_run: Run, tmp_path: Path) -> None:
    with echo_server() as echo:
        config = tcp_config(echo, tmp_path=tmp_path)
        config["listeners"][0]["idle_timeout"] = "200ms"
        proxy = meshproxy_run(config)
        with connect(proxy.address("redis")) as sock:
            sock.sendall(b"once")
            assert sock.recv(4) == b"once"
            assert read_to_end(sock) == b"", "closed once quiet for idle_timeout"
    [line] = log_lines(tmp_path, 1)
    assert (line["error"], line["bytes_in"], line["bytes_out"]) == ("timeout", 4, 4)


def echoed(address: str) -> bool:
    """Whether a new connection to ``address`` carries bytes (False: it was closed at once)."""
    with connect(address) as sock:
        try:
            sock.sendall(b"ping")
            return sock.recv(4) == b"ping"
        except ConnectionResetError:  # closed with our bytes unread: a reset rather than a FIN
            return False


def test_a_listener_rate_limit_admits_connections_by_its_token_bucket(meshproxy_run: Run, tmp_path: Path) -> None:
    with echo_server() as echo:
        config = tcp_config(echo, tmp_path=tmp_path)
        config["listeners"][0]["rate_limit"] = {"requests_per_second": 1, "burst": 2}
        proxy = meshproxy_run(config)
        started = time.monotonic()
        admitted = [echoed(proxy.address("redis")) for _ in range(8)]
        elapsed = time.monotonic() - started
    # A full bucket admits its burst at once; then one connection a second comes back.
    assert admitted[:2] == [True, True]
    assert sum(admitted) <= 2 + math.ceil(elapsed)
    refused = admitted.count(False)
    assert refused >= 1
    document = stats(proxy)
    assert document["errors"]["rate_limited"] == refused
    [rules] = [r for r in document["route_rules"] if (r["listener"], r["route"]) == ("redis", "")]
    assert rules["rate_limited_total"] == refused
    lines = log_lines(tmp_path, 8)
    assert [line["error"] == "rate_limited" for line in lines].count(True) == refused
    assert all(line["upstream_address"] is None for line in lines if line["error"] == "rate_limited")
