"""A mesh-sized config (10,000 routes, 100,000 endpoints) swapped in again and again under
continuous load: no request fails, and each swap takes effect."""

from __future__ import annotations

from typing import Callable

import httpx
from conftest import Upstream, wait_until
from large_config import LIVE_HOST, large_config
from meshproxy import Proxy
from steady_load import SteadyLoad

RELOADS = 4


def served_by(base_url: str) -> str:
    response = httpx.get(base_url, headers={"host": LIVE_HOST}, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["x-upstream"]


def test_large_configs_swap_under_load_without_a_failed_request(upstreams: Callable[[str], Upstream]) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    configs = {"v1": large_config([v1.address]), "v2": large_config([v2.address])}
    with Proxy(configs["v1"]) as proxy:
        base = f"http://{proxy.address('outbound')}"
        assert served_by(base) == "v1"
        with SteadyLoad(base, host=LIVE_HOST) as load:
            for i in range(RELOADS):
                # Some traffic before each swap (bounded wait), then the swap under it.
                floor = load.count() + 50
                wait_until(lambda: load.count() >= floor, timeout=30, what="traffic between reloads")
                live = "v2" if i % 2 == 0 else "v1"
                version = proxy.reload(configs[live])
                assert version == i + 2
                assert served_by(base) == live
            floor = load.count() + 50
            wait_until(lambda: load.count() >= floor, timeout=30, what="traffic after the last reload")
        assert load.failures() == []
        assert set(load.upstreams()) == {"v1", "v2"}
