"""Fault injection per route (`fault`): an abort answers the configured status (`fault_injected`)
without reaching the upstream, for the requests carrying a header or a share of all; a delay
holds a request before forwarding it. Both counted per route."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from meshproxy import Proxy
from recording_upstream import RecordingUpstream


@pytest.fixture
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    yield upstream
    upstream.stop()


def faulty(upstream: RecordingUpstream, fault: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0",
                       "routes": [{"name": "orders", "cluster": "app", "fault": fault}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": upstream.address}]}],
    }


def counts(proxy: Proxy) -> dict[str, Any]:
    [entry] = [e for e in proxy.stats()["route_rules"] if e["route"] == "orders"]
    return entry


def test_an_abort_by_header_affects_only_requests_carrying_it(recorder: RecordingUpstream) -> None:
    with Proxy(faulty(recorder, {"abort": {"status": 503, "header": "x-fault"}})) as proxy, \
            httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}"
        plain = [client.get(f"{url}/plain/{i}") for i in range(5)]
        marked = [client.get(f"{url}/marked/{i}", headers={"x-fault": "1"}) for i in range(5)]
        assert [r.status_code for r in plain] == [200] * 5
        assert [r.status_code for r in marked] == [503] * 5
        assert all(r.headers["x-meshproxy-error"] == "fault_injected" for r in marked)
        assert counts(proxy)["fault_aborts_total"] == 5
        assert proxy.stats()["errors"]["fault_injected"] == 5
    # Aborted requests never reached the upstream.
    assert sorted(recorder.targets()) == [f"/plain/{i}" for i in range(5)]


def test_an_abort_without_header_takes_its_share_of_all_requests(recorder: RecordingUpstream) -> None:
    with Proxy(faulty(recorder, {"abort": {"status": 418, "percent": 50}})) as proxy, httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}/"
        statuses = [client.get(url).status_code for _ in range(200)]
        aborted = statuses.count(418)
        # Binomial(200, 0.5): outside 50..150 about once in 10^12 runs.
        assert 50 <= aborted <= 150, aborted
        assert statuses.count(200) == 200 - aborted
        assert counts(proxy)["fault_aborts_total"] == aborted
    assert len(recorder.requests) == 200 - aborted


def test_a_delay_holds_the_requests_carrying_its_header_before_forwarding(recorder: RecordingUpstream) -> None:
    fault = {"delay": {"fixed": "300ms", "header": "x-delay"}}
    with Proxy(faulty(recorder, fault)) as proxy, httpx.Client(timeout=10) as client:
        url = f"http://{proxy.address('outbound')}/"
        assert client.get(url).status_code == 200
        assert counts(proxy)["fault_delays_total"] == 0
        started = time.monotonic()
        delayed = client.get(url, headers={"x-delay": "yes"})
        took = time.monotonic() - started
        assert delayed.status_code == 200
        assert took >= 0.3, took
        assert counts(proxy)["fault_delays_total"] == 1
    assert len(recorder.requests) == 2


def test_a_delay_then_an_abort_both_apply_and_count(recorder: RecordingUpstream) -> None:
    fault = {"delay": {"fixed": "100ms", "percent": 100}, "abort": {"status": 500, "percent": 100.0}}
    with Proxy(faulty(recorder, fault)) as proxy, httpx.Client(timeout=10) as client:
        response = client.get(f"http://{proxy.address('outbound')}/")
        assert (response.status_code, response.headers["x-meshproxy-error"]) == (500, "fault_injected")
        assert {k: counts(proxy)[k] for k in ("fault_delays_total", "fault_aborts_total")} == \
            {"fault_delays_total": 1, "fault_aborts_total": 1}
    assert recorder.requests == []
