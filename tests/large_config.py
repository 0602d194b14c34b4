"""A mesh-sized config for reloads at scale: 10,000 routes over 1,000 service hosts (ten path
prefixes each, every fifth also matching a header) and 1,000 clusters of 100 endpoints each,
plus one route, last in the table, to a cluster of real upstreams.

Used by tests/integration/test_reload_large.py and the benchmarks in bench/python. The
100,000 endpoints are loopback addresses nothing listens on; no request is routed to them.
"""

from __future__ import annotations

from typing import Any

LIVE_HOST = "live.mesh.local"
ROUTES_PER_HOST = 10


def large_config(live: list[str], *, routes: int = 10_000, clusters: int = 1_000, endpoints: int = 100) -> dict[str, Any]:
    """The config as a dict; requests with ``Host: live.mesh.local`` go to the ``live`` upstreams."""
    table: list[dict[str, Any]] = []
    for k in range(routes):
        host, slot = divmod(k, ROUTES_PER_HOST)
        match: dict[str, Any] = {
            "host": f"svc-{host}.mesh.local",
            "path_prefix": "/" if slot == ROUTES_PER_HOST - 1 else f"/api/v{slot}/",
        }
        if slot % 5 == 1:
            match["headers"] = {"x-tenant": f"tenant-{slot}"}
        table.append({"name": f"r{k}", "match": match, "cluster": f"c{k % clusters}"})
    table.append({"name": "live", "match": {"host": LIVE_HOST}, "cluster": "live"})
    sets = [
        {
            "name": f"c{c}",
            "endpoints": [
                {"address": f"127.{1 + c // 256}.{c % 256}.{e + 1}:9", "weight": 1 + e % 3} for e in range(endpoints)
            ],
        }
        for c in range(clusters)
    ]
    sets.append({"name": "live", "endpoints": [{"address": address} for address in live]})
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": table}],
        "clusters": sets,
    }
