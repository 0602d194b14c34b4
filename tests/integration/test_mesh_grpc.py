"""gRPC through two meshproxy sidecars over mutual TLS, configured by the control plane: a
grpcio client calls a grpcio server of a ``protocol: grpc`` Service through its own sidecar's
outbound listener and the server's sidecar's inbound one. Unary, server-streaming,
client-streaming and bidi calls keep their messages; a server's error status and message reach
the client; a deadline that passes is DEADLINE_EXCEEDED, a stream still going included; an authorization denial is
PERMISSION_DENIED; the Route's ``retry_on: [unavailable]`` retries a trailers-only
UNAVAILABLE; the server down is UNAVAILABLE from the proxy; and /metrics counts the statuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_app import EchoApp, EchoClient, error_of

from mesh_documents import documents, service
from mesh_harness import LocalMesh, until

MESH = documents(
    service("frontend", "shop", calls=["greeter", "vault"]),
    service("greeter", "shop", calls=[], protocol="grpc"),
    service("vault", "shop", calls=[], protocol="grpc"),
    """\
kind: Route
service: greeter
namespace: shop
rules:
  - to: [{version: v1}]
    retry: {retry_on: [unavailable], attempts: 2}
---
kind: AccessPolicy
service: vault
namespace: shop
rules:
  - {name: reads-only, action: allow, services: [frontend], methods: [GET]}
""")


@pytest.fixture(scope="module")
def app() -> Iterator[EchoApp]:
    running = EchoApp()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, app: EchoApp) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path_factory.mktemp("mesh")) as mesh:
        mesh.apply(MESH)
        mesh.caller_of([("greeter", app.address), ("vault", app.address)], namespace="shop",
                       sees={"outbound_greeter.shop_v1": 1, "outbound_vault.shop": 1})
        yield mesh


def client(mesh: LocalMesh, service: str = "greeter") -> EchoClient:
    return EchoClient(mesh.sidecars[0].outbound, service)


def test_every_call_type_goes_through_both_sidecars(mesh: LocalMesh) -> None:
    with client(mesh) as greeter:
        assert greeter.echo(b"hello", timeout=20) == b"hello"
        assert list(greeter.count(b"5", timeout=20)) == [b"0", b"1", b"2", b"3", b"4"]
        assert greeter.join(iter([b"a", b"b"]), timeout=20) == b"a,b"
        assert list(greeter.chat(iter([b"x", b"y", b"z"]), timeout=20)) == [b"re:x", b"re:y", b"re:z"]


def test_a_server_error_status_and_its_message_reach_the_client(mesh: LocalMesh) -> None:
    with client(mesh) as greeter:
        error = error_of(lambda: greeter.echo(b"fail:no such order", timeout=20))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "no such order")


def test_a_deadline_that_passes_is_deadline_exceeded(mesh: LocalMesh) -> None:
    with client(mesh) as greeter:
        error = error_of(lambda: greeter.echo(b"sleep:2000", timeout=0.3))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_stream_still_going_at_its_deadline_is_deadline_exceeded_and_ended_upstream(mesh: LocalMesh,
                                                                                       app: EchoApp) -> None:
    # The deadline covers the whole call: the server keeps streaming past it. Whichever ends
    # the call first, the client or a sidecar (each holds the same deadline), the server's call
    # is ended through both sidecars, and they serve the next call.
    ended_before = app.streams_ended
    with client(mesh) as greeter:
        received = []
        with pytest.raises(grpc.RpcError) as raised:
            for message in greeter.count(b"every:50", timeout=1.0):
                received.append(message)
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert received[:2] == [b"0", b"1"]
        until(lambda: app.streams_ended > ended_before, what="the server's streaming call to end")
        assert greeter.echo(b"next", timeout=20) == b"next"


def test_a_denied_call_is_permission_denied(mesh: LocalMesh) -> None:
    with client(mesh, "vault") as vault:
        error = error_of(lambda: vault.echo(b"secret", timeout=20))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "policy" in error.details()


def test_the_routes_retry_on_unavailable_retries_a_trailers_only_unavailable(mesh: LocalMesh, app: EchoApp) -> None:
    before = app.calls.get("Echo", 0)
    with client(mesh) as greeter:
        assert greeter.echo(b"flaky:mesh", timeout=20) == b"flaky:mesh"
    assert app.calls["Echo"] - before == 2


def grpc_samples(admin: str) -> dict[str, float]:
    """meshproxy_grpc_requests_total by grpc_status, summed over the sidecar's routes."""
    text = httpx.get(f"http://{admin}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("meshproxy_grpc_requests_total{"):
            status = line.split('grpc_status="', 1)[1].split('"', 1)[0]
            found[status] = found.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return found


def test_the_server_down_is_unavailable_and_the_statuses_are_in_metrics(mesh: LocalMesh, app: EchoApp) -> None:
    # Last: it stops the server.
    app.stop()
    with client(mesh) as greeter:
        error = error_of(lambda: greeter.echo(b"hello", timeout=20))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot connect to" in error.details()
    frontend, greeter_sidecar = mesh.sidecars[0], mesh.sidecars[1]
    outbound = grpc_samples(frontend.admin)
    # OK, INVALID_ARGUMENT (3), PERMISSION_DENIED (7: the vault's sidecar answered it), and
    # UNAVAILABLE (14: the greeter's sidecar answered it, to the frontend's sidecar).
    assert {"0", "3", "7", "14"} <= set(outbound), outbound
    assert grpc_samples(greeter_sidecar.admin).get("14", 0) >= 1
