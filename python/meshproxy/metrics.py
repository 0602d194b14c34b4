"""Prometheus metrics: the engine's stats snapshot turned into metric families, in the text
format, for the admin API's ``GET /metrics``.

Nothing here is counted in Python: the engine counts with atomics, and each scrape reads one
snapshot of them (``Proxy.stats()``). Each :class:`~meshproxy.Proxy` has its own
``CollectorRegistry``, so proxies embedded side by side never mix their metrics, and the
process-wide default registry is left to the app. This module is imported on the first scrape:
a sidecar that is never scraped never loads prometheus_client.

The metric names and labels are documented in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from .proxy import Proxy

__all__ = ["CONTENT_TYPE", "ProxyMetrics", "families"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
ROUTE_LABELS = ["direction", "listener", "route", "cluster"]


class ProxyMetrics:
    """The metrics of one proxy: a registry of its own, read by :meth:`exposition`."""

    def __init__(self, proxy: Proxy) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ProxyCollector(proxy))

    def exposition(self) -> bytes:
        """Every metric, in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _ProxyCollector(Collector):
    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def collect(self) -> Iterator[Metric]:
        return families(self._proxy.stats())


def families(stats: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families of one stats snapshot (``Proxy.stats()``: the engine's counters and
    the Python layer's reload outcomes)."""
    yield from _traffic(stats["traffic"])
    yield from _listeners(stats["listeners"])
    yield from _clusters(stats["clusters"])
    yield from _tls(stats["tls"])
    yield from _authorization(stats["authorization"])
    yield from _route_rules(stats["route_rules"])
    yield from _telemetry(stats["access_log"], stats["tracing"])

    errors = CounterMetricFamily("meshproxy_proxy_errors", "Requests the proxy answered itself, by reason "
                                 "(no_route, denied, connect_failure, timeout, ...).", labels=["reason"])
    for reason, count in stats["errors"].items():
        errors.add_metric([reason], count)
    yield errors

    yield GaugeMetricFamily("meshproxy_config_version", "How many configs the engine has applied (1 after start).",
                            value=stats["config_version"])
    reloads = CounterMetricFamily("meshproxy_config_reloads", "Config reloads, by outcome: succeeded (swapped in) "
                                  "or failed (refused; the running config stayed).", labels=["outcome"])
    for outcome, count in stats["reload_outcomes"].items():
        reloads.add_metric([outcome], count)
    yield reloads
    yield CounterMetricFamily("meshproxy_log_lines_dropped", "Engine log lines dropped because the log queue was "
                              "full.", value=stats["log_lines_dropped"])
    yield GaugeMetricFamily("meshproxy_workers", "Engine worker threads.", value=stats["workers"])
    yield CounterMetricFamily("meshproxy_busy_poll_spin_seconds", "Time the workers spent busy polling with nothing "
                              "to do (busy_poll): the CPU it costs.", value=stats["busy_poll"]["spin_seconds_total"])
    if "identity" in stats:
        yield GaugeMetricFamily("meshproxy_identity_expiry_timestamp_seconds", "When this sidecar's mesh "
                                "certificate expires (Unix time).", value=stats["identity"]["not_after"])


def _traffic(traffic: Mapping[str, Any]) -> Iterator[Metric]:
    requests = CounterMetricFamily("meshproxy_requests", "Requests finished, by the status code the client got "
                                   "(0: the client went away before a response).", labels=[*ROUTE_LABELS, "code"])
    durations = HistogramMetricFamily("meshproxy_request_duration_seconds", "Time from a request's arrival to the "
                                      "end of its response body.", labels=ROUTE_LABELS)
    request_bytes = CounterMetricFamily("meshproxy_request_bytes", "Request body bytes received from clients.",
                                        labels=ROUTE_LABELS)
    response_bytes = CounterMetricFamily("meshproxy_response_bytes", "Response body bytes sent to clients.",
                                         labels=ROUTE_LABELS)
    # gRPC calls by their grpc-status, in a family of their own: Prometheus wants one label set
    # per family, and a `grpc_status` label on meshproxy_requests_total would be empty on every
    # plain HTTP series. A call counts in both families (its HTTP status is 200 when it has a
    # gRPC status at all); one that ended without a grpc-status (reset) only in the first.
    grpc = CounterMetricFamily("meshproxy_grpc_requests", "gRPC calls finished, by the grpc-status the client "
                               "got (from the upstream's trailers, or the proxy's own error).",
                               labels=[*ROUTE_LABELS, "grpc_status"])
    # As prometheus_client's own histograms write `le`: "0.0005", "1.0", "+Inf".
    bounds = [repr(float(bound)) for bound in traffic["duration_buckets"]] + ["+Inf"]
    for entry in traffic["stats"]:
        labels = [entry[label] for label in ROUTE_LABELS]
        for code, count in entry["responses"].items():
            requests.add_metric([*labels, code], count)
        for status, count in entry.get("grpc", {}).items():
            grpc.add_metric([*labels, status], count)
        duration = entry["duration_seconds"]
        durations.add_metric(labels, list(zip(bounds, duration["buckets"], strict=True)), duration["sum"])
        request_bytes.add_metric(labels, entry["request_bytes"])
        response_bytes.add_metric(labels, entry["response_bytes"])
    yield from (requests, durations, request_bytes, response_bytes, grpc)


def _listeners(listeners: Mapping[str, Any]) -> Iterator[Metric]:
    open_ = GaugeMetricFamily("meshproxy_connections_open", "Client connections open on a listener.",
                              labels=["listener", "direction"])
    total = CounterMetricFamily("meshproxy_connections", "Client connections accepted by a listener.",
                                labels=["listener", "direction"])
    tcp_received = CounterMetricFamily("meshproxy_tcp_received_bytes", "Bytes read from clients on opaque TCP "
                                       "connections (tcp listeners, tcp_fallback).", labels=["listener", "direction"])
    tcp_sent = CounterMetricFamily("meshproxy_tcp_sent_bytes", "Bytes written to clients on opaque TCP "
                                   "connections.", labels=["listener", "direction"])
    tunnels = CounterMetricFamily("meshproxy_tunnels", "Tunnels a listener opened: upgrades (WebSocket) the "
                                  "upstream agreed to, and CONNECT tunnels.", labels=["listener", "direction", "kind"])
    for name, listener in listeners.items():
        # A listener no longer configured has no direction; its counts stay, labelled "".
        labels = [name, listener.get("direction", "")]
        open_.add_metric(labels, listener["connections_active"])
        total.add_metric(labels, listener["connections_total"])
        tcp_received.add_metric(labels, listener["tcp_bytes_received_total"])
        tcp_sent.add_metric(labels, listener["tcp_bytes_sent_total"])
        tunnels.add_metric([*labels, "upgrade"], listener["upgrades_total"])
        tunnels.add_metric([*labels, "connect"], listener["connects_total"])
    yield from (open_, total, tcp_received, tcp_sent, tunnels)


def _clusters(clusters: Mapping[str, Any]) -> Iterator[Metric]:
    def per_cluster(name: str, documentation: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, labels=["cluster"])

    sent = per_cluster("meshproxy_upstream_requests", "Requests sent to an endpoint of the cluster (each "
                       "attempt: a retry after a connect failure counts again).")
    connect_failures = per_cluster("meshproxy_upstream_connect_failures", "Connections to an endpoint of the "
                                   "cluster that could not be made (refused, unreachable, TLS refused, timed out).")
    timeouts = per_cluster("meshproxy_upstream_timeouts", "Requests whose response headers did not come within "
                           "the route's timeout.")
    failures = per_cluster("meshproxy_upstream_failures", "Exchanges an endpoint broke after the connection was "
                           "made (reset, protocol error, refused stream).")
    responses = CounterMetricFamily("meshproxy_upstream_responses", "Responses from the cluster's endpoints, by "
                                    "status class.", labels=["cluster", "class"])
    updates = per_cluster("meshproxy_cluster_endpoint_updates", "Endpoint lists discovery set for the cluster "
                          "between configs (each one replaces the cluster's endpoints; the config version stays).")
    check_failures = per_cluster("meshproxy_cluster_health_check_failures", "Active health checks of the "
                                 "cluster's endpoints that failed (refused, timed out, unexpected answer).")
    ejections = per_cluster("meshproxy_cluster_ejections", "Endpoints of the cluster ejected by outlier detection.")
    healthy = GaugeMetricFamily("meshproxy_cluster_healthy_endpoints", "Endpoints the balancer may pick on "
                                "health grounds (all of them without health settings).", labels=["cluster"])
    ejected = GaugeMetricFamily("meshproxy_cluster_ejected_endpoints", "Endpoints ejected by outlier detection "
                                "now.", labels=["cluster"])
    retries = per_cluster("meshproxy_upstream_retries", "Tries made again by a retry policy (the built-in one "
                          "included).")
    budget_exhausted = per_cluster("meshproxy_upstream_retry_budget_exhausted", "Retries a route's retry policy "
                                   "would have made, refused by its retry budget.")
    retry_overflow = per_cluster("meshproxy_upstream_retry_overflow", "Retries not made because the cluster's "
                                 "circuit breakers' max_retries were in progress.")
    overflow = per_cluster("meshproxy_upstream_overflow", "Requests answered 503 overflow: over a limit of the "
                           "cluster's circuit breakers.")
    tcp_connections = per_cluster("meshproxy_upstream_tcp_connections", "Opaque TCP connections made to an "
                                  "endpoint of the cluster (one per client connection).")
    tcp_sent = per_cluster("meshproxy_upstream_tcp_sent_bytes", "Bytes written to the cluster's endpoints on "
                           "opaque TCP connections.")
    tcp_received = per_cluster("meshproxy_upstream_tcp_received_bytes", "Bytes read from the cluster's endpoints "
                               "on opaque TCP connections.")
    tunnels = per_cluster("meshproxy_upstream_tunnels", "Tunnels (upgrades and CONNECT) opened to an endpoint of "
                          "the cluster.")
    connections = GaugeMetricFamily("meshproxy_upstream_connections", "Pooled upstream connections: idle HTTP/1.1 "
                                    "ones and open HTTP/2 ones.", labels=["cluster", "protocol", "state"])
    for name, cluster in clusters.items():
        sent.add_metric([name], cluster["upstream_requests_total"])
        connect_failures.add_metric([name], cluster["connect_failures_total"])
        timeouts.add_metric([name], cluster["timeouts_total"])
        failures.add_metric([name], cluster["upstream_failures_total"])
        updates.add_metric([name], cluster["endpoint_updates_total"])
        check_failures.add_metric([name], cluster["health_check_failures_total"])
        ejections.add_metric([name], cluster["ejections_total"])
        healthy.add_metric([name], cluster["endpoints"]["healthy"])
        ejected.add_metric([name], cluster["endpoints"]["ejected"])
        retries.add_metric([name], cluster["retries_total"])
        budget_exhausted.add_metric([name], cluster["retry_budget_exhausted_total"])
        retry_overflow.add_metric([name], cluster["retry_overflow_total"])
        overflow.add_metric([name], cluster["overflow_total"])
        tcp_connections.add_metric([name], cluster["tcp_connections_total"])
        tcp_sent.add_metric([name], cluster["tcp_bytes_sent_total"])
        tcp_received.add_metric([name], cluster["tcp_bytes_received_total"])
        tunnels.add_metric([name], cluster["tunnels_total"])
        for status_class, count in cluster["responses"].items():
            responses.add_metric([name, status_class], count)
        connections.add_metric([name, "http1", "idle"], cluster["pool"]["idle_http1"])
        connections.add_metric([name, "http2", "open"], cluster["pool"]["http2_connections"])
    yield from (sent, connect_failures, timeouts, failures, responses, updates, check_failures, ejections, healthy,
                ejected, retries, budget_exhausted, retry_overflow, overflow, tcp_connections, tcp_sent, tcp_received,
                tunnels, connections)


def _tls(tls: Mapping[str, Any]) -> Iterator[Metric]:
    handshakes = CounterMetricFamily("meshproxy_tls_handshakes", "TLS handshakes completed; inbound: a listener "
                                     "accepting, outbound: connecting to a cluster.", labels=["direction"])
    resumed = CounterMetricFamily("meshproxy_tls_handshakes_resumed", "Of the TLS handshakes completed, those "
                                  "that resumed an earlier session.", labels=["direction"])
    refused = CounterMetricFamily("meshproxy_tls_handshake_failures", "TLS handshakes refused, by reason.",
                                  labels=["direction", "reason"])
    for direction, counts in tls.items():
        handshakes.add_metric([direction], counts["handshakes_total"])
        resumed.add_metric([direction], counts["resumed_total"])
        for reason, count in counts["refused"].items():
            refused.add_metric([direction, reason], count)
    yield from (handshakes, resumed, refused)


def _authorization(authorization: Mapping[str, Any]) -> Iterator[Metric]:
    decisions = CounterMetricFamily("meshproxy_authz_decisions", "Authorization decisions by policy: allowed (by "
                                    "an allow rule), denied, or dry_run_denied (would be denied; let through).",
                                    labels=["listener", "policy", "decision"])
    matches = CounterMetricFamily("meshproxy_authz_rule_matches", "Requests a rule of a policy matched.",
                                  labels=["listener", "policy", "rule"])
    for listener, policies in authorization.items():
        for policy, counts in policies.items():
            for decision in ("allowed", "denied", "dry_run_denied"):
                decisions.add_metric([listener, policy, decision], counts[decision])
            for rule, rule_counts in counts["rules"].items():
                matches.add_metric([listener, policy, rule], rule_counts["matches"])
    yield from (decisions, matches)


def _route_rules(rules: list[Mapping[str, Any]]) -> Iterator[Metric]:
    def per_route(name: str, documentation: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, labels=["listener", "route"])

    limited = per_route("meshproxy_rate_limited", "Requests answered 429 by a rate limit: a route's, or (route "
                        "\"\") the listener's.")
    aborts = per_route("meshproxy_fault_aborts", "Requests a route's fault injection answered with its abort status.")
    delays = per_route("meshproxy_fault_delays", "Requests a route's fault injection held for its delay.")
    mirrors = per_route("meshproxy_mirrors", "Copies a route's mirror sent to its shadow cluster.")
    mirror_failures = per_route("meshproxy_mirror_failures", "Mirrored copies that failed or outlasted the "
                                "route's timeout (the caller never sees them).")
    mirrors_dropped = per_route("meshproxy_mirrors_dropped", "Copies a route's mirror did not send: too many in "
                                "flight already.")
    for entry in rules:
        labels = [entry["listener"], entry["route"]]
        limited.add_metric(labels, entry["rate_limited_total"])
        aborts.add_metric(labels, entry["fault_aborts_total"])
        delays.add_metric(labels, entry["fault_delays_total"])
        mirrors.add_metric(labels, entry["mirrors_total"])
        mirror_failures.add_metric(labels, entry["mirror_failures_total"])
        mirrors_dropped.add_metric(labels, entry["mirrors_dropped_total"])
    yield from (limited, aborts, delays, mirrors, mirror_failures, mirrors_dropped)


def _telemetry(access_log: Mapping[str, Any], tracing: Mapping[str, Any]) -> Iterator[Metric]:
    yield CounterMetricFamily("meshproxy_access_log_lines", "Access log lines written.", value=access_log["lines"])
    yield CounterMetricFamily("meshproxy_access_log_lines_dropped", "Access log lines dropped: the writer's queue "
                              "was full, or the write failed.", value=access_log["dropped"])
    yield CounterMetricFamily("meshproxy_spans", "Sampled spans queued for export.", value=tracing["spans"])
    yield CounterMetricFamily("meshproxy_spans_dropped", "Spans dropped because the export queue was full.",
                              value=tracing["dropped"])
    # The exporter's counts, with tracing on.
    if "exported" in tracing:
        yield CounterMetricFamily("meshproxy_spans_exported", "Spans the OTLP collector accepted.",
                                  value=tracing["exported"])
        yield CounterMetricFamily("meshproxy_spans_export_failed", "Spans in batches that failed to reach the OTLP "
                                  "collector (refused, unreachable, or no answer in time).",
                                  value=tracing["export_failed"])
        yield CounterMetricFamily("meshproxy_spans_export_retries", "Span batches sent to the OTLP collector again "
                                  "after a retryable failure (no connection, 429, 502, 503, 504).",
                                  value=tracing["export_retries"])
