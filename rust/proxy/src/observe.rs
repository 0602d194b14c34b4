//! The observation of one request: made when the request arrives, filled in as it is routed
//! and forwarded, and finished when its response body has been sent to the end or dropped, so
//! that its duration covers the whole response. Finishing records it into the `TrafficStats`
//! of its route and cluster.
//!
//! It is also what access logs and trace spans are made from: when the config has an access log
//! or tracing, it keeps the facts they need (method, target, peer, request id, upstream address)
//! as cheap clones of what the request already holds — reference-counted, never formatted — and
//! hands them over as a `telemetry::Record` on finishing. Without either, it keeps none of them:
//! the stats need only the status, the duration and the byte counts.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderMap, HeaderValue, HOST};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::busy_poll;
use crate::error::Reason;
use crate::headers::X_REQUEST_ID;
use meshproxy_config::spiffe::SpiffeId;
use meshproxy_telemetry::{Record, Telemetry};
use meshproxy_telemetry::trace::{Trace, TraceId};
#[cfg(test)]
use meshproxy_telemetry::traffic::TrafficKey;
use meshproxy_telemetry::traffic::TrafficStats;

#[derive(Debug)]
pub struct Observation {
    started: Instant,
    /// Where it is recorded: the listener's unrouted stats until a route and cluster are chosen.
    traffic: Arc<TrafficStats>,
    /// `None` until a response is ready; a request finished without one lost its client.
    pub status: Option<StatusCode>,
    /// Why the proxy answered itself, when it did.
    pub error: Option<Reason>,
    /// Whether the request is a gRPC call (`grpc::is_call`).
    pub grpc: bool,
    /// A gRPC call's `grpc-status`, from the response's trailers or trailers-only headers.
    pub grpc_status: Option<u8>,
    /// Counted by the request body as it streams upstream; `None` for a request without a body.
    request_bytes: Option<Arc<AtomicU64>>,
    response_bytes: u64,
    /// Where the finished request is reported besides the stats, when the config asks for it.
    /// Boxed: most configs report nothing, and the observation travels with every response.
    report: Option<Box<Report>>,
}

/// What an access log line or a span needs beyond the stats.
#[derive(Debug)]
struct Report {
    telemetry: Arc<Telemetry>,
    client: IpAddr,
    /// The proxy's span, with tracing on.
    trace: Option<Trace>,
    /// The caller's trace, for the access log when tracing is off.
    incoming_trace_id: Option<TraceId>,
    method: Method,
    /// The request target as received (before any rewrite).
    target: Uri,
    /// The `Host` header, kept when the target carries no authority.
    host: Option<HeaderValue>,
    version: Version,
    /// The verified SPIFFE ID of the mesh peer, on mutual TLS connections.
    peer: Option<SpiffeId>,
    /// The `x-request-id` sent upstream (the client's, or one the proxy made).
    request_id: Option<HeaderValue>,
    /// The endpoint the request was last sent to.
    upstream: Option<Arc<str>>,
}

// === impl Observation ===

impl Observation {
    /// Starts observing a request that just arrived on a listener whose unrouted requests count
    /// in `unrouted`.
    pub fn start(unrouted: &Arc<TrafficStats>) -> Observation {
        busy_poll::note_activity();
        Observation {
            started: Instant::now(),
            traffic: unrouted.clone(),
            status: None,
            error: None,
            grpc: false,
            grpc_status: None,
            request_bytes: None,
            response_bytes: 0,
            report: None,
        }
    }

    /// Reports the finished request to `telemetry` too (the access log, the proxy's span), if
    /// it has either; starts the proxy's span now, with tracing on.
    pub fn report_to<B>(&mut self, telemetry: &Arc<Telemetry>, client: IpAddr, request: &Request<B>, peer: Option<&SpiffeId>) {
        if !telemetry.is_on() {
            return;
        }
        let trace = telemetry.start(request.headers());
        let incoming_trace_id = if trace.is_none() { telemetry.trace_id(None, request.headers()) } else { None };
        let target = request.uri().clone();
        let host = if target.authority().is_none() { request.headers().get(HOST).cloned() } else { None };
        self.report = Some(Box::new(Report {
            telemetry: telemetry.clone(),
            client,
            trace,
            incoming_trace_id,
            method: request.method().clone(),
            target,
            host,
            version: request.version(),
            peer: peer.cloned(),
            request_id: None,
            upstream: None,
        }));
    }

