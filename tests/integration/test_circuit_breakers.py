"""Circuit breakers through a running proxy, against a real upstream on loopback that holds
its requests (a slow dependency): the requests over a limit are answered 503 `overflow` at
once, counted, and never reach the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scripted_upstream import ScriptedUpstream
from conftest import occupied_address
from upstreams import wait_until

from meshproxy import Proxy


def config(upstream: ScriptedUpstream, breakers: dict[str, Any] | None, retry: dict[str, Any] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": "app"}
    if retry is not None:
        route["retry"] = retry
    cluster: dict[str, Any] = {"name": "app", "endpoints": [{"address": upstream.address}]}
    if breakers is not None:
        cluster["circuit_breakers"] = breakers
    return {"listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [route]}], "clusters": [cluster]}


@pytest.fixture
def slow() -> Iterator[ScriptedUpstream]:
    """Holds every request until released."""
    upstream = ScriptedUpstream(hold=True)
    yield upstream
    upstream.stop()


def metric(proxy: Proxy, sample: str, **labels: str) -> float:
    families = text_string_to_metric_families(proxy.metrics().decode())
    values = [s.value for f in families for s in f.samples if s.name == sample and labels.items() <= s.labels.items()]
    assert len(values) == 1, f"{len(values)} samples {sample} {labels}"
    return values[0]


def concurrent_gets(proxy: Proxy, count: int, upstream: ScriptedUpstream, held: int) -> list[httpx.Response]:
    """`count` requests at once, each on its own connection; the upstream is released once the
    refused ones have been answered, with `held` requests waiting at it."""
    url = f"http://{proxy.address('outbound')}/"
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(httpx.get, url, timeout=20) for _ in range(count)]
        wait_until(lambda: sum(f.done() for f in futures) == count - held and upstream.count() == held,
                   timeout=15, what="the refused answers, and the admitted requests at the upstream")
        upstream.release()
        return [f.result() for f in futures]


def test_requests_over_max_requests_get_503_overflow_at_once(slow: ScriptedUpstream) -> None:
    with Proxy(config(slow, {"max_requests": 2})) as proxy:
        answers = concurrent_gets(proxy, 10, slow, held=2)
        stats = proxy.stats()
        overflow_metric = metric(proxy, "meshproxy_upstream_overflow_total", cluster="app")
        errors_metric = metric(proxy, "meshproxy_proxy_errors_total", reason="overflow")
    refused = [a for a in answers if a.status_code == 503]
    assert len(refused) == 8
    assert {a.headers["x-meshproxy-error"] for a in refused} == {"overflow"}
    assert "max_requests" in refused[0].text
    assert sorted(a.status_code for a in answers if a not in refused) == [200, 200]
    assert slow.most_in_flight == 2
    assert stats["clusters"]["app"]["overflow_total"] == 8
    assert stats["errors"]["overflow"] == 8
    assert overflow_metric == 8
    assert errors_metric == 8


def test_a_request_over_max_connections_gets_503_overflow(slow: ScriptedUpstream) -> None:
    # HTTP/1.1: each request in flight needs its own upstream connection.
    with Proxy(config(slow, {"max_connections": 1})) as proxy:
        answers = concurrent_gets(proxy, 3, slow, held=1)
        overflow = proxy.stats()["clusters"]["app"]["overflow_total"]
    assert sorted(a.status_code for a in answers) == [200, 503, 503]
    assert overflow == 2


def test_a_retry_over_max_retries_is_not_made() -> None:
    upstream = ScriptedUpstream([500])
    try:
        retry = {"retry_on": ["5xx"], "backoff": {"base_interval": "1ms", "max_interval": "1ms"}}
        with Proxy(config(upstream, {"max_retries": 0}, retry=retry)) as proxy:
            response = httpx.get(f"http://{proxy.address('outbound')}/", timeout=10)
            stats = proxy.stats()["clusters"]["app"]
    finally:
        upstream.stop()
    assert response.status_code == 500, "the failure the retry would have retried"
    assert upstream.count() == 1
    assert (stats["retries_total"], stats["retry_overflow_total"]) == (0, 1)


def test_without_breakers_nothing_overflows(slow: ScriptedUpstream) -> None:
    with Proxy(config(slow, None)) as proxy:
        url = f"http://{proxy.address('outbound')}/"
        with ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(httpx.get, url, timeout=20) for _ in range(10)]
            wait_until(lambda: slow.count() == 10, timeout=15, what="every request at the upstream")
            slow.release()
            statuses = [f.result().status_code for f in futures]
        overflow = proxy.stats()["clusters"]["app"]["overflow_total"]
    assert statuses == [200] * 10
    assert overflow == 0


def test_requests_over_max_pending_requests_get_503_overflow() -> None:
    # An upstream that takes connections and never answers: a TLS handshake with it waits out
    # the connect timeout, and every request waits for its connection meanwhile.
    with occupied_address() as silent:
        cfg: dict[str, Any] = {
            "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
            "clusters": [{"name": "app", "connect_timeout": "2s", "tls": {"mode": "tls"},
                          "circuit_breakers": {"max_pending_requests": 1},
                          "endpoints": [{"address": silent}]}],
        }
        with Proxy(cfg) as proxy:
            url = f"http://{proxy.address('outbound')}/"
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda _: httpx.get(url, timeout=20), range(3)))
            overflow = proxy.stats()["clusters"]["app"]["overflow_total"]
    errors = sorted(a.headers["x-meshproxy-error"] for a in answers)
    assert errors == ["connect_failure", "overflow", "overflow"]
    assert overflow == 2


def test_a_request_waiting_for_its_response_is_not_pending(slow: ScriptedUpstream) -> None:
    # Each of the three needs its own connection; once made, a request no longer waits for one.
    # One after the other: two connections made at the same moment would both be pending.
    with Proxy(config(slow, {"max_pending_requests": 1})) as proxy:
        url = f"http://{proxy.address('outbound')}/"
        with ThreadPoolExecutor(3) as pool:
            futures = []
            for n in range(1, 4):
                futures.append(pool.submit(httpx.get, url, timeout=20))
                wait_until(lambda: slow.count() == n, timeout=15, what=f"request {n} at the upstream")
            slow.release()
            statuses = [f.result().status_code for f in futures]
        overflow = proxy.stats()["clusters"]["app"]["overflow_total"]
    assert statuses == [200, 200, 200]
    assert overflow == 0
