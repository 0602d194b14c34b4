"""Affinity: a cluster with `lb: ring_hash` or `maglev` sends the requests of one key (a
route's `hash_policy`: a header, a cookie, the client's IP) to one endpoint, and when one of N
endpoints leaves, only the keys it had move."""

from __future__ import annotations

from typing import Any, Callable

import httpx
import pytest
from conftest import Upstream, body_json, one_route_config
from meshproxy import ConfigError, Proxy

USERS = [f"user-{i}" for i in range(60)]


def hashing_config(upstreams: list[Upstream], lb: str, hash_policy: list[dict[str, Any]]) -> dict[str, Any]:
    cluster = {"name": "app", "lb": lb, "endpoints": [{"address": u.address} for u in upstreams]}
    return one_route_config(cluster, routes=[{"cluster": "app", "hash_policy": hash_policy}])


def served(client: httpx.Client, **request: Any) -> str:
    response = client.get("/", **request)
    assert response.status_code == 200, response.text
    upstream: str = body_json(response)["upstream"]
    return upstream


@pytest.mark.parametrize("lb", ["ring_hash", "maglev"])
def test_a_key_stays_on_one_endpoint_and_only_a_leaving_endpoints_keys_move(
        upstreams: Callable[[str], Upstream], lb: str) -> None:
    ends = [upstreams(name) for name in ("a", "b", "c", "d")]
    config = hashing_config(ends, lb, [{"header": "x-user"}])
    with Proxy(config) as proxy, httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
        placed = {user: served(client, headers={"x-user": user}) for user in USERS}
        # Again, and again: each key lands where it did.
        for _ in range(2):
            assert {user: served(client, headers={"x-user": user}) for user in USERS} == placed
        assert len(set(placed.values())) >= 3, placed

        proxy.reload(hashing_config(ends[:3], lb, [{"header": "x-user"}]))
        replaced = {user: served(client, headers={"x-user": user}) for user in USERS}
    moved = [user for user in USERS if replaced[user] != placed[user]]
    # Exactly the keys endpoint d had move; the others stay.
    assert sorted(moved) == sorted(user for user in USERS if placed[user] == "d")
    assert "d" not in replaced.values()


def test_cookie_and_source_ip_keys(upstreams: Callable[[str], Upstream]) -> None:
    ends = [upstreams(name) for name in ("a", "b", "c")]
    with Proxy(hashing_config(ends, "ring_hash", [{"cookie": "session"}])) as proxy, \
            httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
        by_session = {s: served(client, headers={"cookie": f"theme=dark; session={s}"}) for s in USERS}
        assert by_session == {s: served(client, headers={"cookie": f"session={s}"}) for s in USERS}
        assert len(set(by_session.values())) >= 2

    with Proxy(hashing_config(ends, "maglev", [{"source_ip": True}])) as proxy, \
            httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
        # One client IP (loopback): every request lands on one endpoint.
        assert len({served(client) for _ in range(30)}) == 1


def test_a_hashing_cluster_without_a_hash_key_is_refused(upstreams: Callable[[str], Upstream]) -> None:
    ends = [upstreams("a")]
    with pytest.raises(ConfigError) as refused:
        Proxy(hashing_config(ends, "ring_hash", []))
    assert ("listeners[0].routes[0].hash_policy: cluster 'app' balances by ring_hash, which needs a hash key; "
            "give hash_policy") in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        Proxy(hashing_config(ends, "p2c_ewma", [{"header": "x-user"}]))
    assert "hash_policy: applies to clusters with lb ring_hash or maglev; cluster 'app' has lb p2c_ewma" in str(refused.value)
