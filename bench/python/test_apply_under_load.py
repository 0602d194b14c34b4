"""Applying the mesh-sized config to a proxy under continuous load: how long each apply takes
while requests flow, and that none of them fails meanwhile."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx
from conftest import Upstream
from large_config import LIVE_HOST
from meshproxy import Proxy
from pytest_benchmark.fixture import BenchmarkFixture
from steady_load import SteadyLoad

ROUNDS = 6


def test_apply_under_load(
    benchmark: BenchmarkFixture, upstreams: Callable[[str], Upstream], big_config: Callable[[str], dict[str, Any]]
) -> None:
    live = itertools.cycle(["v2", "v1"])
    addresses = {name: upstreams(name).address for name in ("v1", "v2")}
    with Proxy(big_config(addresses["v1"])) as proxy:
        base = f"http://{proxy.address('outbound')}"
        with SteadyLoad(base, host=LIVE_HOST) as load:
            applied: list[str] = []

            def next_config() -> tuple[tuple[Any, ...], dict[str, Any]]:
                applied.append(next(live))
                return (big_config(addresses[applied[-1]]),), {}

            benchmark.pedantic(proxy.reload, setup=next_config, rounds=ROUNDS)
            answered = httpx.get(base, headers={"host": LIVE_HOST}, timeout=10).headers["x-upstream"]
            requests = load.count()
        assert load.failures() == []
        assert answered == applied[-1]
        benchmark.extra_info["requests_during_applies"] = requests
