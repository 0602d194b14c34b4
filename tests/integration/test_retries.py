"""Retry policies through a running proxy, against real upstreams on loopback that fail: one
answering 500, one killed, one too slow; every try counted at the upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
from conftest import Upstream
from scripted_upstream import HANG_UP, ScriptedUpstream

from meshproxy import Proxy


def config(*endpoints: str, retry: dict[str, Any] | None = None, lb: str = "round_robin") -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": "app"}
    if retry is not None:
        route["retry"] = retry
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [route]}],
        "clusters": [{"name": "app", "lb": lb, "endpoints": [{"address": a} for a in endpoints]}],
    }


@pytest.fixture
def started() -> Iterator[list[ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []
    yield started
    for upstream in started:
        upstream.stop()


def scripted(started: list[ScriptedUpstream], *args: Any, **kwargs: Any) -> ScriptedUpstream:
    upstream = ScriptedUpstream(*args, **kwargs)
    started.append(upstream)
    return upstream


# Retries within a test follow each other at once: the back-off is not what these prove.
QUICK = {"base_interval": "1ms", "max_interval": "1ms"}


def test_a_5xx_is_retried_and_the_next_try_answers(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, [500])
    with Proxy(config(upstream.address, retry={"retry_on": ["5xx"], "backoff": QUICK})) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/orders", timeout=10)
        stats = proxy.stats()["clusters"]["app"]
    assert response.status_code == 200
    assert [r.path for r in upstream.received] == ["/orders", "/orders"]
    assert stats["retries_total"] == 1
    assert stats["upstream_requests_total"] == 2


def test_without_a_policy_a_5xx_is_returned_as_it_came(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, [500])
    with Proxy(config(upstream.address)) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/orders", timeout=10)
        retries = proxy.stats()["clusters"]["app"]["retries_total"]
    assert response.status_code == 500
    assert upstream.count() == 1
    assert retries == 0


def test_attempts_bound_the_tries_and_the_last_answer_is_returned(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, then=503)
    retry = {"retry_on": ["gateway-error"], "attempts": 3, "backoff": QUICK}
    with Proxy(config(upstream.address, retry=retry)) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/", timeout=10)
    assert response.status_code == 503
    assert "x-meshproxy-error" not in response.headers, "the upstream's own 503"
    assert upstream.count() == 3


def test_a_connect_failure_is_retried_on_the_other_endpoint(started: list[ScriptedUpstream]) -> None:
    live = scripted(started)
    killed = scripted(started)
    killed.stop()
    retry = {"retry_on": ["connect-failure"], "attempts": 2, "backoff": QUICK}
    with Proxy(config(killed.address, live.address, retry=retry)) as proxy:
        url = f"http://{proxy.address('outbound')}/upload"
        answers = [httpx.post(url, content=b"order %d" % i, timeout=10) for i in range(20)]
        stats = proxy.stats()["clusters"]["app"]
    assert [a.status_code for a in answers] == [200] * 20
    # Every request reached the live endpoint once, its body whole: the ones whose first try
    # went to the killed endpoint were sent again, to the other one.
    assert sorted(r.body for r in live.received) == sorted(b"order %d" % i for i in range(20))
    assert stats["connect_failures_total"] >= 1
    assert stats["retries_total"] == stats["connect_failures_total"]


def test_the_budget_bounds_retries_when_every_try_fails(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, then=500)
    retry = {"retry_on": ["5xx"], "attempts": 5, "backoff": QUICK, "budget": {"percent": 20, "min_per_second": 0}}
    requests = 50
    with Proxy(config(upstream.address, retry=retry)) as proxy:
        with httpx.Client(timeout=10) as client:
            statuses = {client.get(f"http://{proxy.address('outbound')}/").status_code for _ in range(requests)}
        stats = proxy.stats()["clusters"]["app"]
    assert statuses == {500}
    retries = upstream.count() - requests
    # Without a budget, 4 retries each: 200. With it, at most 20 % of the requests.
    assert retries == stats["retries_total"]
    assert 1 <= retries <= requests * 20 // 100
    assert stats["retry_budget_exhausted_total"] >= requests - retries


def test_a_post_body_is_sent_again_on_a_retry(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, [502])
    body = b"".join(b"line %d\n" % i for i in range(2000))
    with Proxy(config(upstream.address, retry={"retry_on": ["5xx"], "backoff": QUICK})) as proxy:
        response = httpx.post(f"http://{proxy.address('outbound')}/orders", content=body, timeout=10)
    assert response.status_code == 200
    assert [(r.method, r.body) for r in upstream.received] == [("POST", body), ("POST", body)]


def test_a_body_over_max_replay_bytes_is_sent_once(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, [500])
    body = b"x" * 4096
    retry = {"retry_on": ["5xx"], "backoff": QUICK, "max_replay_bytes": 1024}
    with Proxy(config(upstream.address, retry=retry)) as proxy:
        response = httpx.post(f"http://{proxy.address('outbound')}/orders", content=body, timeout=10)
    assert response.status_code == 500
    assert [r.body for r in upstream.received] == [body]


def test_an_upstream_that_hangs_up_is_retried_on_reset(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, [HANG_UP])
    with Proxy(config(upstream.address, retry={"retry_on": ["reset"], "backoff": QUICK})) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/", timeout=10)
        stats = proxy.stats()["clusters"]["app"]
    assert response.status_code == 200
    assert upstream.count() == 2
    assert (stats["upstream_failures_total"], stats["retries_total"]) == (1, 1)


def test_without_a_policy_a_hang_up_is_a_502(started: list[ScriptedUpstream]) -> None:
    upstream = scripted(started, [HANG_UP])
    with Proxy(config(upstream.address)) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/", timeout=10)
    assert (response.status_code, response.headers["x-meshproxy-error"]) == (502, "upstream_failure")
    assert upstream.count() == 1


def test_a_try_over_the_per_try_timeout_is_retried(started: list[ScriptedUpstream]) -> None:
    # The first request is answered after 10 s; the policy gives each try 1 s.
    upstream = scripted(started, [(200, 10.0)])
    retry = {"retry_on": ["reset"], "per_try_timeout": "1s", "backoff": QUICK}
    with Proxy(config(upstream.address, retry=retry)) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/slow", timeout=10)
        stats = proxy.stats()["clusters"]["app"]
    assert response.status_code == 200
    assert upstream.count() == 2
    assert stats["timeouts_total"] == 1
    assert stats["retries_total"] == 1


def test_an_http2_cluster_retries_on_its_own_connections(upstreams: Callable[[str], Upstream]) -> None:
    upstream = upstreams("h2-retried")
    cfg = config(upstream.address, retry={"retry_on": ["gateway-error"], "attempts": 3, "backoff": QUICK})
    cfg["clusters"][0]["protocol"] = "http2"
    with Proxy(cfg) as proxy:
        response = httpx.get(f"http://{proxy.address('outbound')}/status/503", timeout=10)
        stats = proxy.stats()["clusters"]["app"]
    assert response.status_code == 503
    assert response.headers["x-upstream"] == "h2-retried"
    assert (stats["upstream_requests_total"], stats["retries_total"]) == (3, 2)
    assert stats["responses"]["5xx"] == 3
