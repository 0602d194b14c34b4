"""``GET /clusters`` and ``GET /routes`` of the admin API: what the proxy runs and what it sees
of its endpoints, over real HTTP on loopback, following traffic and reloads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import meshproxy
import pytest
from conftest import Upstream, wait_until

Upstreams = Callable[[str], Upstream]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def mesh(v1: Upstream, v2: Upstream) -> dict[str, Any]:
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {"name": "outbound", "address": "127.0.0.1:0", "routes": [
                {"match": {"host": "orders", "headers": {"x-channel": "beta"}}, "cluster": "orders-v2"},
                {"name": "orders-split", "match": {"host": "orders", "path_prefix": "/"},
                 "split": [{"cluster": "orders-v1", "weight": 90}, {"cluster": "orders-v2", "weight": 10}]},
            ]},
            {"name": "inbound", "address": "127.0.0.1:0", "direction": "inbound", "protocol": "http1",
             "routes": [{"match": {"method": ["GET", "HEAD"]}, "cluster": "orders-v1"}]},
        ],
        "clusters": [
            {"name": "orders-v1", "lb": "round_robin",
             "endpoints": [{"address": v1.address}, {"address": v2.address, "weight": 0}]},
            {"name": "orders-v2", "protocol": "http2", "endpoints": [{"address": v2.address, "weight": 3}]},
            {"name": "unused", "endpoints": []},
        ],
    }


def test_routes_lists_each_listeners_routes_in_order_with_match_and_destination(
    upstreams: Upstreams, client: httpx.Client
) -> None:
    with meshproxy.Proxy(mesh(upstreams("v1"), upstreams("v2"))) as proxy:
        response = client.get(f"http://{proxy.admin_address}/routes")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "outbound": {"direction": "outbound", "routes": [
            {"name": "outbound/0", "match": {"host": "orders", "headers": {"x-channel": {"exact": "beta"}}},
             "cluster": "orders-v2"},
            {"name": "orders-split", "match": {"host": "orders", "path_prefix": "/"},
             "split": [{"cluster": "orders-v1", "weight": 90}, {"cluster": "orders-v2", "weight": 10}]},
        ]},
        "inbound": {"direction": "inbound", "routes": [
            {"name": "inbound/0", "match": {"method": ["GET", "HEAD"]}, "cluster": "orders-v1"},
        ]},
    }


def test_clusters_lists_every_cluster_with_its_endpoints_and_their_state(
    upstreams: Upstreams, client: httpx.Client
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    with meshproxy.Proxy(mesh(v1, v2)) as proxy:
        clusters = client.get(f"http://{proxy.admin_address}/clusters").json()
    assert set(clusters) == {"orders-v1", "orders-v2", "unused"}
    assert {name: (c["lb"], c["protocol"], c["tls"]) for name, c in clusters.items()} == {
        "orders-v1": ("round_robin", "http1", False),
        "orders-v2": ("p2c_ewma", "http2", False),
        "unused": ("p2c_ewma", "http1", False),
    }
    assert [(e["address"], e["weight"]) for e in clusters["orders-v1"]["endpoints"]] == [(v1.address, 1), (v2.address, 0)]
    assert clusters["unused"]["endpoints"] == []
    [endpoint] = clusters["orders-v2"]["endpoints"]
    assert set(endpoint) == {"address", "weight", "health", "in_flight", "latency_ewma_ms", "pool"}
    assert (endpoint["address"], endpoint["weight"], endpoint["health"], endpoint["in_flight"]) == (
        v2.address, 3, "unchecked", 0)
    assert endpoint["pool"] == {"idle_http1": 0, "http2_connections": 0}


def test_clusters_shows_requests_in_flight_their_latency_and_pooled_connections(
    upstreams: Upstreams, client: httpx.Client
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    with meshproxy.Proxy(mesh(v1, v2), workers=1) as proxy:
        admin, inbound = proxy.admin_address, proxy.address("inbound")

        def app_endpoint() -> dict[str, Any]:
            endpoint: dict[str, Any] = client.get(f"http://{admin}/clusters").json()["orders-v1"]["endpoints"][0]
            return endpoint

        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(httpx.get(f"http://{inbound}/delay/1500", timeout=30)))
        slow.start()
        wait_until(lambda: app_endpoint()["in_flight"] == 1, timeout=10, what="/clusters to show the request in flight")
        slow.join(timeout=30)
        assert answers[0].status_code == 200

        # Once answered, the request is out of flight and its connection waits in the pool.
        wait_until(lambda: app_endpoint()["pool"]["idle_http1"] == 1, timeout=10, what="the connection back in the pool")
        endpoint = app_endpoint()
        assert endpoint["in_flight"] == 0
        # The upstream held the response back 1.5 s: a peak-EWMA takes a slower answer at once.
        assert endpoint["latency_ewma_ms"] >= 1500

        # The HTTP/2 cluster shares one connection.
        outbound = proxy.address("outbound")
        assert client.get(f"http://{outbound}/", headers={"host": "orders", "x-channel": "beta"}).status_code == 200
        [h2] = client.get(f"http://{admin}/clusters").json()["orders-v2"]["endpoints"]
        assert h2["pool"] == {"idle_http1": 0, "http2_connections": 1}


def test_clusters_and_routes_follow_a_reload(upstreams: Upstreams, client: httpx.Client) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    with meshproxy.Proxy(mesh(v1, v2)) as proxy:
        admin = proxy.admin_address
        changed = mesh(v1, v2)
        changed["clusters"][0]["endpoints"] = [{"address": v2.address, "weight": 5}]
        changed["listeners"][1]["routes"] = [{"name": "all", "cluster": "orders-v2"}]
        proxy.reload(changed)
        clusters = client.get(f"http://{admin}/clusters").json()
        routes = client.get(f"http://{admin}/routes").json()
    assert [(e["address"], e["weight"]) for e in clusters["orders-v1"]["endpoints"]] == [(v2.address, 5)]
    assert routes["inbound"]["routes"] == [{"name": "all", "match": {}, "cluster": "orders-v2"}]
