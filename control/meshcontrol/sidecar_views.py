"""``meshctl endpoints``: how each connected meshproxy sidecar sees the endpoints it balances
across (health, requests in flight, latency), read from the sidecar's own admin API
(``GET /clusters``) at the address it registered with, as Prometheus scrapes it. Health is the
sidecar's to know: its active checks and outlier ejection run there, not here.

Read on request, from every sidecar at once, each within a short timeout: a sidecar whose admin
API cannot be reached gets one row saying so, and never holds up the others.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from meshproxy.mesh.names import service_cluster

# One sidecar's answer, at most: its admin server answers /clusters from memory.
FETCH_TIMEOUT_S = 2.0
_MAX_PARALLEL = 16


def endpoints(instances: Iterable[dict[str, Any]], service: str | None, namespace: str) -> list[dict[str, Any]]:
    """One row per (sidecar, cluster, endpoint): the clusters of calls to ``service`` (of
    ``namespace``), or every cluster when ``service`` is None. A row with ``error`` stands for a
    sidecar whose clusters could not be read."""
    callers = [i for i in instances if i.get("kind") == "meshproxy" and i.get("connected") and i.get("admin")]
    prefix = service_cluster(service, namespace) if service else None
    with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, max(1, len(callers)))) as pool:
        answers = list(pool.map(_clusters, (caller["admin"] for caller in callers)))
    rows: list[dict[str, Any]] = []
    for caller, (clusters, error) in zip(callers, answers):
        seen_by = {"sidecar": caller["service"], "namespace": caller["namespace"], "version": caller["version"],
                   "address": caller["address"]}
        if error is not None:
            rows.append({**seen_by, "error": error})
            continue
        for name, cluster in sorted(clusters.items()):
            # A version's cluster is the service's name and a suffix: `outbound_orders.shop_v1`.
            if prefix is not None and not (name == prefix or name.startswith(prefix + "_")):
                continue
            for endpoint in cluster.get("endpoints", []):
                rows.append({**seen_by, "cluster": name, "endpoint": endpoint.get("address"),
                             "health": endpoint.get("health"), "weight": endpoint.get("weight"),
                             "in_flight": endpoint.get("in_flight"), "latency_ewma_ms": endpoint.get("latency_ewma_ms")})
    return rows


def _clusters(admin: str) -> tuple[dict[str, Any], str | None]:
    """A sidecar's ``/clusters``, or why it could not be read."""
    host, _, port = admin.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=FETCH_TIMEOUT_S)
    try:
        connection.request("GET", "/clusters")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return {}, f"its admin API at {admin} answered {response.status}"
        clusters: dict[str, Any] = json.loads(body)
        return clusters, None
    except (OSError, http.client.HTTPException, ValueError) as error:
        return {}, f"its admin API at {admin} could not be read ({error or type(error).__name__})"
    finally:
        connection.close()
