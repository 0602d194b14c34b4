"""CONNECT to the destination the client names (a cluster with `original_destination: true`,
Envoy's dynamic forward proxy), allowed by the route's `host` and `ports`; and tunnels (CONNECT,
WebSocket) holding their place under the cluster's circuit breakers while they are open. Real
peers: curl told `HTTPS_PROXY`, `openssl s_server`, the `websockets` package."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import access_lines, one_route_config
from meshproxy import Proxy
from tcp_peers import connect, echo_server
from tls_peers import https_proxy_curl, openssl_server
from upstreams import wait_until
from websocket_app import EchoApp
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket_connect

UNRESOLVABLE = "no-such-host.invalid"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    with openssl_server(tmp_path) as address:
        yield address


def forward_proxy_config(port: int, log: Path) -> dict[str, Any]:
    """CONNECT to 127.0.0.1 or localhost on the server's port, and to a name that resolves to
    nothing, each to where it names: an egress proxy's allow list."""
    return one_route_config(
        {"name": "egress", "original_destination": True},
        routes=[
            {"name": "by-address", "match": {"connect": True, "host": "127.0.0.1", "ports": [port]}, "cluster": "egress"},
            {"name": "by-name", "match": {"connect": True, "host": "localhost", "ports": [port]}, "cluster": "egress"},
            {"name": "nowhere", "match": {"connect": True, "host": UNRESOLVABLE}, "cluster": "egress"},
        ],
        admin={"address": "127.0.0.1:0"}, access_log={"path": str(log)})


def test_a_connect_to_a_passthrough_cluster_goes_where_it_names_by_address_and_by_name(
        tls_server: str, tmp_path: Path) -> None:
    port = int(tls_server.rsplit(":", 1)[1])
    log = tmp_path / "access.jsonl"
    with Proxy(forward_proxy_config(port, log)) as proxy:
        outbound = proxy.address("outbound")
        for host in ("127.0.0.1", "localhost"):
            reached = https_proxy_curl(outbound, f"https://{host}:{port}/")
            assert reached.returncode == 0, reached.stderr
            assert "s_server" in reached.stdout
        # A port, or a host, the routes do not allow: refused before any connection is made.
        for url in (f"https://127.0.0.1:{port + 1}/", f"https://127.0.0.2:{port}/"):
            refused = https_proxy_curl(outbound, url)
            assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
        unresolved = https_proxy_curl(outbound, f"https://{UNRESOLVABLE}:{port}/")
        assert unresolved.returncode != 0 and "503" in unresolved.stderr, unresolved.stderr
        stats = proxy.stats()
        wait_until(lambda: len(access_lines(log)) == 5, what="an access log line per CONNECT")
    assert stats["listeners"]["outbound"]["connects_total"] == 2
    assert stats["clusters"]["egress"]["tunnels_total"] == 2
    assert (stats["errors"]["connect_denied"], stats["errors"]["dns_failure"]) == (2, 1)
    by_route = {line["route"]: line for line in access_lines(log) if line["route"]}
    assert by_route["by-address"]["upstream_address"] == f"127.0.0.1:{port}"
    # The name's addresses are tried in turn: the server listens on IPv4 only.
    assert by_route["by-name"]["upstream_address"] == f"127.0.0.1:{port}"
    assert (by_route["by-address"]["status"], by_route["by-name"]["status"]) == (200, 200)
    assert (by_route["nowhere"]["status"], by_route["nowhere"]["error"]) == (503, "dns_failure")


@pytest.mark.parametrize("target", ["localhost", "localhost:0"])
def test_a_connect_to_a_passthrough_cluster_without_a_port_is_a_bad_request(target: str) -> None:
    config = one_route_config({"name": "egress", "original_destination": True},
                              routes=[{"match": {"connect": True, "host": "localhost"}, "cluster": "egress"}])
    with Proxy(config) as proxy:
        sock, answer = connect_through(proxy.address("outbound"), target)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"x-meshproxy-error: bad_request" in answer
        # The listener serves on.
        sock, answer = connect_through(proxy.address("outbound"), "127.0.0.1:1")
        sock.close()
        assert answer.startswith(b"HTTP/1.1 403 "), answer


def test_a_connect_to_an_ipv6_address_goes_there(tmp_path: Path) -> None:
    with openssl_server(tmp_path, ipv6=True) as server:
        port = int(server.rsplit(":", 1)[1])
        config = one_route_config({"name": "egress", "original_destination": True},
                                  routes=[{"match": {"connect": True, "ports": [port]}, "cluster": "egress"}])
        with Proxy(config) as proxy:
            reached = https_proxy_curl(proxy.address("outbound"), f"https://[::1]:{port}/")
            assert reached.returncode == 0, reached.stderr
            assert "s_server" in reached.stdout


