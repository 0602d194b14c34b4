"""Tracing through ``meshproxy run``: W3C ``traceparent`` and B3 propagation as the upstream sees
it, and the proxy's spans as a real OTLP/HTTP receiver (``otlp_receiver``, built from the
opentelemetry-proto definitions) gets them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import (
    ProxyProcess,
    Upstream,
    body_json,
    closed_port_address,
    metric_value,
    one_route_config,
    wait_until,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

Upstreams = Callable[[str], Upstream]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


def config(upstream: Upstream, endpoint: str, sample: float = 1.0) -> dict[str, Any]:
    return one_route_config(
        {"name": "app", "endpoints": [{"address": upstream.address}]},
        admin={"address": "127.0.0.1:0"},
        tracing={"otlp_endpoint": endpoint, "sample": sample, "service_name": "orders"},
    )


def seen_upstream(proxy: ProxyProcess, headers: dict[str, str] | None = None, path: str = "/anything") -> dict[str, str]:
    """The request headers the upstream received for one request through the proxy."""
    response = httpx.get(f"http://{proxy.address('outbound')}{path}", headers=headers or {}, timeout=10)
    assert response.status_code == 200, response.text
    received: dict[str, str] = body_json(response)["headers"]
    return received


def traceparent(headers: dict[str, str]) -> tuple[str, str, str]:
    match = TRACEPARENT.fullmatch(headers.get("traceparent", ""))
    assert match is not None, headers
    return match.group(1), match.group(2), match.group(3)


def spans_after(receiver: OtlpReceiver, count: int) -> list[ReceivedSpan]:
    wait_until(lambda: len(receiver.received()) >= count, what=f"{count} spans at the receiver")
    return receiver.received()


def test_an_incoming_traceparent_is_continued_with_the_proxy_span_as_parent(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), receiver.endpoint))
    seen = seen_upstream(proxy, {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01", "tracestate": "vendor=opaque"})
    trace_id, proxy_span, flags = traceparent(seen)
    assert (trace_id, flags) == (TRACE, "01")
    assert proxy_span != CALLER_SPAN
    assert seen["tracestate"] == "vendor=opaque"
    [span] = spans_after(receiver, 1)
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, proxy_span, CALLER_SPAN)
    assert span.span.kind == Span.SPAN_KIND_SERVER


@pytest.mark.parametrize("style", ["single", "multi"])
def test_b3_in_is_b3_out_naming_the_proxy_span(style: str, meshproxy_run: Callable[..., ProxyProcess],
                                              upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), receiver.endpoint))
    if style == "single":
        seen = seen_upstream(proxy, {"b3": f"{TRACE}-{CALLER_SPAN}-1"})
        _, proxy_span, _ = traceparent(seen)
        assert seen["b3"] == f"{TRACE}-{proxy_span}-1-{CALLER_SPAN}"
        assert "x-b3-traceid" not in seen
    else:
        seen = seen_upstream(proxy, {"x-b3-traceid": TRACE, "x-b3-spanid": CALLER_SPAN, "x-b3-sampled": "1"})
        _, proxy_span, _ = traceparent(seen)
        b3 = {name: seen.get(name) for name in ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled")}
        assert b3 == {"x-b3-traceid": TRACE, "x-b3-spanid": proxy_span, "x-b3-parentspanid": CALLER_SPAN,
                      "x-b3-sampled": "1"}
        assert "b3" not in seen
    assert traceparent(seen) == (TRACE, proxy_span, "01")
    [span] = spans_after(receiver, 1)
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, proxy_span, CALLER_SPAN)


def test_without_a_context_each_request_starts_a_trace_the_upstream_continues(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), receiver.endpoint))
    started = [traceparent(seen_upstream(proxy)) for _ in range(2)]
    assert started[0][0] != started[1][0], "each request is a trace of its own"
    assert [flags for _, _, flags in started] == ["01", "01"]
    spans = spans_after(receiver, 2)
    assert sorted((s.trace_id, s.span_id, s.parent_span_id) for s in spans) == sorted(
        (trace_id, span_id, "") for trace_id, span_id, _ in started)


def test_sample_0_exports_nothing_but_still_propagates_and_honours_a_sampled_caller(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), receiver.endpoint, sample=0.0))
    new_trace, _, flags = traceparent(seen_upstream(proxy))
    assert flags == "00"
    unsampled = traceparent(seen_upstream(proxy, {"traceparent": f"00-{TRACE}-{CALLER_SPAN}-00"}))
    assert (unsampled[0], unsampled[2]) == (TRACE, "00")
    sampled_trace = "0af7651916cd43dd8448eb211c80319c"
    sampled = traceparent(seen_upstream(proxy, {"traceparent": f"00-{sampled_trace}-{CALLER_SPAN}-01"}))
    # Stopping sends what the engine still holds: after it, the receiver has all it will get.
    assert proxy.stop() == 0
    assert [(s.trace_id, s.span_id) for s in receiver.received()] == [(sampled_trace, sampled[1])]
    assert new_trace != TRACE


def test_spans_carry_the_requests_attributes_and_errors(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    upstream = upstreams("v1")
    proxy = meshproxy_run(config(upstream, receiver.endpoint))
    response = httpx.get(f"http://{proxy.address('outbound')}/anything/7?full=1", headers={"host": "orders:8080"},
                         timeout=10)
    request_id = body_json(response)["headers"]["x-request-id"]
    failed = httpx.get(f"http://{proxy.address('outbound')}/status/503", timeout=10)
    assert failed.status_code == 503
    spans = {span.attributes["url.path"]: span for span in spans_after(receiver, 2)}
    ok = spans["/anything/7"]
    assert ok.resource["service.name"] == "orders"
    assert ok.span.name == "GET outbound/0"
    assert {key: ok.attributes.get(key) for key in (
        "http.request.method", "url.query", "http.response.status_code", "server.address", "server.port",
        "network.peer.address", "network.protocol.version", "http.response.body.size", "meshproxy.listener",
        "meshproxy.direction", "meshproxy.cluster", "meshproxy.upstream_address", "meshproxy.request_id",
    )} == {
        "http.request.method": "GET", "url.query": "full=1", "http.response.status_code": 200,
        "server.address": "orders", "server.port": 8080, "network.peer.address": "127.0.0.1",
        "network.protocol.version": "1.1", "http.response.body.size": len(response.content),
        "meshproxy.listener": "outbound", "meshproxy.direction": "outbound", "meshproxy.cluster": "app",
        "meshproxy.upstream_address": upstream.address, "meshproxy.request_id": request_id,
    }
    assert ok.span.status.code == Status.STATUS_CODE_UNSET
    assert ok.span.end_time_unix_nano > ok.span.start_time_unix_nano
    error = spans["/status/503"]
    assert (error.attributes["error.type"], error.span.status.code) == ("503", Status.STATUS_CODE_ERROR)
    assert set(receiver.content_types) == {"application/x-protobuf"}

    def tracing_stats() -> dict[str, int]:
        stats: dict[str, int] = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()["tracing"]
        return stats

    # The exporter counts a batch once the collector has answered, just after it got the spans.
    wait_until(lambda: tracing_stats()["exported"] == 2, what="the exported spans to be counted")
    assert tracing_stats() == {"spans": 2, "dropped": 0, "exported": 2, "export_failed": 0, "export_retries": 0}
    assert proxy.admin is not None
    assert [metric_value(proxy.admin, f"meshproxy_spans_{name}total") for name in ("", "dropped_", "exported_")] == [
        2, 0, 2]


def test_a_proxy_error_is_a_failed_span_naming_its_reason(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    document = config(upstreams("v1"), receiver.endpoint)
    document["clusters"][0]["endpoints"] = [{"address": closed_port_address()}]
    proxy = meshproxy_run(document)
    assert httpx.get(f"http://{proxy.address('outbound')}/", timeout=10).status_code == 502
    [span] = spans_after(receiver, 1)
    assert span.attributes["error.type"] == "connect_failure"
    assert (span.span.status.code, span.span.status.message) == (Status.STATUS_CODE_ERROR, "connect_failure")


def test_a_collector_that_is_down_costs_spans_not_requests(
        meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> None:
    proxy = meshproxy_run(config(upstreams("v1"), "http://" + closed_port_address()))
    assert traceparent(seen_upstream(proxy))[2] == "01"

    def failed() -> int:
        stats = httpx.get(f"http://{proxy.admin}/stats", timeout=10).json()["tracing"]
        return int(stats["export_failed"])

    wait_until(lambda: failed() == 1, what="the failed export to be counted")
    wait_until(lambda: any("span export to http://" in line and "failed" in line for line in proxy.log_lines),
               what="the failure to be logged")


def test_a_reload_turns_tracing_on_and_off(upstreams: Upstreams, receiver: OtlpReceiver) -> None:
    import meshproxy

    traced = config(upstreams("v1"), receiver.endpoint)
    plain = {key: value for key, value in traced.items() if key != "tracing"}
    with meshproxy.Proxy(plain) as proxy:
        url = f"http://{proxy.address('outbound')}/anything"
        untouched = body_json(httpx.get(url, timeout=10))["headers"]
        assert "traceparent" not in untouched, "without tracing the proxy adds no trace headers"
        proxy.reload(traced)
        traced_seen = body_json(httpx.get(url, timeout=10))["headers"]
        [span] = spans_after(receiver, 1)
        assert span.trace_id == traceparent(traced_seen)[0]
        assert "exported" in proxy.stats()["tracing"]
        proxy.reload(plain)
        assert "exported" not in proxy.stats()["tracing"], "the exporter stopped with the section"
        assert "traceparent" not in body_json(httpx.get(url, timeout=10))["headers"]
