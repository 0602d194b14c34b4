//! Counters the data path bumps with relaxed atomics; Python reads them as one JSON snapshot.
//! Counters are keyed by listener / cluster name and outlive config swaps as long as the config
//! keeps that listener or cluster (`prune`); per-route traffic lives in `traffic`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

pub use crate::counter::{ByClass, Counter};
use crate::authz::AuthzCounters;
use crate::Reason;
use crate::live::Live;
use crate::traffic::TrafficRegistry;
use crate::rules::RuleRegistry;
use crate::refusal::Reason as RefusalReason;

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub connections_total: Counter,
    pub connections_active: Counter,
    pub requests_total: Counter,
    pub responses: ByClass,
    /// Opaque TCP connections: bytes read from clients and written to them.
    pub tcp_bytes_received_total: Counter,
    pub tcp_bytes_sent_total: Counter,
    /// Upgrades (WebSocket) tunnelled once the upstream agreed, and CONNECT tunnels opened.
    pub upgrades_total: Counter,
    pub connects_total: Counter,
}

#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Requests sent to an endpoint of the cluster (connect-failure retries count again).
    pub upstream_requests_total: Counter,
    pub responses: ByClass,
    pub connect_failures_total: Counter,
    pub timeouts_total: Counter,
    pub upstream_failures_total: Counter,
    /// Endpoint lists discovery set for the cluster (`Engine::set_endpoints`), between configs.
    pub endpoint_updates_total: Counter,
    /// Active health checks that failed (refused, timed out, unexpected answer).
    pub health_check_failures_total: Counter,
    /// Endpoints ejected by outlier detection.
    pub ejections_total: Counter,
    /// Tries made again by a retry policy (the built-in one included).
    pub retries_total: Counter,
    /// Retries a policy would have made, refused by its retry budget.
    pub retry_budget_exhausted_total: Counter,
    /// Retries not made because the circuit breakers' `max_retries` were in progress.
    pub retry_overflow_total: Counter,
    /// Requests answered 503 `overflow`: over a circuit breaker's limit.
    pub overflow_total: Counter,
    /// Opaque TCP connections made to an endpoint, and the bytes written to and read from them.
    pub tcp_connections_total: Counter,
    pub tcp_bytes_sent_total: Counter,
    pub tcp_bytes_received_total: Counter,
    /// Tunnels (upgrades and CONNECT) opened to an endpoint of the cluster.
    pub tunnels_total: Counter,
}

/// TLS handshakes completed and refused, by direction: inbound (a listener accepting) and
/// outbound (the sidecar connecting to a cluster).
#[derive(Debug, Default)]
pub struct TlsStats {
    pub inbound: HandshakeStats,
    pub outbound: HandshakeStats,
}

#[derive(Debug, Default)]
pub struct HandshakeStats {
    /// Handshakes completed, resumed ones included.
    pub handshakes_total: Counter,
    /// Of those, handshakes that resumed an earlier session.
    pub resumed_total: Counter,
    refused: [Counter; RefusalReason::ALL.len()],
}

/// Access log lines written, and lines dropped (queue full, or the write failed).
#[derive(Debug, Default)]
pub struct AccessLogStats {
    pub lines: Counter,
    pub dropped: Counter,
}

/// Sampled spans queued for export, and spans dropped because the queue was full.
#[derive(Debug, Default)]
pub struct TracingStats {
    pub spans: Counter,
    pub dropped: Counter,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub tls: TlsStats,
    pub access_log: Arc<AccessLogStats>,
    pub tracing: Arc<TracingStats>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    errors: [Counter; Reason::ALL.len()],
    pub authz: AuthzCounters,
    pub traffic: TrafficRegistry,
    /// What routes' and listeners' request rules did (rate limits, faults).
    pub rules: RuleRegistry,
}

// === impl HandshakeStats ===

impl HandshakeStats {
    pub fn refused(&self, reason: RefusalReason) {
        self.refused[reason.index()].inc();
    }