def test_an_http2_connect_to_a_passthrough_cluster_carries_bytes_both_ways() -> None:
    """RFC 9113 §8.5: `:method CONNECT` and `:authority`, no `:scheme` nor `:path`."""
    with echo_server() as echo:
        port = int(echo.rsplit(":", 1)[1])
        config = one_route_config({"name": "egress", "original_destination": True}, protocol="http2",
                                  routes=[{"match": {"connect": True, "host": "localhost", "ports": [port]},
                                           "cluster": "egress"}])
        with Proxy(config) as proxy, connect(proxy.address("outbound")) as sock:
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            stream = client.get_next_available_stream_id()
            client.send_headers(stream, [(":method", "CONNECT"), (":authority", f"localhost:{port}")])
            sock.sendall(client.data_to_send())
            status, echoed = None, b""
            while status is None or echoed != b"ping":
                for event in client.receive_data(sock.recv(65536)):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                        assert status == b"200", event.headers
                        client.send_data(stream, b"ping")
                    elif isinstance(event, h2.events.DataReceived):
                        echoed += event.data
                        client.acknowledge_received_data(event.flow_controlled_length, stream)
                    elif isinstance(event, h2.events.StreamReset):
                        pytest.fail(f"stream reset: {event}")
                sock.sendall(client.data_to_send())


def test_a_connect_route_may_send_to_a_tcp_cluster(tls_server: str) -> None:
    """A tunnel is opaque TCP: a CONNECT route's cluster may be a tcp one (an HTTP route's may not)."""
    port = int(tls_server.rsplit(":", 1)[1])
    config = one_route_config(
        {"name": "tls-server", "protocol": "tcp", "endpoints": [{"address": tls_server}]},
        routes=[{"match": {"connect": True, "host": "tls.example", "ports": [port]}, "cluster": "tls-server"}])
    with Proxy(config) as proxy:
        reached = https_proxy_curl(proxy.address("outbound"), f"https://tls.example:{port}/")
        assert reached.returncode == 0, reached.stderr
        assert "s_server" in reached.stdout


def connect_through(proxy_address: str, destination: str) -> tuple[socket.socket, bytes]:
    """Sends ``CONNECT destination`` on a new connection; returns it with the answer's head."""
    host, port = proxy_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def test_an_open_connect_tunnel_holds_its_place_under_max_connections(tls_server: str) -> None:
    port = int(tls_server.rsplit(":", 1)[1])
    config = one_route_config(
        {"name": "tls-server", "endpoints": [{"address": tls_server}], "circuit_breakers": {"max_connections": 1}},
        routes=[{"match": {"connect": True, "ports": [port]}, "cluster": "tls-server"}])
    with Proxy(config) as proxy:
        first, answer = connect_through(proxy.address("outbound"), tls_server)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        second, refused = connect_through(proxy.address("outbound"), tls_server)
        second.close()
        assert refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"x-meshproxy-error: overflow" in refused.lower()
        assert proxy.stats()["clusters"]["tls-server"]["overflow_total"] == 1
        # The first tunnel ends: its place is free again.
        first.close()
        def third_opens() -> bool:
            sock, head = connect_through(proxy.address("outbound"), tls_server)
            sock.close()
            return head.startswith(b"HTTP/1.1 200 ")
        wait_until(third_opens, what="a tunnel once the first one has closed")


def open_websocket(proxy_address: str) -> ClientConnection:
    host, port = proxy_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return websocket_connect("ws://chat.local/room", sock=sock, open_timeout=10, close_timeout=10)


@pytest.mark.parametrize("limit", ["max_connections", "max_requests"])
def test_an_open_websocket_holds_its_place_under_the_circuit_breakers(limit: str) -> None:
    echo = EchoApp()
    config = one_route_config(
        {"name": "chat", "endpoints": [{"address": echo.address}], "circuit_breakers": {limit: 1}},
        protocol="http1", admin={"address": "127.0.0.1:0"})
    try:
        with Proxy(config) as proxy:
            with open_websocket(proxy.address("outbound")) as first:
                first.send("hello")
                assert first.recv(timeout=10) == "echo: hello"
                with pytest.raises(InvalidStatus) as refused, open_websocket(proxy.address("outbound")):
                    pass
                assert refused.value.response.status_code == 503
                assert refused.value.response.headers["x-meshproxy-error"] == "overflow"
            # The first one has closed: its place is free again.
            def another_opens() -> bool:
                try:
                    with open_websocket(proxy.address("outbound")):
                        return True
                except InvalidStatus:
                    return False
            wait_until(another_opens, what="a WebSocket once the first one has closed")
    finally:
        echo.stop()
