"""Span export retries: a batch the collector could not take for a retryable reason (no
connection, 429, 502, 503, 504) is sent again; any other refusal drops it at once. A real
OTLP/HTTP receiver (``otlp_receiver``) answers as an overloaded collector would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import Upstream, closed_port_address, one_route_config, wait_until
from otlp_receiver import OtlpReceiver, otlp_receiver
from prometheus_client.parser import text_string_to_metric_families

import meshproxy
from meshproxy.export_retry import RETRY_DELAYS

Upstreams = Callable[[str], Upstream]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


def traced(upstream: Upstream, endpoint: str) -> dict[str, Any]:
    return one_route_config(
        {"name": "app", "endpoints": [{"address": upstream.address}]},
        tracing={"otlp_endpoint": endpoint, "service_name": "orders"},
    )


def one_request(proxy: meshproxy.Proxy) -> None:
    assert httpx.get(f"http://{proxy.address('outbound')}/anything", timeout=10).status_code == 200


def exporter_stats(proxy: meshproxy.Proxy) -> dict[str, int]:
    tracing = proxy.stats()["tracing"]
    return {key: tracing[key] for key in ("exported", "export_failed", "export_retries")}


def retries_metric(proxy: meshproxy.Proxy) -> float:
    families = text_string_to_metric_families(proxy.metrics().decode())
    [value] = [s.value for f in families for s in f.samples if s.name == "meshproxy_spans_export_retries_total"]
    return value


def test_a_batch_refused_with_503_then_429_arrives_on_the_second_retry(
        upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    receiver.refuse(503, {"Retry-After": "2"})
    receiver.refuse(429)
    with meshproxy.Proxy(traced(upstreams("v1"), receiver.endpoint)) as proxy:
        one_request(proxy)
        wait_until(lambda: len(receiver.received()) == 1, what="the span at the receiver")
        assert receiver.statuses() == [503, 429, 200]
        wait_until(lambda: exporter_stats(proxy)["exported"] == 1, what="the exported span to be counted")
        assert exporter_stats(proxy) == {"exported": 1, "export_failed": 0, "export_retries": 2}
        assert retries_metric(proxy) == 2
    # The collector asked for 2 s after the 503, longer than the first backoff step.
    first, second = receiver.arrivals()[:2]
    assert second - first >= 2.0


def test_a_batch_refused_with_400_is_dropped_without_a_retry(upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    receiver.refuse(400)
    with meshproxy.Proxy(traced(upstreams("v1"), receiver.endpoint)) as proxy:
        one_request(proxy)
        wait_until(lambda: exporter_stats(proxy)["export_failed"] == 1, what="the dropped span to be counted")
        # The next batch goes through; a retry of the first would have come before it.
        one_request(proxy)
        wait_until(lambda: len(receiver.received()) == 1, what="the second span at the receiver")
        assert receiver.statuses() == [400, 200]
        wait_until(lambda: exporter_stats(proxy)["exported"] == 1, what="the exported span to be counted")
        assert exporter_stats(proxy) == {"exported": 1, "export_failed": 1, "export_retries": 0}


def test_a_collector_that_cannot_be_reached_gets_three_retries_then_the_batch_fails(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(traced(upstreams("v1"), "http://" + closed_port_address())) as proxy:
        one_request(proxy)
        wait_until(lambda: exporter_stats(proxy)["export_failed"] == 1, what="the failed batch to be counted")
        assert exporter_stats(proxy) == {"exported": 0, "export_failed": 1, "export_retries": len(RETRY_DELAYS)}
        assert retries_metric(proxy) == len(RETRY_DELAYS)


def test_a_stopping_proxy_gives_up_the_retries_of_a_batch(upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    for _ in range(len(RETRY_DELAYS) + 1):
        receiver.refuse(503)
    proxy = meshproxy.Proxy(traced(upstreams("v1"), receiver.endpoint)).start()
    try:
        one_request(proxy)
        wait_until(lambda: len(receiver.statuses()) == 2, what="the first retry")
    finally:
        proxy.stop()
    # stop() has joined the exporter: whatever it was going to send has been sent.
    assert len(receiver.statuses()) < len(RETRY_DELAYS) + 1
    assert receiver.received() == []
