"""Active health checks, with real failures on loopback: an endpoint killed, one that accepts and
never answers, a gRPC server saying NOT_SERVING. An endpoint that fails its checks leaves the
balancer's choice (counted at the upstreams) and comes back once it passes again; ``/clusters``
and ``/metrics`` show its health."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import pytest
from conftest import ProxyProcess, Upstream, metric_value, wait_until
from controlled_upstream import ControlledUpstream

# Short so the tests are short; bounds below allow for a slow machine, not a speed claim.
INTERVAL = "100ms"
HEALTH_BOUND = 10.0


@pytest.fixture
def pair() -> Iterator[tuple[ControlledUpstream, ControlledUpstream]]:
    a, b = ControlledUpstream("a"), ControlledUpstream("b")
    yield a, b
    a.stop()
    b.stop()


def config(*clusters: dict[str, Any]) -> dict[str, Any]:
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": clusters[0]["name"]}]}],
        "clusters": list(clusters),
    }


def checked(name: str, *endpoints: str, check: dict[str, Any], **more: Any) -> dict[str, Any]:
    health_check = {"interval": INTERVAL, "timeout": "200ms", "unhealthy_threshold": 2, "healthy_threshold": 1, **check}
    return {"name": name, "lb": "round_robin", "health_check": health_check,
            "endpoints": [{"address": address} for address in endpoints], **more}


def health(proxy: meshproxy.Proxy, cluster: str) -> dict[str, str]:
    return {e["address"]: e["health"] for e in proxy.clusters()[cluster]["endpoints"]}


def wait_health(proxy: meshproxy.Proxy, cluster: str, address: str, expected: str) -> None:
    wait_until(lambda: health(proxy, cluster).get(address) == expected, timeout=HEALTH_BOUND,
               what=f"{address} to be {expected} in /clusters")


def send(proxy: meshproxy.Proxy, count: int) -> list[str]:
    """Who answered each of ``count`` requests; every one must succeed."""
    answered = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            response = client.get(f"http://{proxy.address('outbound')}/")
            assert response.status_code == 200, response.text
            answered.append(response.text)
    return answered


def test_a_killed_endpoint_goes_unhealthy_gets_no_requests_and_returns_once_restarted(
    pair: tuple[ControlledUpstream, ControlledUpstream],
) -> None:
    a, b = pair
    cluster = checked("app", a.address, b.address, check={"http": {"path": "/healthz"}})
    with meshproxy.Proxy(config(cluster)) as proxy:
        wait_health(proxy, "app", a.address, "healthy")
        wait_health(proxy, "app", b.address, "healthy")
        assert set(send(proxy, 10)) == {"a", "b"}
        assert a.requests("/healthz") >= 1, "checked on its health path"

        a.stop()
        wait_health(proxy, "app", a.address, "unhealthy")
        failures_before = proxy.stats()["clusters"]["app"]["connect_failures_total"]
        assert send(proxy, 20) == ["b"] * 20
        assert proxy.stats()["clusters"]["app"]["connect_failures_total"] == failures_before, "nothing tried on a"
        assert proxy.stats()["clusters"]["app"]["health_check_failures_total"] >= 2
        admin = proxy.admin_address
        assert admin is not None
        assert metric_value(admin, "meshproxy_cluster_healthy_endpoints") == 1

        a.start()
        wait_health(proxy, "app", a.address, "healthy")
        before = a.requests("/")
        assert "a" in send(proxy, 10)
        assert a.requests("/") > before


def test_an_endpoint_that_accepts_and_never_answers_fails_its_checks_by_timeout(
    pair: tuple[ControlledUpstream, ControlledUpstream],
) -> None:
    a, b = pair
    cluster = checked("app", a.address, b.address, check={"http": {"path": "/healthz"}})
    with meshproxy.Proxy(config(cluster)) as proxy:
        wait_health(proxy, "app", a.address, "healthy")
        wait_health(proxy, "app", b.address, "healthy")
        a.mode = "hang"
        wait_health(proxy, "app", a.address, "unhealthy")
        before = a.requests("/")
        assert send(proxy, 20) == ["b"] * 20
        assert a.requests("/") == before, "no request reached the hung endpoint"
        a.mode = "ok"
        wait_health(proxy, "app", a.address, "healthy")


def test_an_unexpected_status_fails_and_expected_statuses_choose_what_passes(
    pair: tuple[ControlledUpstream, ControlledUpstream],
) -> None:
    a, b = pair
    strict = checked("strict", a.address, check={"http": {"path": "/healthz"}})
    lenient = checked("lenient", a.address, check={"http": {"path": "/healthz", "expected_statuses": [200, 500]}})
    a.mode = "error"
    with meshproxy.Proxy(config(strict, lenient)) as proxy:
        wait_health(proxy, "lenient", a.address, "healthy")
        assert health(proxy, "strict")[a.address] == "unhealthy"


def test_a_tcp_check_passes_while_the_port_accepts(pair: tuple[ControlledUpstream, ControlledUpstream]) -> None:
    a, b = pair
    cluster = checked("app", a.address, b.address, check={"tcp": {}})
    with meshproxy.Proxy(config(cluster)) as proxy:
        wait_health(proxy, "app", a.address, "healthy")
        a.stop()
        wait_health(proxy, "app", a.address, "unhealthy")
        assert health(proxy, "app")[b.address] == "healthy"


def test_a_cluster_without_checks_shows_its_endpoints_unchecked(pair: tuple[ControlledUpstream, ControlledUpstream]) -> None:
    a, _ = pair
    with meshproxy.Proxy(config({"name": "app", "endpoints": [{"address": a.address}]})) as proxy:
        assert health(proxy, "app") == {a.address: "unchecked"}


def test_a_grpc_check_follows_the_servers_health_servicer() -> None:
    grpc = pytest.importorskip("grpc")
    health_module = pytest.importorskip("grpc_health.v1.health")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health_module.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    servicer.set("orders", health_pb2.HealthCheckResponse.SERVING)
    try:
        cluster = checked("orders", address, check={"grpc": {"service": "orders"}}, protocol="http2")
        with meshproxy.Proxy(config(cluster)) as proxy:
            wait_health(proxy, "orders", address, "healthy")
            servicer.set("orders", health_pb2.HealthCheckResponse.NOT_SERVING)
            wait_health(proxy, "orders", address, "unhealthy")
            servicer.set("orders", health_pb2.HealthCheckResponse.SERVING)
            wait_health(proxy, "orders", address, "healthy")
    finally:
        server.stop(grace=None)


def test_endpoints_found_by_discovery_are_checked_and_dropped_ones_are_not(
    pair: tuple[ControlledUpstream, ControlledUpstream], tmp_path: Path,
) -> None:
    a, b = pair
    listed = tmp_path / "endpoints.json"
    listed.write_text(json.dumps([{"address": a.address}]))
    cluster = {"name": "app", "discovery": {"type": "file", "path": str(listed)},
               "health_check": {"http": {"path": "/healthz"}, "interval": INTERVAL}}
    with meshproxy.Proxy(config(cluster)) as proxy:
        wait_health(proxy, "app", a.address, "healthy")
        replacement = tmp_path / "endpoints.json.new"
        replacement.write_text(json.dumps([{"address": b.address}]))
        os.replace(replacement, listed)
        wait_health(proxy, "app", b.address, "healthy")
        assert list(health(proxy, "app")) == [b.address]
        checks = a.requests("/healthz")
        wait_until(lambda: b.requests("/healthz") >= 3, timeout=HEALTH_BOUND, what="b's checks to go on")
        assert a.requests("/healthz") <= checks + 1, "a dropped endpoint is no longer checked"


def test_a_reload_without_health_check_stops_the_checks(pair: tuple[ControlledUpstream, ControlledUpstream]) -> None:
    a, b = pair
    cluster = checked("app", a.address, check={"http": {"path": "/healthz"}})
    with meshproxy.Proxy(config(cluster)) as proxy:
        wait_until(lambda: a.requests("/healthz") >= 2, timeout=HEALTH_BOUND, what="checks to run")
        plain = {"name": "app", "endpoints": [{"address": a.address}]}
        proxy.reload(config(plain))
        assert health(proxy, "app") == {a.address: "unchecked"}
        checks = a.requests("/healthz")
        # b is checked by a cluster of its own meanwhile: a's checks would have come by now.
        proxy.reload(config(plain, checked("other", b.address, check={"http": {"path": "/healthz"}})))
        wait_until(lambda: b.requests("/healthz") >= 3, timeout=HEALTH_BOUND, what="b's checks to run")
        assert a.requests("/healthz") <= checks + 1


def test_checks_of_a_mesh_cluster_go_over_mutual_tls_with_the_clusters_identity_check(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Callable[[str], Upstream],
) -> None:
    from test_mtls import FRONTEND, ORDERS, PAYMENTS, Sidecars, listener, mesh_cluster

    sidecars = Sidecars(tmp_path, meshproxy_run)
    b = sidecars.inbound("b", ORDERS, upstreams("app"))
    inbound = b.address("inbound")
    checks = {"interval": INTERVAL, "timeout": "1s"}
    right = {**mesh_cluster("orders", inbound, [ORDERS]), "health_check": {"http": {"path": "/healthz"}, **checks}}
    # The same peer, required to be another service: its handshakes are refused, so are its checks.
    wrong = {**mesh_cluster("payments", inbound, [PAYMENTS]), "health_check": {"tcp": {}, **checks}}
    a = sidecars.start("a", FRONTEND, listeners=[listener("outbound", "orders")], clusters=[right, wrong])

    def shown(cluster: str) -> str:
        endpoints = httpx.get(f"http://{a.admin}/clusters", timeout=10).json()[cluster]["endpoints"]
        return str(endpoints[0]["health"])

    def stats(proxy: ProxyProcess) -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()
        return document

    wait_until(lambda: shown("orders") == "healthy", timeout=HEALTH_BOUND, what="the mesh endpoint to pass its checks")
    assert stats(b)["tls"]["inbound"]["handshakes_total"] >= 1, "checked over mutual TLS"
    wait_until(lambda: stats(a)["clusters"]["payments"]["health_check_failures_total"] >= 2, timeout=HEALTH_BOUND,
               what="the checks of the wrong identity to fail")
    assert stats(a)["tls"]["outbound"]["refused"]["wrong_identity"] >= 2
    assert shown("payments") == "unhealthy"
