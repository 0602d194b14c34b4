"""Local rate limits (`rate_limit` on a listener and on a route): a token bucket shared by the
engine's workers; over the limit, 429 `rate_limited` with `retry-after`, counted per listener
and route; the bucket kept, tokens and all, by a reload that keeps its route."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import Upstream
from meshproxy import Proxy
from prometheus_client.parser import text_string_to_metric_families

Upstreams = Callable[[str], Upstream]


def config(upstream: Upstream, listener_limit: dict[str, int] | None = None,
           route_limit: dict[str, int] | None = None, extra_routes: int = 0) -> dict[str, Any]:
    limited: dict[str, Any] = {"name": "limited", "match": {"host": "limited"}, "cluster": "app"}
    if route_limit is not None:
        limited["rate_limit"] = route_limit
    listener: dict[str, Any] = {
        "name": "outbound",
        "address": "127.0.0.1:0",
        "routes": [limited]
        + [{"name": f"extra-{i}", "match": {"host": f"extra-{i}"}, "cluster": "app"} for i in range(extra_routes)]
        + [{"name": "open", "cluster": "app"}],
    }
    if listener_limit is not None:
        listener["rate_limit"] = listener_limit
    return {"listeners": [listener], "clusters": [{"name": "app", "endpoints": [{"address": upstream.address}]}]}


def burst(client: httpx.Client, url: str, host: str, count: int) -> tuple[list[httpx.Response], float]:
    """`count` requests in a row, and how long they took (tokens come back meanwhile)."""
    started = time.monotonic()
    responses = [client.get(url, headers={"host": host}) for _ in range(count)]
    return responses, time.monotonic() - started


def rule_counts(proxy: Proxy, route: str) -> dict[str, Any]:
    [entry] = [e for e in proxy.stats()["route_rules"] if (e["listener"], e["route"]) == ("outbound", route)]
    return entry


def metric(proxy: Proxy, name: str, **labels: str) -> float:
    families = text_string_to_metric_families(proxy.metrics().decode())
    values = [s.value for f in families for s in f.samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(values) == 1, values
    return values[0]


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["x-meshproxy-error"] == "rate_limited"
    # Seconds until a token comes back, rounded up: one a second here.
    assert response.headers["retry-after"] == "1"


def test_a_listener_limit_answers_429_with_retry_after_past_its_burst(upstreams: Upstreams) -> None:
    with Proxy(config(upstreams("app"), listener_limit={"requests_per_second": 1, "burst": 3})) as proxy, \
            httpx.Client(timeout=10) as client:
        responses, took = burst(client, f"http://{proxy.address('outbound')}/", "open", 8)
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        # The burst, plus at most one token per second that passed.
        assert 3 <= len(ok) <= 3 + math.ceil(took)
        assert refused and all(assert_rate_limited(r) is None for r in refused)
        # The first three were the burst: none refused before them.
        assert [r.status_code for r in responses[:3]] == [200, 200, 200]
        assert rule_counts(proxy, "")["rate_limited_total"] == len(refused)
        assert metric(proxy, "meshproxy_rate_limited_total", listener="outbound", route="") == len(refused)
        assert proxy.stats()["errors"]["rate_limited"] == len(refused)


def test_a_route_limit_leaves_other_routes_alone(upstreams: Upstreams) -> None:
    with Proxy(config(upstreams("app"), route_limit={"requests_per_second": 1, "burst": 2})) as proxy, \
            httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}/"
        limited, _ = burst(client, url, "limited", 6)
        other, _ = burst(client, url, "other", 6)
        refused = [r for r in limited if r.status_code != 200]
        assert refused and all(assert_rate_limited(r) is None for r in refused)
        assert [r.status_code for r in other] == [200] * 6
        assert rule_counts(proxy, "limited")["rate_limited_total"] == len(refused)
        assert metric(proxy, "meshproxy_rate_limited_total", listener="outbound", route="limited") == len(refused)
        # The 429s count as the route's traffic, as its other answers do.
        [traffic] = [s for s in proxy.stats()["traffic"]["stats"] if s["route"] == "limited"]
        assert traffic["responses"]["429"] == len(refused)


@pytest.mark.parametrize("where", ["listener", "route"])
def test_a_reload_that_keeps_the_rule_keeps_its_empty_bucket(upstreams: Upstreams, where: str) -> None:
    app = upstreams("app")
    # One token a second and a burst of one: emptied, the bucket refuses until a second passes.
    slow = {"requests_per_second": 1, "burst": 1}
    limits: dict[str, Any] = {f"{where}_limit": slow}
    with Proxy(config(app, **limits)) as proxy, httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}/"
        emptied = time.monotonic()
        assert client.get(url, headers={"host": "limited"}).status_code == 200
        # Another route added: the limit is given again as it was.
        assert proxy.reload(config(app, extra_routes=1, **limits)) == 2
        again = client.get(url, headers={"host": "limited"})
        if time.monotonic() - emptied >= 1.0:
            pytest.skip("a second passed: the bucket had a token again whether kept or not")
        # A bucket made anew would be full, and let it through.
        assert_rate_limited(again)
        assert rule_counts(proxy, "" if where == "listener" else "limited")["rate_limited_total"] == 1
