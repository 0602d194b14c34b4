"""Passive outlier ejection, with real failures on loopback: an endpoint answering 500 is ejected
after consecutive_5xx, gets no requests (counted at the upstreams) until its ejection time has
passed, then comes back; a refused port is ejected for its gateway errors; max_ejection_percent
caps the share ejected. And p2c_ewma, which needs no checks, sends a slow endpoint less."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import meshproxy
import pytest
from conftest import closed_port_address, metric_value, wait_until
from controlled_upstream import ControlledUpstream

BOUND = 10.0


@pytest.fixture
def trio() -> Iterator[list[ControlledUpstream]]:
    upstreams = [ControlledUpstream(name) for name in ("a", "b", "c", "d")]
    yield upstreams
    for upstream in upstreams:
        upstream.stop()


def config(endpoints: list[str], outlier: dict[str, Any] | None, lb: str = "round_robin") -> dict[str, Any]:
    cluster: dict[str, Any] = {"name": "app", "lb": lb, "endpoints": [{"address": address} for address in endpoints]}
    if outlier is not None:
        cluster["outlier_detection"] = {"interval": "100ms", **outlier}
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [cluster],
    }


def health(proxy: meshproxy.Proxy) -> dict[str, str]:
    return {e["address"]: e["health"] for e in proxy.clusters()["app"]["endpoints"]}


def send(proxy: meshproxy.Proxy, count: int) -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [client.get(f"http://{proxy.address('outbound')}/").status_code for _ in range(count)]


def test_an_endpoint_answering_500_is_ejected_gets_nothing_for_its_ejection_time_then_returns(
    trio: list[ControlledUpstream], capfd: pytest.CaptureFixture[str]
) -> None:
    a, b, c, _ = trio
    a.mode = "error"
    outlier = {"consecutive_5xx": 3, "base_ejection_time": "2s", "max_ejection_percent": 50}
    with meshproxy.Proxy(config([a.address, b.address, c.address], outlier)) as proxy:
        # Round robin: a gets every third request; its third 500 in a row ejects it.
        statuses = send(proxy, 9)
        assert statuses.count(500) == 3
        assert health(proxy)[a.address] == "ejected"
        assert proxy.stats()["clusters"]["app"]["ejections_total"] == 1
        admin = proxy.admin_address
        assert admin is not None
        assert metric_value(admin, "meshproxy_cluster_ejections_total") == 1
        assert metric_value(admin, "meshproxy_cluster_ejected_endpoints") == 1

        ejected_at = time.monotonic()
        before = a.requests("/")
        statuses = send(proxy, 20)
        if time.monotonic() - ejected_at < 2:  # all sent within the ejection time
            assert statuses == [200] * 20
            assert a.requests("/") == before, "no request reached the ejected endpoint"

        a.mode = "ok"
        wait_until(lambda: health(proxy)[a.address] == "healthy", timeout=BOUND, what="the ejection to end")
        send(proxy, 6)
        assert a.requests("/") > before
    assert "ejected for 2000ms (3 consecutive 5xx" in capfd.readouterr().err


def test_a_refused_endpoint_is_ejected_for_its_gateway_errors(trio: list[ControlledUpstream]) -> None:
    b = trio[1]
    dead = closed_port_address()
    outlier = {"consecutive_5xx": 100, "consecutive_gateway_errors": 2, "max_ejection_percent": 50}
    with meshproxy.Proxy(config([dead, b.address], outlier)) as proxy:
        # Each connect failure moves its request to b: the caller sees only 200s.
        assert send(proxy, 6) == [200] * 6
        wait_until(lambda: health(proxy)[dead] == "ejected", timeout=BOUND, what="the refused endpoint's ejection")
        failures = proxy.stats()["clusters"]["app"]["connect_failures_total"]
        assert send(proxy, 10) == [200] * 10
        assert proxy.stats()["clusters"]["app"]["connect_failures_total"] == failures


def test_max_ejection_percent_caps_the_share_ejected(trio: list[ControlledUpstream]) -> None:
    for upstream in trio:
        upstream.mode = "error"
    outlier = {"consecutive_5xx": 2, "base_ejection_time": "30s", "max_ejection_percent": 50}
    with meshproxy.Proxy(config([u.address for u in trio], outlier)) as proxy:
        send(proxy, 40)
        shown = health(proxy)
        assert sorted(shown.values()) == ["ejected", "ejected", "healthy", "healthy"]
        assert proxy.stats()["clusters"]["app"]["ejections_total"] == 2
        # The two left take every request from here on.
        left = [u for u in trio if shown[u.address] == "healthy"]
        gone = [u for u in trio if shown[u.address] == "ejected"]
        counts = [u.requests("/") for u in gone]
        send(proxy, 10)
        assert [u.requests("/") for u in gone] == counts
        assert all(u.requests("/") > 0 for u in left)


def test_p2c_ewma_sends_a_slow_endpoint_less_than_a_fast_one(trio: list[ControlledUpstream]) -> None:
    fast, slow = trio[0], trio[1]
    slow.delay = 0.05
    with meshproxy.Proxy(config([fast.address, slow.address], None, lb="p2c_ewma")) as proxy:
        send(proxy, 60)
    assert slow.requests("/") < fast.requests("/")
