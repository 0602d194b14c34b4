"""Load balancing through a running proxy, against real upstreams of equal latency."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
from conftest import Upstream
from upstreams import start_upstreams_together
from meshproxy import Proxy


def weighted_config(lb: str, heavy: Upstream, light: Upstream, zero: Upstream) -> dict[str, Any]:
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "lb": lb, "endpoints": [
            {"address": heavy.address, "weight": 2},
            {"address": light.address, "weight": 1},
            {"address": zero.address, "weight": 0},
        ]}],
    }


async def answered_by(address: str, count: int, concurrency: int, path: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://{address}", limits=limits, timeout=30) as client:
        for start in range(0, count, concurrency):
            batch = await asyncio.gather(*[client.get(path) for _ in range(min(concurrency, count - start))])
            seen.update(r.headers["x-upstream"] for r in batch)
    return seen


@pytest.fixture(scope="module")
def alike() -> Iterator[list[Upstream]]:
    """heavy, light and zero, served by one process: equally slow at any moment."""
    started = start_upstreams_together(["heavy", "light", "zero"])
    yield started
    started[0].stop()


@pytest.mark.parametrize("lb", ["round_robin", "random", "least_request", "p2c_ewma"])  # hashing: test_affinity.py
@pytest.mark.parametrize(("concurrency", "count", "delay_ms"), [(1, 600, 5), (16, 1500, 10)], ids=["sequential", "concurrent"])
def test_weight_two_gets_twice_the_share_and_weight_zero_none(
    alike: list[Upstream], lb: str, concurrency: int, count: int, delay_ms: int
) -> None:
    # Equal latency, which latency-aware policies need to show their weights, comes from a
    # fixed upstream delay and from one process serving all three: a stall of the machine
    # slows them alike, where separate processes would each get their own.
    config = weighted_config(lb, *alike)
    with Proxy(config) as proxy:
        seen = asyncio.run(answered_by(proxy.address("outbound"), count, concurrency, f"/delay/{delay_ms}"))
    assert seen["zero"] == 0
    # p2c_ewma also weighs latency, which on a loaded two-core machine is never quite equal: a
    # few slow answers from one upstream shift its share for a while, so it gets more slack.
    tolerance = 0.1 if lb == "p2c_ewma" else 0.06
    assert abs(seen["heavy"] / count - 2 / 3) < tolerance, seen


def test_pooled_connections_of_a_surviving_endpoint_outlive_a_config_swap(upstreams: Callable[[str], Upstream]) -> None:
    stay, leave = upstreams("stay"), upstreams("leave")

    def config(*endpoints: Upstream) -> dict[str, Any]:
        return {"listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
                "clusters": [{"name": "app", "lb": "round_robin",
                              "endpoints": [{"address": u.address} for u in endpoints]}]}

    with Proxy(config(stay, leave)) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}") as client:
        before = [client.get("/").json() for _ in range(6)]
        assert {a["upstream"] for a in before} == {"stay", "leave"}
        proxy.reload(config(stay))
        after = [client.get("/").json() for _ in range(6)]
    assert {a["upstream"] for a in after} == {"stay"}
    # Sequential requests reuse one keep-alive connection per endpoint, before and after the swap.
    ports_before = {a["client_port"] for a in before if a["upstream"] == "stay"}
    assert len(ports_before) == 1
    assert {a["client_port"] for a in after} == ports_before


@pytest.mark.parametrize("lb", ["p2c_ewma", "least_request", "round_robin", "random"])
def test_a_request_refused_by_a_dead_endpoint_is_retried_on_another(
        lb: str, upstreams: Callable[[str], Upstream]) -> None:
    """A refused connection fails fast, so a dead endpoint would look the least loaded and the
    fastest: the retry goes to another endpoint, and latency-aware picks shun the dead one."""
    from conftest import closed_port_address

    live = upstreams("live")
    config = {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "lb": lb, "endpoints": [{"address": live.address},
                                                              {"address": closed_port_address()}]}],
    }
    with Proxy(config) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
        statuses = Counter(client.get("/anything").status_code for _ in range(300))
        failures = proxy.stats()["clusters"]["app"]["connect_failures_total"]
    assert statuses == Counter({200: 300})
    if lb == "p2c_ewma":
        # Drawn again only when both of the two choices fall on it.
        assert failures < 150, failures
