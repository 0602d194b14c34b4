"""A WebSocket through two sidecars: the client speaks HTTP/1.1 to its sidecar, which carries
the session to the app's sidecar as RFC 8441 extended CONNECT over mTLS HTTP/2; that sidecar asks
the app with an HTTP/1.1 Upgrade again. Messages go both ways and the client's close code
reaches the app. Nothing in the mesh's documents asks for it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh_documents import documents, service
from mesh_harness import LocalMesh, until
from websocket_app import EchoApp
from websockets.sync.client import connect as websocket_connect


# The WebSocket is a GET, whichever protocol carries it: on the hop it is an extended CONNECT, and
# the chat sidecar authorizes it as the GET it stands for.
POLICY = """\
kind: AccessPolicy
service: chat
namespace: shop
rules:
  - {name: frontend-gets, action: allow, services: [frontend], methods: [GET]}
"""


@pytest.fixture(scope="module")
def chat_app() -> Iterator[EchoApp]:
    app = EchoApp()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, chat_app: EchoApp) -> Iterator[LocalMesh]:
    folder = tmp_path_factory.mktemp("mesh")
    with LocalMesh(folder) as mesh:
        mesh.apply(documents(service("frontend", "shop", calls=["chat"]), service("chat", "shop", calls=[]), POLICY))
        (frontend_app := EchoApp())  # the frontend's own app is not called; any address does
        try:
            mesh.sidecar("frontend", namespace="shop", app=frontend_app.address)
            mesh.sidecar("chat", namespace="shop", app=chat_app.address)
            until(lambda: mesh.sidecars[0].endpoints("outbound_chat.shop") != [], what="frontend to see chat")
            mesh.wait_acked()
            yield mesh
        finally:
            frontend_app.stop()


def stats(address: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"http://{address}/stats", timeout=10).json()
    return answer


def test_a_websocket_crosses_two_sidecars_over_mtls_both_ways_and_closes(mesh: LocalMesh, chat_app: EchoApp) -> None:
    frontend, chat = mesh.sidecars
    host, port = frontend.outbound.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    with websocket_connect("ws://chat/room/mesh", sock=sock, open_timeout=10, close_timeout=10) as session:
        for i in range(3):
            session.send(f"message {i}")
            assert session.recv(timeout=10) == f"echo: message {i}"
        session.close(code=4003, reason="bye")
    until(lambda: chat_app.closes == [4003], what="the app to see the client's close code")
    assert chat_app.paths == ["/room/mesh"]
    # One tunnel at each sidecar; the hop between them went as HTTP/2 (extended CONNECT).
    outbound = stats(frontend.admin)
    inbound = stats(chat.admin)
    assert outbound["listeners"]["outbound"]["upgrades_total"] == 1  # type: ignore[index]
    assert inbound["listeners"]["inbound"]["upgrades_total"] == 1  # type: ignore[index]
    assert outbound["clusters"]["outbound_chat.shop"]["tunnels_total"] == 1  # type: ignore[index]


def test_a_plain_request_on_the_same_path_still_gets_its_response(mesh: LocalMesh) -> None:
    # The app answers a plain GET with 426 (it speaks WebSocket only): passed on as it is.
    response = httpx.get(f"http://{mesh.sidecars[0].outbound}/room/plain", headers={"host": "chat"}, timeout=10)
    assert response.status_code == 426