    /// The `x-request-id` of the upstream request, for the report (looked up only for one).
    pub fn note_request_id(&mut self, headers: &HeaderMap) {
        if let Some(report) = self.report.as_mut() {
            report.request_id = headers.get(X_REQUEST_ID).cloned();
        }
    }

    /// The endpoint the request is sent to, for the report.
    pub fn note_upstream(&mut self, address: &Arc<str>) {
        if let Some(report) = self.report.as_mut() {
            report.upstream = Some(address.clone());
        }
    }

    /// The proxy's span of this request, with tracing on: the upstream request names it.
    pub fn trace(&self) -> Option<&Trace> {
        self.report.as_ref().and_then(|report| report.trace.as_ref())
    }

    /// The request was routed: it counts for that route and cluster from now on.
    pub fn routed(&mut self, traffic: &Arc<TrafficStats>) {
        self.traffic = traffic.clone();
    }

    /// What the request body adds its bytes to as it streams upstream.
    pub fn count_request_bytes(&mut self) -> Arc<AtomicU64> {
        self.request_bytes.get_or_insert_with(Arc::default).clone()
    }

    /// Response body bytes sent to the client.
    pub fn sent(&mut self, bytes: usize) {
        self.response_bytes += bytes as u64;
    }

    /// Its direction, listener, route and cluster: the key of the stats it counts in.
    #[cfg(test)]
    fn traffic_key(&self) -> &TrafficKey {
        &self.traffic.key
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.as_ref().map_or(0, |bytes| bytes.load(Relaxed))
    }

}

/// Finishing is dropping: whichever way the response ends (sent to the end, failed, abandoned
/// by the client, or never made), the observation is recorded exactly once.
impl Drop for Observation {
    fn drop(&mut self) {
        busy_poll::note_activity();
        let elapsed = self.elapsed();
        self.traffic.record(self.status, elapsed, self.request_bytes(), self.response_bytes);
        if self.grpc {
            self.traffic.record_grpc(self.grpc_status);
        }
        if let Some(mut report) = self.report.take() {
            let wanted = report.telemetry.wants_record(report.trace.as_ref());
            if wanted.any() {
                let record = self.take_record(elapsed, &mut report);
                report.telemetry.finish(record, report.trace.as_ref(), wanted);
            }
        }
    }
}

