"""A ``tcp`` Service through the control plane: the cache (Debian's ``redis-server``) is a
``protocol: tcp`` Service; its callers' sidecars get an outbound ``tcp_proxy`` listener on the
port the control plane gave it (their outbound port + its ``port_offset``, 1 for the first TCP
service), the cache's sidecar an inbound one with mutual TLS and the AccessPolicy as network
RBAC. redis-py reaches redis from the allowed caller; another caller's connection is closed, and
counted as denied by the cache's sidecar. A TCP service added later, sorting first, leaves the
cache on its port; the cache's TrafficPolicy rate_limit closes the connections over its bucket."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from mesh_documents import documents, service
from mesh_harness import LocalMesh, Sidecar, apps_by_name, until
from tcp_peers import connect, outbound_address, ping, read_to_end, redis_server
from upstreams import Upstream

POLICY = "kind: AccessPolicy\nservice: cache\nrules: [{name: frontend-only, action: allow, services: [frontend]}]\n"


@pytest.fixture
def apps() -> Iterator[dict[str, Upstream]]:
    yield from apps_by_name("frontend", "payments")


@pytest.fixture
def cache() -> Iterator[str]:
    with redis_server() as address:
        yield address


def tcp_address(sidecar: Sidecar) -> str:
    """Where the sidecar's app reaches the mesh's only TCP service."""
    host, port = sidecar.outbound.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def stats(sidecar: Sidecar) -> dict[str, object]:
    document: dict[str, object] = httpx.get(f"http://{sidecar.admin}/stats", timeout=10).json()
    return document


def test_a_tcp_service_is_reached_over_mtls_and_authorized_by_identity(
        tmp_path: Path, apps: dict[str, Upstream], cache: str) -> None:
    with LocalMesh(tmp_path) as mesh:
        mesh.apply(documents(service("cache", protocol="tcp"), service("frontend", calls=["cache"]),
                             service("payments", calls=["cache"]), POLICY))
        mesh.sidecar("cache", app=cache)
        frontend = mesh.sidecar("frontend", app=apps["frontend"].address, outbound=outbound_address())
        payments = mesh.sidecar("payments", app=apps["payments"].address, outbound=outbound_address())
        mesh.wait_acked()
        host, port = tcp_address(frontend).rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port), socket_timeout=10, single_connection_client=True)
        with client as r:
            assert r.set("cart:1", "3 items") and r.get("cart:1") == b"3 items"
        with connect(tcp_address(payments)) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert read_to_end(sock) == b"", "payments may not call the cache: closed without an answer"
        cache_sidecar = mesh.sidecars[0]
        until(lambda: stats(cache_sidecar)["errors"]["denied"] == 1, what="the denial to be counted")  # type: ignore[index]


def listener_names(sidecar: Sidecar) -> set[str]:
    config = httpx.get(f"http://{sidecar.admin}/config", timeout=10).json()
    return {listener["name"] for listener in config["listeners"]}


def test_a_tcp_service_added_sorting_first_leaves_the_others_on_their_ports(
        tmp_path: Path, apps: dict[str, Upstream], cache: str) -> None:
    with LocalMesh(tmp_path) as mesh:
        mesh.apply(documents(service("cache", protocol="tcp"), service("frontend")))
        mesh.sidecar("cache", app=cache)
        frontend = mesh.sidecar("frontend", app=apps["frontend"].address, outbound=outbound_address(following=2))
        mesh.wait_acked()
        host, port = tcp_address(frontend).rsplit(":", 1)
        with redis.Redis(host=host, port=int(port), socket_timeout=10, single_connection_client=True) as r:
            assert r.set("cart:1", "3 items")
            # "archive" sorts before "cache": once it was a port's first claim, and moved the cache.
            mesh.apply(service("archive", protocol="tcp"))
            until(lambda: "outbound_tcp_archive.default" in listener_names(frontend), what="archive's listener")
            mesh.wait_acked()
            assert mesh.meshctl("get", "services").stdout.splitlines()[1:3] == [
                "default    archive   tcp       outbound+2  (its namespace)",
                "default    cache     tcp       outbound+1  (its namespace)",
            ]
            assert r.get("cart:1") == b"3 items", "the open connection goes on"
        with redis.Redis(host=host, port=int(port), socket_timeout=10, single_connection_client=True) as again:
            assert again.get("cart:1") == b"3 items", "a new connection to the same port reaches the cache"


def test_a_tcp_services_rate_limit_closes_the_connections_over_its_bucket(
        tmp_path: Path, apps: dict[str, Upstream], cache: str) -> None:
    limit = "kind: TrafficPolicy\nservice: cache\nrate_limit: {requests_per_second: 1, burst: 2}\n"
    with LocalMesh(tmp_path) as mesh:
        mesh.apply(documents(service("cache", protocol="tcp"), service("frontend", calls=["cache"]), limit))
        cache_sidecar = mesh.sidecar("cache", app=cache)
        frontend = mesh.sidecar("frontend", app=apps["frontend"].address, outbound=outbound_address())
        mesh.wait_acked()
        started = time.monotonic()
        answered = [ping(tcp_address(frontend)) for _ in range(8)]
        elapsed = time.monotonic() - started
        # The cache's sidecar takes a token per connection: its burst at once, then one a second.
        assert answered[:2] == [True, True]
        assert sum(answered) <= 2 + math.ceil(elapsed)
        refused = answered.count(False)
        assert refused >= 1
        until(lambda: stats(cache_sidecar)["errors"].get("rate_limited") == refused,  # type: ignore[attr-defined]
              what="the refused connections to be counted")
