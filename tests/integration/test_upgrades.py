"""WebSocket upgrades and CONNECT tunnels through one proxy, with real peers: the `websockets`
package (client and app), an RFC 8441 client written with the `h2` package, curl through
`HTTPS_PROXY` to `openssl s_server`; and the malformed cases, each answered without harming
other connections."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
from conftest import access_lines, closed_port_address, one_route_config
from meshproxy import Proxy
from tls_peers import https_proxy_curl, openssl_server
from upstreams import Upstream, wait_until
from websocket_app import CannedApp, EchoApp, client_frame, close_frame, server_frame, settings_of
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as websocket_connect


@pytest.fixture
def echo() -> Iterator[EchoApp]:
    app = EchoApp()
    yield app
    app.stop()


def websocket_config(app_address: str, protocol: str = "auto", **top: Any) -> dict[str, Any]:
    return one_route_config({"name": "chat", "endpoints": [{"address": app_address}]}, protocol=protocol,
                            admin={"address": "127.0.0.1:0"}, **top)


def chat(proxy_address: str, *messages: str, close_code: int = 4001) -> list[str]:
    """Sends each message through the proxy and returns the app's answers; closes with ``close_code``."""
    host, port = proxy_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    with websocket_connect("ws://chat.local/room/1", sock=sock, open_timeout=10, close_timeout=10) as session:
        answers = []
        for message in messages:
            session.send(message)
            answers.append(str(session.recv(timeout=10)))
        session.close(code=close_code, reason="done")
    return answers


