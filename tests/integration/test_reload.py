"""Config swaps under traffic: compiled off the hot path, swapped atomically, and requests in
flight finish on the snapshot they started with."""

from __future__ import annotations

import threading
from typing import Any, Callable

import httpx
from conftest import Upstream, wait_until
from meshproxy import Proxy


def routed_to(upstream: Upstream) -> dict[str, Any]:
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": upstream.address}]}],
    }


def test_a_request_in_flight_finishes_on_the_snapshot_it_started_with(upstreams: Callable[[str], Upstream]) -> None:
    old, new = upstreams("v1"), upstreams("v2")
    with Proxy(routed_to(old)) as proxy:
        base = f"http://{proxy.address('outbound')}"
        in_flight: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: in_flight.append(httpx.get(f"{base}/delay/1500", timeout=10)))
        slow.start()
        # Swap once the slow request is at the upstream (the engine counts it in flight).
        deadline = threading.Event()
        while proxy.stats()["clusters"]["app"]["upstream_requests_total"] < 1 and not deadline.wait(0.01):
            pass
        version = proxy.reload(routed_to(new))
        after = httpx.get(f"{base}/", timeout=10)
        slow.join()
    assert version == 2
    assert (in_flight[0].status_code, in_flight[0].json()["upstream"]) == (200, "v1")
    assert after.json()["upstream"] == "v2"


def test_reloads_under_continuous_load_fail_no_request(upstreams: Callable[[str], Upstream]) -> None:
    a, b = upstreams("v1"), upstreams("v2")
    with Proxy(routed_to(a)) as proxy:
        base = f"http://{proxy.address('outbound')}"
        stop = threading.Event()
        outcomes: list[int] = []

        def load() -> None:
            with httpx.Client(base_url=base, timeout=10) as client:
                while not stop.is_set():
                    outcomes.append(client.get("/").status_code)

        clients = [threading.Thread(target=load) for _ in range(4)]
        for client in clients:
            client.start()
        for i in range(20):
            # Let some requests through between swaps (bounded wait).
            wait_until(lambda: len(outcomes) >= 10 * (i + 1), timeout=10, what="traffic between reloads")
            proxy.reload(routed_to(b if i % 2 == 0 else a))
        stop.set()
        for client in clients:
            client.join()
    assert len(outcomes) >= 200
    assert set(outcomes) == {200}
