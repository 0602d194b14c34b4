"""Traffic mirroring (`mirror` on a route): copies sent fire and forget to a shadow cluster,
Host suffixed `-shadow`; a shadow that hangs is never seen by the caller, and holds at most a
bounded number of copies in flight."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import Upstream, body_json, wait_until
from meshproxy import Proxy
from recording_upstream import RecordingUpstream

Upstreams = Callable[[str], Upstream]
IN_FLIGHT_CAP = 128


@pytest.fixture
def hanging() -> Iterator[str]:
    """An address whose kernel completes connections and takes requests, and that never
    answers (nothing accepts): a shadow that hangs."""
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
        yield "127.0.0.1:%d" % server.getsockname()[1]


def mirrored(app: Upstream, shadow: str, timeout: str = "15s") -> dict[str, Any]:
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [
            {"name": "orders", "cluster": "app", "timeout": timeout, "mirror": {"cluster": "shadow"}},
        ]}],
        "clusters": [{"name": "app", "endpoints": [{"address": app.address}]},
                     {"name": "shadow", "endpoints": [{"address": shadow}]}],
    }


def counts(proxy: Proxy) -> dict[str, Any]:
    [entry] = [e for e in proxy.stats()["route_rules"] if e["route"] == "orders"]
    return entry


def test_a_copy_reaches_the_shadow_with_its_host_suffixed(upstreams: Upstreams) -> None:
    shadow = RecordingUpstream()
    try:
        with Proxy(mirrored(upstreams("app"), shadow.address)) as proxy, httpx.Client(timeout=10) as client:
            url = f"http://{proxy.address('outbound')}"
            response = client.get(f"{url}/orders/7?x=1", headers={"host": "orders:8080"})
            assert (response.status_code, body_json(response)["upstream"]) == (200, "app")
            wait_until(lambda: len(shadow.requests) == 1, what="the copy at the shadow")
            [copy] = shadow.requests
            assert (copy.method, copy.target, copy.headers["host"]) == ("GET", "/orders/7?x=1", "orders-shadow:8080")
            assert counts(proxy)["mirrors_total"] == 1
    finally:
        shadow.stop()
    assert len(shadow.requests) == 1


def test_a_small_body_is_copied_and_a_large_one_is_forwarded_alone(upstreams: Upstreams) -> None:
    shadow = RecordingUpstream()
    small, large = b'{"id": 7}', b"x" * (64 * 1024 + 1)
    try:
        with Proxy(mirrored(upstreams("app"), shadow.address)) as proxy, httpx.Client(timeout=10) as client:
            url = f"http://{proxy.address('outbound')}/orders"
            for body in (small, large):
                seen = body_json(client.post(url, content=body, headers={"host": "orders"}))
                # The caller's request reaches the route's cluster whole either way.
                assert (seen["upstream"], seen["received"]) == ("app", len(body))
            wait_until(lambda: len(shadow.requests) == 1 and shadow.requests[0].complete, what="the copy at the shadow")
            [copy] = shadow.requests
            assert (copy.method, copy.body) == ("POST", small)
            assert counts(proxy)["mirrors_total"] == 1
            # The buffered body is counted as a streamed one is.
            [traffic] = [s for s in proxy.stats()["traffic"]["stats"] if s["route"] == "orders"]
            assert traffic["request_bytes"] == len(small) + len(large)
    finally:
        shadow.stop()
    assert len(shadow.requests) == 1


def test_a_hanging_shadow_never_reaches_the_caller(upstreams: Upstreams, hanging: str) -> None:
    with Proxy(mirrored(upstreams("app"), hanging, timeout="500ms")) as proxy, httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}/"
        responses = [client.get(url) for _ in range(5)]
        assert [(r.status_code, body_json(r)["upstream"]) for r in responses] == [(200, "app")] * 5
        # Each copy gives up at the route's timeout, counted, not answered to anyone.
        wait_until(lambda: counts(proxy)["mirror_failures_total"] == 5, what="the copies to time out")
        assert counts(proxy)["mirrors_total"] == 5


def test_copies_beyond_the_in_flight_cap_are_dropped(upstreams: Upstreams, hanging: str) -> None:
    with Proxy(mirrored(upstreams("app"), hanging, timeout="60s")) as proxy, httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}/"
        statuses = [client.get(url).status_code for _ in range(IN_FLIGHT_CAP + 12)]
        assert statuses == [200] * (IN_FLIGHT_CAP + 12)
        entry = counts(proxy)
        assert (entry["mirrors_total"], entry["mirrors_dropped_total"]) == (IN_FLIGHT_CAP, 12)


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_a_shadow_cluster_of_either_protocol_answers_the_copy(upstreams: Upstreams, protocol: str) -> None:
    config = mirrored(upstreams("app"), upstreams("shadow").address)
    config["clusters"][1]["protocol"] = protocol
    with Proxy(config) as proxy, httpx.Client(timeout=10) as client:
        assert body_json(client.get(f"http://{proxy.address('outbound')}/", headers={"host": "orders"}))["upstream"] == "app"
        # The shadow's answer is counted in its cluster's stats, and goes nowhere else.
        wait_until(lambda: proxy.stats()["clusters"]["shadow"]["responses"].get("2xx") == 1, what="the shadow's answer")
        assert counts(proxy)["mirror_failures_total"] == 0
