"""What locust saw against what the proxy counted: the checks `make loadtest` passes or fails on.

Locust records a request when its response (or failure) is complete, and the run stops each
user only after its current request (`--stop-timeout`), so after locust has exited every request
it sent is in both counts: they must agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from locust_totals import LocustTotals

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass
class ProxyDelta:
    """Counters of one listener, and of every cluster and error reason, after minus before."""

    requests: int
    responses: dict[str, int]
    errors: dict[str, int]
    clusters: dict[str, dict[str, int]]

    @property
    def answered(self) -> int:
        return sum(self.responses.values())

    @property
    def failed(self) -> int:
        """Responses locust counts as failures by default: 4xx and 5xx."""
        return self.responses["4xx"] + self.responses["5xx"]

    @property
    def answered_by_proxy(self) -> int:
        """Error responses the proxy wrote itself (`x-meshproxy-error`), all reasons."""
        return sum(self.errors.values())


@dataclass
class Comparison:
    locust: LocustTotals
    proxy: ProxyDelta
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.locust.failures == 0


def proxy_delta(before: dict[str, Any], after: dict[str, Any], listener: str) -> ProxyDelta:
    def listener_of(stats: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = stats.get("listeners", {}).get(listener, {})
        return found

    old, new = listener_of(before), listener_of(after)
    responses = {
        c: new.get("responses", {}).get(c, 0) - old.get("responses", {}).get(c, 0) for c in CLASSES
    }
    errors = {r: n - before.get("errors", {}).get(r, 0) for r, n in after.get("errors", {}).items()}
    clusters: dict[str, dict[str, int]] = {}
    for name, counters in after.get("clusters", {}).items():
        previous = before.get("clusters", {}).get(name, {})
        clusters[name] = {
            key: value - previous.get(key, 0)
            for key, value in counters.items()
            if isinstance(value, int)
        }
        for c in CLASSES:
            clusters[name][f"responses_{c}"] = counters["responses"][c] - previous.get(
                "responses", {}
            ).get(c, 0)
    return ProxyDelta(
        new.get("requests_total", 0) - old.get("requests_total", 0), responses, errors, clusters
    )


def compare(locust: LocustTotals, proxy: ProxyDelta) -> Comparison:
    result = Comparison(locust, proxy)
    if locust.requests != proxy.requests:
        result.mismatches.append(
            f"locust sent {locust.requests} requests, the proxy counted {proxy.requests}"
        )
    if proxy.answered != proxy.requests:
        result.mismatches.append(
            f"the proxy counted {proxy.requests} requests but {proxy.answered} responses"
        )
    if locust.failures != proxy.failed:
        result.mismatches.append(
            f"locust saw {locust.failures} failures, the proxy answered {proxy.failed} with 4xx/5xx"
        )
    return result


def render(result: Comparison) -> str:
    locust, proxy = result.locust, result.proxy
    lines = [
        "                         locust      proxy",
        f"  requests         {locust.requests:>12} {proxy.requests:>10}   (listener requests_total)",
        f"  failures         {locust.failures:>12} {proxy.failed:>10}   (listener 4xx + 5xx)",
        "",
        "  proxy responses: "
        + ", ".join(
            f"{c} {proxy.responses[c]}" for c in CLASSES if proxy.responses[c] or c == "2xx"
        ),
        "  proxy errors:    "
        + (", ".join(f"{r} {n}" for r, n in proxy.errors.items() if n) or "none"),
    ]
    for name, counters in sorted(proxy.clusters.items()):
        lines.append(
            f"  cluster {name}: {counters.get('upstream_requests_total', 0)} upstream requests, "
            f"{counters.get('connect_failures_total', 0)} connect failures, {counters.get('timeouts_total', 0)} timeouts, "
            f"{counters.get('upstream_failures_total', 0)} upstream failures"
        )
    lines.append("")
    lines.append(
        f"  locust by request:                 {'requests':>8} {'failures':>8} {'median':>7} {'p99':>7} {'max':>7}"
    )
    for name, t in sorted(locust.by_name.items()):
        lines.append(
            f"    {name:<32} {t.requests:>8} {t.failures:>8} {t.median_ms:>5}ms {t.p99_ms:>5}ms {t.max_ms:>5}ms"
        )
    for request, error in locust.failure_reasons:
        lines.append(f"  locust failure: {request}: {error}")
    lines.append("")
    for mismatch in result.mismatches:
        lines.append(f"  MISMATCH: {mismatch}")
    if result.ok:
        lines.append("  OK: no failures; locust's and the proxy's counts agree")
    elif not result.mismatches:
        lines.append(f"  FAIL: locust saw {locust.failures} failures (the counts agree)")
    return "\n".join(lines)