    fn json(&self) -> Value {
        let refused: serde_json::Map<String, Value> =
            RefusalReason::ALL.iter().map(|r| (r.name().to_string(), json!(self.refused[r.index()].get()))).collect();
        json!({ "handshakes_total": self.handshakes_total.get(), "resumed_total": self.resumed_total.get(), "refused": refused })
    }
}

// === impl Stats ===

impl Stats {
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.entry(name.to_string()).or_default().clone()
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        clusters.entry(name.to_string()).or_default().clone()
    }

    /// Drops the counters of listeners, clusters, routes and authorization policies that
    /// `live` (the running config) no longer has, once nothing counts into them: an in-flight request on a swapped-out
    /// config, or a removed listener's open connection, holds them until it ends, and a later
    /// call drops them then.
    pub fn prune(&self, live: &Live) {
        retain_held(&self.listeners, |name| live.listeners.contains(name));
        retain_held(&self.clusters, |name| live.clusters.contains(name));
        self.traffic.prune(&live.traffic);
        self.authz.prune();
        self.rules.prune();
    }

    pub fn count_error(&self, reason: Reason) {
        self.errors[reason.index()].inc();
    }

    pub fn json(&self) -> Value {
        let listeners: serde_json::Map<String, Value> = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, s)| {
                (name.clone(), json!({
                    "connections_total": s.connections_total.get(),
                    "connections_active": s.connections_active.get(),
                    "requests_total": s.requests_total.get(),
                    "responses": s.responses.json(),
                    "tcp_bytes_received_total": s.tcp_bytes_received_total.get(),
                    "tcp_bytes_sent_total": s.tcp_bytes_sent_total.get(),
                    "upgrades_total": s.upgrades_total.get(),
                    "connects_total": s.connects_total.get(),
                }))
            })
            .collect();
        let clusters: serde_json::Map<String, Value> = self
            .clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, s)| {
                (name.clone(), json!({
                    "upstream_requests_total": s.upstream_requests_total.get(),
                    "responses": s.responses.json(),
                    "connect_failures_total": s.connect_failures_total.get(),
                    "timeouts_total": s.timeouts_total.get(),
                    "upstream_failures_total": s.upstream_failures_total.get(),
                    "endpoint_updates_total": s.endpoint_updates_total.get(),
                    "health_check_failures_total": s.health_check_failures_total.get(),
                    "ejections_total": s.ejections_total.get(),
                    "retries_total": s.retries_total.get(),
                    "retry_budget_exhausted_total": s.retry_budget_exhausted_total.get(),
                    "retry_overflow_total": s.retry_overflow_total.get(),
                    "overflow_total": s.overflow_total.get(),
                    "tcp_connections_total": s.tcp_connections_total.get(),
                    "tcp_bytes_sent_total": s.tcp_bytes_sent_total.get(),
                    "tcp_bytes_received_total": s.tcp_bytes_received_total.get(),
                    "tunnels_total": s.tunnels_total.get(),
                }))
            })
            .collect();
        let errors: serde_json::Map<String, Value> =
            Reason::ALL.iter().map(|r| (r.name().to_string(), json!(self.errors[r.index()].get()))).collect();
        let tls = json!({ "inbound": self.tls.inbound.json(), "outbound": self.tls.outbound.json() });
        let access_log = json!({ "lines": self.access_log.lines.get(), "dropped": self.access_log.dropped.get() });
        let tracing = json!({ "spans": self.tracing.spans.get(), "dropped": self.tracing.dropped.get() });
        json!({
            "listeners": listeners,
            "clusters": clusters,
            "errors": errors,
            "tls": tls,
            "authorization": self.authz.json(),
            "traffic": self.traffic.json(),
            "route_rules": self.rules.json(),
            "log_lines_dropped": crate::events::dropped(),
            "access_log": access_log,
            "tracing": tracing,
        })
    }
}

/// Keeps the entries `live` names, and those something besides the map still holds. Under the
/// map's lock an entry only the map holds cannot be taken meanwhile.
fn retain_held<V>(map: &Mutex<BTreeMap<String, Arc<V>>>, live: impl Fn(&str) -> bool) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|name, held| live(name) || Arc::strong_count(held) > 1);
}
