"""Envoy's ``circuit_breakers`` of a Cluster -> the sidecar cluster's ``circuit_breakers``, and the
retry budget Envoy keeps there -> the ``retry.budget`` of the routes that send to the cluster
(docs/resilience-retries-and-breakers.md), as the control plane writes them
(``meshcontrol.xds.cluster_policy``).

One threshold, of priority DEFAULT: the sidecar has no request priorities. A limit Envoy leaves
unset is Envoy's default (1024, and 3 retries); the control plane states every limit, writing
2^32-1 for none, which the sidecar reads as no ``circuit_breakers`` when all four say so. A
cluster without ``circuit_breakers`` (only the local app's, which the control plane leaves
bare) has no limits in the sidecar.

The budget: Envoy's ``budget_percent`` of requests in flight is the sidecar's ``percent`` of
requests over 10 s, and ``min_retry_concurrency`` its ``min_per_second``; the two agree when a
try takes about a second (docs/mesh.md says how they differ).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .translate_base import Refused
from .translate_base import only as _only
from .xds_pb2 import DEFAULT, Cluster, CircuitBreakers

UNLIMITED = 2**32 - 1
# The largest limit the sidecar takes: far beyond what a cluster could reach.
_SIDECAR_MAX = 1_000_000_000
_ENVOY_DEFAULTS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}
_ENVOY_BUDGET = {"budget_percent": 20.0, "min_retry_concurrency": 3}


def circuit_breakers(cluster: Cluster, where: str) -> dict[str, int] | None:
    """The sidecar's circuit_breakers of ``cluster``, or None for no limits."""
    threshold = _threshold(cluster, where)
    if threshold is None:
        return None
    limits = {name: getattr(threshold, name).value if threshold.HasField(name) else default
              for name, default in _ENVOY_DEFAULTS.items()}
    if all(value >= UNLIMITED for value in limits.values()):
        return None
    return {name: min(value, _SIDECAR_MAX) for name, value in limits.items()}


def retry_budget(cluster: Cluster, where: str) -> dict[str, Any] | None:
    """The retry budget Envoy keeps on ``cluster`` (as the sidecar's budget), or None."""
    threshold = _threshold(cluster, where)
    if threshold is None or not threshold.HasField("retry_budget"):
        return None
    budget = threshold.retry_budget
    at = f"{where}: circuit_breakers.thresholds[0].retry_budget"
    _only(budget, set(_ENVOY_BUDGET), at)
    percent = budget.budget_percent.value if budget.HasField("budget_percent") else _ENVOY_BUDGET["budget_percent"]
    floor = (budget.min_retry_concurrency.value if budget.HasField("min_retry_concurrency")
             else _ENVOY_BUDGET["min_retry_concurrency"])
    return {"percent": percent, "min_per_second": floor}


def with_budgets(routes: list[dict[str, Any]], clusters: Mapping[str, Cluster], where: str) -> list[dict[str, Any]]:
    """``routes`` with each retry policy's budget: the one the clusters the route sends to keep
    (all of them the same one)."""
    for i, route in enumerate(routes):
        if "retry" not in route:
            continue
        at = f"{where}: routes[{i}] ({route.get('name', 'unnamed')})"
        targets = [route["cluster"]] if "cluster" in route else [part["cluster"] for part in route["split"]]
        budgets = {name: retry_budget(clusters[name], f"cluster '{name}'") for name in targets}
        for name, budget in budgets.items():
            if budget is None:
                raise Refused(f"{at}: retries to cluster '{name}', which has no circuit_breakers retry_budget; a "
                              "sidecar's retries always have a budget")
        if len({tuple(sorted(b.items())) for b in budgets.values() if b is not None}) > 1:
            raise Refused(f"{at}: the clusters it sends to have different retry budgets; a sidecar route has one")
        route["retry"] = {**route["retry"], "budget": budgets[targets[0]]}
    return routes


def _threshold(cluster: Cluster, where: str) -> CircuitBreakers.Thresholds | None:
    if not cluster.HasField("circuit_breakers"):
        return None
    breakers = cluster.circuit_breakers
    at = f"{where}: circuit_breakers"
    _only(breakers, {"thresholds"}, at)
    if not breakers.thresholds:
        return None
    if len(breakers.thresholds) > 1 or breakers.thresholds[0].priority != DEFAULT:
        raise Refused(f"{at}: thresholds: the sidecar has no request priorities; expected one threshold, of "
                      "priority DEFAULT")
    threshold = breakers.thresholds[0]
    _only(threshold, {"priority", "retry_budget", *_ENVOY_DEFAULTS}, f"{at}.thresholds[0]")
    return threshold
