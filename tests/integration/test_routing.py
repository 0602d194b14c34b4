"""Routing through a running proxy: first match wins, weighted splits, header channels,
rewrites and header edits, and the errors the proxy answers itself."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable

import httpx
import pytest
from conftest import Upstream, closed_port_address
from meshproxy import Proxy


def cluster(name: str, *upstreams: Upstream, **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoints": [{"address": u.address} for u in upstreams], **extra}


def listener_config(routes: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": routes}], "clusters": clusters}


README_ROUTES = [
    {"match": {"host": "orders", "headers": {"x-channel": "beta"}}, "cluster": "orders-v2"},
    {"match": {"host": "orders", "path_prefix": "/"},
     "split": [{"cluster": "orders-v1", "weight": 90}, {"cluster": "orders-v2", "weight": 10}]},
]


async def upstream_counts(address: str, count: int, headers: dict[str, str]) -> Counter[str]:
    """Sends `count` requests over HTTP/2 (100 at a time) and counts who answered."""
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(http1=False, http2=True, base_url=f"http://{address}", timeout=30) as client:
        for start in range(0, count, 100):
            batch = [client.get("/", headers=headers) for _ in range(min(100, count - start))]
            for response in await asyncio.gather(*batch):
                assert response.status_code == 200, response.text
                seen[response.headers["x-upstream"]] += 1
    return seen


@pytest.fixture
def orders_proxy(upstreams: Callable[[str], Upstream]) -> Any:
    config = listener_config(README_ROUTES, [cluster("orders-v1", upstreams("v1")), cluster("orders-v2", upstreams("v2"))])
    with Proxy(config) as proxy:
        yield proxy


def test_a_90_10_split_is_within_3_points_over_10000_requests(orders_proxy: Proxy) -> None:
    seen = asyncio.run(upstream_counts(orders_proxy.address("outbound"), 10_000, {"host": "orders"}))
    assert sum(seen.values()) == 10_000
    assert abs(seen["v1"] / 10_000 - 0.90) <= 0.03, seen
    assert abs(seen["v2"] / 10_000 - 0.10) <= 0.03, seen


def test_the_header_route_wins_over_the_split(orders_proxy: Proxy) -> None:
    seen = asyncio.run(upstream_counts(orders_proxy.address("outbound"), 500, {"host": "orders", "x-channel": "beta"}))
    assert seen == Counter({"v2": 500})


def test_routes_match_host_path_method_and_headers_first_match_wins(upstreams: Callable[[str], Upstream]) -> None:
    routes = [
        {"match": {"host": "*.example.com", "path": "/exact"}, "cluster": "a"},
        {"match": {"path_regex": "/items/[0-9]+"}, "cluster": "b"},
        {"match": {"method": ["POST", "PUT"], "path_prefix": "/write"}, "cluster": "a"},
        {"match": {"headers": {"x-test": {"present": True}}}, "cluster": "b"},
        {"match": {"headers": {"x-version": {"regex": "v[2-9]"}}}, "cluster": "a"},
        {"match": {"path_prefix": "/"}, "cluster": "b"},
    ]
    config = listener_config(routes, [cluster("a", upstreams("v1")), cluster("b", upstreams("v2"))])
    cases = [
        ("GET", "/exact", {"host": "api.example.com:8080"}, "v1"),
        ("GET", "/exact", {"host": "example.com"}, "v2"),         # *.example.com needs a label before it
        ("GET", "/items/42", {}, "v2"),
        ("GET", "/items/42/x", {}, "v2"),                         # falls through to the catch-all
        ("POST", "/write/1", {}, "v1"),
        ("GET", "/write/1", {}, "v2"),
        ("GET", "/", {"x-test": ""}, "v2"),
        ("GET", "/", {"x-version": "v3"}, "v1"),
        ("GET", "/", {"x-version": "v1"}, "v2"),
    ]
    with Proxy(config) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}") as client:
        got = [client.request(m, path, headers=h).headers["x-upstream"] for m, path, h, _ in cases]
    assert got == [want for *_, want in cases]


def test_prefix_rewrite_and_header_edits(upstreams: Callable[[str], Upstream]) -> None:
    routes = [{
        "match": {"path_prefix": "/api/"},
        "prefix_rewrite": "/v2/",
        "cluster": "a",
        "request_headers": {"add": {"x-added": "yes"}, "remove": ["x-secret"]},
        "response_headers": {"add": {"x-served-by": "meshproxy"}, "remove": ["x-upstream"]},
    }]
    with Proxy(listener_config(routes, [cluster("a", upstreams("v1"))])) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/api/users?id=7", headers={"x-secret": "s"})
    seen = response.json()
    assert (seen["path"], seen["query"]) == ("/v2/users", "id=7")
    assert seen["headers"]["x-added"] == "yes" and "x-secret" not in seen["headers"]
    assert response.headers["x-served-by"] == "meshproxy" and "x-upstream" not in response.headers


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_each_generated_error_has_its_status_reason_header_and_body(upstreams: Callable[[str], Upstream], http2: bool) -> None:
    routes = [
        {"match": {"path_prefix": "/empty"}, "cluster": "empty"},
        {"match": {"path_prefix": "/refused"}, "cluster": "refused"},
        {"match": {"path_prefix": "/slow/"}, "prefix_rewrite": "/delay/", "timeout": "200ms", "cluster": "slow"},
        {"match": {"host": "known"}, "cluster": "slow"},
    ]
    clusters = [
        {"name": "empty", "endpoints": []},
        {"name": "refused", "endpoints": [{"address": closed_port_address()}]},
        cluster("slow", upstreams("v1")),
    ]
    expected = {
        "/nothing": (404, "no_route", "no route for host 'unknown' path '/nothing'"),
        "/empty": (503, "no_healthy_endpoint", "no healthy endpoint in cluster 'empty'"),
        "/refused": (502, "connect_failure", "cannot connect to"),
        "/slow/3000": (504, "timeout", "cluster 'slow' did not answer within 200ms"),
    }
    with Proxy(listener_config(routes, clusters)) as proxy:
        with httpx.Client(http1=not http2, http2=http2, base_url=f"http://{proxy.address('outbound')}") as client:
            for path, (status, reason, text) in expected.items():
                response = client.get(path, headers={"host": "unknown"})
                assert (response.status_code, response.headers.get("x-meshproxy-error")) == (status, reason), path
                assert text in response.text and response.headers["content-type"].startswith("text/plain"), response.text
            # An answer the upstream gives is passed on as it is, without the proxy's header.
            upstream_503 = client.get("/status/503", headers={"host": "known"})
        errors = proxy.stats()["errors"]
    assert (upstream_503.status_code, upstream_503.headers.get("x-meshproxy-error")) == (503, None)
    assert {k: errors[k] for k in ("no_route", "no_healthy_endpoint", "connect_failure", "timeout")} == {
        "no_route": 1, "no_healthy_endpoint": 1, "connect_failure": 1, "timeout": 1}


def test_connect_failures_move_bodyless_requests_to_a_live_endpoint(upstreams: Callable[[str], Upstream]) -> None:
    dead = {"address": closed_port_address()}
    config = listener_config([{"cluster": "mixed"}], [{
        "name": "mixed", "lb": "round_robin", "endpoints": [dead, {"address": upstreams("v1").address}]}])
    with Proxy(config) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}") as client:
        statuses = Counter(client.get("/").status_code for _ in range(20))
        failures = proxy.stats()["clusters"]["mixed"]["connect_failures_total"]
    assert statuses == Counter({200: 20})
    assert failures >= 10  # round robin sent every other first attempt to the dead endpoint