@pytest.mark.parametrize("listener", ["http1", "auto"])
def test_a_websocket_session_goes_both_ways_and_its_close_reaches_the_app(
        echo: EchoApp, listener: str, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    with Proxy(websocket_config(echo.address, listener, access_log={"path": str(log)})) as proxy:
        assert chat(proxy.address("outbound"), "hello", "again") == ["echo: hello", "echo: again"]
        wait_until(lambda: echo.closes == [4001], what="the app to see the client's close code")
        stats = proxy.stats()
        # The tunnel's line is written when it ends, with the bytes each way.
        wait_until(lambda: len(access_lines(log)) == 1, what="the tunnel's access log line")
    assert echo.paths == ["/room/1"]
    assert stats["listeners"]["outbound"]["upgrades_total"] == 1
    assert stats["clusters"]["chat"]["tunnels_total"] == 1
    (line,) = access_lines(log)
    assert (line["status"], line["method"], line["path"]) == (101, "GET", "/room/1")
    assert line["bytes_in"] > 0 and line["bytes_out"] > 0, line


def test_a_quiet_tunnel_is_closed_after_the_listeners_idle_timeout(echo: EchoApp) -> None:
    config = websocket_config(echo.address)
    config["listeners"][0]["idle_timeout"] = "300ms"
    with Proxy(config) as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        with websocket_connect("ws://chat.local/quiet", sock=sock, open_timeout=10, ping_interval=None) as session:
            session.send("one")
            assert session.recv(timeout=10) == "echo: one"
            # Then nothing either way: the proxy closes both sides, the app sees no close frame.
            with pytest.raises(ConnectionClosed):
                session.recv(timeout=30)
        wait_until(lambda: echo.closes == [1006], what="the app to see the tunnel closed")


@pytest.mark.parametrize("listener", ["auto", "http2"])
def test_an_rfc_8441_client_over_http2_reaches_an_http1_app(echo: EchoApp, listener: str) -> None:
    with Proxy(websocket_config(echo.address, listener)) as proxy:
        host, port = proxy.address("outbound").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            h2conn.initiate_connection()
            sock.sendall(h2conn.data_to_send())
            events: list[Any] = []
            while h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL not in settings_of(events):
                events += h2conn.receive_data(sock.recv(65536))
            assert settings_of(events)[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
            stream = h2conn.get_next_available_stream_id()
            h2conn.send_headers(stream, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                         (":path", "/room/2"), (":authority", "chat.local"),
                                         ("sec-websocket-version", "13")])
            sock.sendall(h2conn.data_to_send())
            status = None
            while status is None:
                for event in h2conn.receive_data(sock.recv(65536)):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                sock.sendall(h2conn.data_to_send())
            assert status == b"200"
            h2conn.send_data(stream, client_frame("over h2"))
            sock.sendall(h2conn.data_to_send())
            assert server_frame(read_frame(h2conn, sock, stream))[:2] == (1, b"echo: over h2")
            h2conn.send_data(stream, close_frame(4002))
            sock.sendall(h2conn.data_to_send())
            # The app answers the close; the client then ends its side, as a TCP client closes.
            opcode, payload, _ = server_frame(read_frame(h2conn, sock, stream))
            assert (opcode, payload[:2]) == (8, b"\x0f\xa2")
            h2conn.end_stream(stream)
            sock.sendall(h2conn.data_to_send())
            wait_until(lambda: echo.closes == [4002], what="the app to see the close code sent over HTTP/2")
    assert echo.paths == ["/room/2"]


def read_frame(h2conn: h2.connection.H2Connection, sock: socket.socket, stream: int) -> bytes:
    """One short WebSocket frame from the stream's data."""
    received = b""
    while len(received) < 2 or len(received) < 2 + (received[1] & 0x7F):
        for event in h2conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                received += event.data
                h2conn.acknowledge_received_data(event.flow_controlled_length, stream)
        sock.sendall(h2conn.data_to_send())
    return received


def raw_exchange(address: str, request: bytes) -> bytes:
    """Sends ``request`` on a new connection and reads until the proxy closes it or a head ends."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


UPGRADE_REQUEST = (b"GET /room HTTP/1.1\r\nHost: chat.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
], ids=["without-upgrade", "another-protocol"])
def test_a_101_that_does_not_switch_to_what_was_asked_is_a_bad_gateway(
        head: bytes, upstreams: Callable[[str], Upstream]) -> None:
    broken = CannedApp(head)
    plain = upstreams("v1")
    config = one_route_config(
        {"name": "broken", "endpoints": [{"address": broken.address}]},
        {"name": "plain", "endpoints": [{"address": plain.address}]},
        routes=[{"match": {"path_prefix": "/room"}, "cluster": "broken"}, {"cluster": "plain"}])
    try:
        with Proxy(config) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
            # A client with a plain request in progress, on a connection of its own, is not harmed.
            assert client.get("/before").status_code == 200
            answer = raw_exchange(proxy.address("outbound"), UPGRADE_REQUEST)
            assert answer.startswith(b"HTTP/1.1 502 "), answer
            assert b"x-meshproxy-error: upstream_failure" in answer
            assert client.get("/after").json()["upstream"] == "v1"
            assert proxy.stats()["listeners"]["outbound"]["upgrades_total"] == 0
    finally:
        broken.stop()


def test_a_refused_upgrade_is_passed_on_as_a_response() -> None:
    refusing = CannedApp(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
    try:
        with Proxy(websocket_config(refusing.address)) as proxy:
            answer = raw_exchange(proxy.address("outbound"), UPGRADE_REQUEST)
            assert answer.startswith(b"HTTP/1.1 403 "), answer
            assert b"upgrade" not in answer.split(b"\r\n\r\n")[0].lower()
    finally:
        refusing.stop()


# --- CONNECT -------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    with openssl_server(tmp_path) as address:
        yield address


def test_curl_through_https_proxy_reaches_an_allowed_tls_server_and_not_another_port(tls_server: str) -> None:
    _, port = tls_server.rsplit(":", 1)
    config = one_route_config(
        {"name": "tls-server", "endpoints": [{"address": tls_server}]},
        routes=[{"name": "tunnel", "match": {"connect": True, "host": "127.0.0.1", "ports": [int(port)]},
                 "cluster": "tls-server"}],
        admin={"address": "127.0.0.1:0"})
    with Proxy(config) as proxy:
        allowed = https_proxy_curl(proxy.address("outbound"), f"https://127.0.0.1:{port}/")
        assert allowed.returncode == 0, allowed.stderr
        assert "s_server" in allowed.stdout
        forbidden = https_proxy_curl(proxy.address("outbound"), f"https://127.0.0.1:{int(port) + 1}/")
        assert forbidden.returncode != 0
        assert "403" in forbidden.stderr, forbidden.stderr
        # A CONNECT is never routed by a route without `connect`, nor a plain request by one with it.
        assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).status_code == 404
        stats = proxy.stats()
    assert stats["listeners"]["outbound"]["connects_total"] == 1
    assert stats["errors"]["connect_denied"] == 1
    assert stats["clusters"]["tls-server"]["tunnels_total"] == 1


def test_a_connect_whose_destination_refuses_is_a_bad_gateway() -> None:
    closed = closed_port_address()
    port = closed.rsplit(":", 1)[1]
    config = one_route_config({"name": "gone", "endpoints": [{"address": closed}]},
                              routes=[{"match": {"connect": True, "ports": [int(port)]}, "cluster": "gone"}])
    with Proxy(config) as proxy:
        answer = raw_exchange(proxy.address("outbound"), f"CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 502 "), answer
        assert b"x-meshproxy-error: connect_failure" in answer
        assert proxy.stats()["listeners"]["outbound"]["connects_total"] == 0