impl Observation {
    /// The facts of the finished request, moved out: the observation is going away.
    fn take_record(&mut self, elapsed: Duration, report: &mut Report) -> Record {
        let key = &self.traffic.key;
        let named = |name: &Arc<str>| (!name.is_empty()).then(|| name.clone());
        Record {
            start: SystemTime::now().checked_sub(elapsed).unwrap_or(SystemTime::UNIX_EPOCH),
            duration: elapsed,
            listener: key.listener.clone(),
            direction: key.direction,
            protocol: report.version,
            method: std::mem::take(&mut report.method),
            target: std::mem::take(&mut report.target),
            host: report.host.take(),
            status: self.status.map_or(0, |status| status.as_u16()),
            route: named(&key.route),
            cluster: named(&key.cluster),
            upstream_address: report.upstream.take(),
            bytes_in: self.request_bytes(),
            bytes_out: self.response_bytes,
            request_id: report.request_id.take(),
            trace_id: report.trace.as_ref().map(|t| t.span.trace_id).or(report.incoming_trace_id),
            span_id: report.trace.as_ref().map(|t| t.span.span_id),
            client_address: report.client,
            peer_identity: report.peer.take(),
            error: self.error,
            grpc_status: self.grpc_status,
            tcp: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshproxy_config::{Config, Direction};
    use meshproxy_telemetry::traffic::TrafficRegistry;

    fn request() -> Request<()> {
        Request::get("/orders/42").header(HOST, "orders:8080").body(()).unwrap_or_default()
    }

    fn key(route: &str, cluster: &str) -> TrafficKey {
        TrafficKey { direction: Direction::Outbound, listener: "out".into(), route: route.into(), cluster: cluster.into() }
    }

    /// Requests counted for `stats`, by code, from the registry's snapshot.
    fn counted(registry: &TrafficRegistry, route: &str) -> serde_json::Value {
        let json = registry.json();
        let all = json["stats"].as_array().cloned().unwrap_or_default();
        all.into_iter().find(|s| s["route"] == route).map_or(serde_json::Value::Null, |s| s["responses"].clone())
    }

    #[test]
    fn an_observation_is_recorded_once_where_it_was_routed() {
        let registry = TrafficRegistry::default();
        let (unrouted, routed) = (registry.stats(key("", "")), registry.stats(key("r", "app")));
        let mut observation = Observation::start(&unrouted);
        observation.routed(&routed);
        observation.status = Some(StatusCode::OK);
        observation.sent(5);
        assert_eq!((&*observation.traffic_key().route, &*observation.traffic_key().cluster), ("r", "app"));
        drop(observation);
        assert_eq!(counted(&registry, "r"), serde_json::json!({"200": 1}));
        assert_eq!(counted(&registry, ""), serde_json::json!({}));
        let json = registry.json();
        let stats = &json["stats"].as_array().cloned().unwrap_or_default()[1];
        assert_eq!(stats["response_bytes"], 5);
        assert_eq!(stats["duration_seconds"]["buckets"][14], 1);
    }

    #[test]
    fn a_request_that_got_no_response_counts_as_code_0() {
        let registry = TrafficRegistry::default();
        drop(Observation::start(&registry.stats(key("", ""))));
        assert_eq!(counted(&registry, ""), serde_json::json!({"0": 1}));
    }

    #[test]
    fn request_bytes_counted_by_the_body_are_recorded() {
        let registry = TrafficRegistry::default();
        let mut observation = Observation::start(&registry.stats(key("", "")));
        let counter = observation.count_request_bytes();
        counter.fetch_add(7, Relaxed);
        observation.count_request_bytes().fetch_add(3, Relaxed);
        assert_eq!(observation.request_bytes(), 10);
        drop(observation);
        assert_eq!(registry.json()["stats"][0]["request_bytes"], 10);
    }

    #[test]
    fn a_finished_observation_reports_its_request_to_telemetry_once() {
        let registry = TrafficRegistry::default();
        let outlets = meshproxy_telemetry::Outlets::new(Arc::default());
        let config = Config::from_json(r#"{"tracing": {"sample": 1.0}, "listeners": []}"#).unwrap();
        let telemetry = Arc::new(outlets.telemetry(&config).unwrap());
        let mut observation = Observation::start(&registry.stats(key("", "")));
        observation.report_to(&telemetry, std::net::IpAddr::from([10, 0, 0, 7]), &request(), None);
        let span_id = observation.trace().map(|trace| trace.span.span_id);
        observation.routed(&registry.stats(key("r", "app")));
        observation.note_upstream(&"127.0.0.1:8080".into());
        observation.status = Some(StatusCode::CREATED);
        observation.sent(5);
        drop(observation);
        let spans = outlets.spans.drain(10, Duration::ZERO);
        assert_eq!(spans.len(), 1);
        let (span, record) = (&spans[0].context, &spans[0].record);
        assert_eq!(Some(span.span_id), span_id);
        assert_eq!(record.span_id, span_id);
        assert_eq!((record.status, record.bytes_out, record.path()), (201, 5, Some("/orders/42")));
        assert_eq!((record.route.as_deref(), record.cluster.as_deref(), record.upstream_address.as_deref()), (Some("r"), Some("app"), Some("127.0.0.1:8080")));
        assert_eq!((record.authority().as_deref(), record.client_address), (Some("orders:8080"), std::net::IpAddr::from([10, 0, 0, 7])));
    }

    #[test]
    fn without_telemetry_an_observation_starts_no_trace() {
        let registry = TrafficRegistry::default();
        let mut observation = Observation::start(&registry.stats(key("", "")));
        observation.report_to(&Arc::default(), std::net::IpAddr::from([10, 0, 0, 7]), &request(), None);
        assert!(observation.trace().is_none());
    }
}
