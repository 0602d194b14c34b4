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


def test_a_reload_that_gives_most_routes_again_applies_the_ones_it_changes(upstreams: Callable[[str], Upstream]) -> None:
    """The engine keeps the routes a reload gives again; a changed header match, timeout, split
    weight and endpoint still take effect, on real traffic."""
    v1, v2 = upstreams("v1"), upstreams("v2")

    def config(channel: str, timeout: str, v2_share: int, v2_address: str) -> dict[str, Any]:
        kept = [{"name": f"svc-{k}", "match": {"host": f"svc-{k}.mesh.local"}, "cluster": "v1"} for k in range(50)]
        changed = [
            {"name": "channel", "match": {"host": "app", "headers": {"x-channel": channel}}, "cluster": "v2"},
            {"name": "slow", "match": {"host": "app", "path_prefix": "/delay/"}, "cluster": "v1", "timeout": timeout},
            {"name": "split", "match": {"host": "app"}, "split": [
                {"cluster": "v1", "weight": 100 - v2_share}, {"cluster": "v2", "weight": v2_share}]},
        ]
        return {
            "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": kept + changed}],
            "clusters": [
                {"name": "v1", "endpoints": [{"address": v1.address}]},
                {"name": "v2", "endpoints": [{"address": v2_address}]},
            ],
        }

    def answers(client: httpx.Client) -> tuple[str, str, int, set[str]]:
        channel = client.get("/", headers={"host": "app", "x-channel": "gamma"}).json()["upstream"]
        kept = client.get("/", headers={"host": "svc-7.mesh.local"}).json()["upstream"]
        slow = client.get("/delay/400", headers={"host": "app"}).status_code
        split = {client.get("/", headers={"host": "app"}).json()["upstream"] for _ in range(20)}
        return channel, kept, slow, split

    with Proxy(config("beta", "100ms", 0, v1.address)) as proxy:
        with httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
            # Before: gamma is no channel (the split, all to v1), the slow route times out.
            assert answers(client) == ("v1", "v1", 504, {"v1"})
            proxy.reload(config("gamma", "5s", 100, v2.address))
            assert answers(client) == ("v2", "v1", 200, {"v2"})
            # Only v2's endpoint moves (to v1's server): the routes sending to v2 follow it.
            proxy.reload(config("gamma", "5s", 100, v1.address))
            assert answers(client) == ("v1", "v1", 200, {"v1"})
