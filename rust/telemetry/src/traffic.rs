//! The golden metrics of one (direction, listener, route, cluster): requests by exact status
//! code, how long they took, bytes in and out. Recorded once per request, when its observation
//! finishes (`observe`); read by a scrape as part of the engine's JSON snapshot.
//!
//! Memory stays bounded for large configs: a route's stats are made on its first request (see
//! `route::Target`), and status codes are counted in blocks of a hundred, made on the first
//! code of their class.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use meshproxy_config::Direction;
use crate::counter::Counter;

/// Upper bounds of the duration buckets: Prometheus's defaults shifted down for a proxy, whose
/// requests mostly take a millisecond or less.
pub const DURATION_BUCKETS: [Duration; 14] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// Whose traffic a `TrafficStats` counts. Requests the proxy answered without a route (no
/// route, denied, malformed) have an empty route and cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrafficKey {
    pub direction: Direction,
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub cluster: Arc<str>,
}

#[derive(Debug)]
pub struct TrafficStats {
    pub key: TrafficKey,
    /// Codes 100–999 (all that `StatusCode` admits), a block of 100 per leading digit.
    codes: [OnceLock<Box<[Counter]>>; 9],
    /// Requests that got no response: the client went away first. Labelled code 0.
    unanswered: Counter,
    duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    /// gRPC calls by `grpc-status` (0–16; a larger code counts as 2, UNKNOWN), made on the
    /// first call: plain HTTP routes never have it.
    grpc: OnceLock<Box<[Counter; GRPC_CODES]>>,
}

/// gRPC's status codes, OK (0) to UNAUTHENTICATED (16).
const GRPC_CODES: usize = 17;

/// Counts per bucket (not cumulative: one increment per observation), the last one past the
/// largest bound, and the sum; the count is the buckets' total, so a snapshot is consistent.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; DURATION_BUCKETS.len() + 1],
    sum_nanos: Counter,
}

/// Every `TrafficStats` made, by key; outlives config swaps so counts carry on across them,
/// until a swap removes the route (`prune`).
#[derive(Debug, Default)]
pub struct TrafficRegistry {
    stats: Mutex<BTreeMap<TrafficKey, Arc<TrafficStats>>>,
}

// === impl TrafficStats ===

impl TrafficStats {
    fn new(key: TrafficKey) -> TrafficStats {
        TrafficStats {
            key,
            codes: Default::default(),
            unanswered: Counter::default(),
            duration: Histogram::default(),
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
            grpc: OnceLock::new(),
        }
    }

    /// One request, finished: its status (`None`: the client went away first), how long it
    /// took from arrival to the end of the response body, and its body bytes.
    pub fn record(&self, status: Option<StatusCode>, duration: Duration, request_bytes: u64, response_bytes: u64) {
        match status {
            Some(status) => self.code(status).inc(),
            None => self.unanswered.inc(),
        }
        self.duration.observe(duration);
        if request_bytes > 0 {
            self.request_bytes.add(request_bytes);
        }
        if response_bytes > 0 {
            self.response_bytes.add(response_bytes);
        }
    }

    /// One gRPC call, finished, by its `grpc-status`. A call that ended without one (reset,
    /// or its client gone) is counted in the HTTP statuses only: it has no gRPC status.
    pub fn record_grpc(&self, status: Option<u8>) {
        if let Some(status) = status {
            let codes = self.grpc.get_or_init(|| Box::new(std::array::from_fn(|_| Counter::default())));
            // UNKNOWN (2) for a code gRPC does not define.
            codes[if usize::from(status) < GRPC_CODES { usize::from(status) } else { 2 }].inc();
        }
    }

    fn code(&self, status: StatusCode) -> &Counter {
        let code = usize::from(status.as_u16());
        // `StatusCode` holds 100..=999: the class is 1..=9.
        let class = (code / 100).clamp(1, 9);
        let block = self.codes[class - 1].get_or_init(|| (0..100).map(|_| Counter::default()).collect());
        &block[code % 100]
    }

    /// Requests by code, codes that were never seen left out.
    fn codes(&self) -> BTreeMap<u16, u64> {
        let mut codes = BTreeMap::new();
        if self.unanswered.get() > 0 {
            codes.insert(0, self.unanswered.get());
        }
        for (class, block) in (1u16..).zip(&self.codes) {
            for (unit, counter) in (0u16..).zip(block.get().into_iter().flatten()) {
                if counter.get() > 0 {
                    codes.insert(class * 100 + unit, counter.get());
                }
            }
        }
        codes
    }

    fn json(&self) -> Value {
        let codes: serde_json::Map<String, Value> = self.codes().into_iter().map(|(code, n)| (code.to_string(), json!(n))).collect();
        let (buckets, sum) = self.duration.snapshot();
        let grpc: serde_json::Map<String, Value> = (0..)
            .zip(self.grpc.get().into_iter().flat_map(|codes| codes.iter()))
            .filter(|(_, counter)| counter.get() > 0)
            .map(|(code, counter): (u8, &Counter)| (code.to_string(), json!(counter.get())))
            .collect();
        json!({
            "direction": self.key.direction.name(),
            "listener": &*self.key.listener,
            "route": &*self.key.route,
            "cluster": &*self.key.cluster,
            "responses": codes,
            "duration_seconds": { "buckets": buckets, "sum": sum },
            "request_bytes": self.request_bytes.get(),
            "response_bytes": self.response_bytes.get(),
            "grpc": grpc,
        })
    }
}

// === impl Histogram ===

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        // `le` buckets: a duration equal to a bound falls in that bound's bucket.
        let bucket = DURATION_BUCKETS.partition_point(|bound| *bound < duration);
        self.buckets[bucket].inc();
        self.sum_nanos.add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Cumulative counts per bound of `DURATION_BUCKETS`, then the total (the `+Inf` bucket);
    /// and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let cumulative = self
            .buckets
            .iter()
            .scan(0, |total, bucket| {
                *total += bucket.get();
                Some(*total)
            })
            .collect();
        (cumulative, Duration::from_nanos(self.sum_nanos.get()).as_secs_f64())
    }
}

// === impl TrafficRegistry ===

impl TrafficRegistry {
    /// The stats of `key`, made on first use.
    pub fn stats(&self, key: TrafficKey) -> Arc<TrafficStats> {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.entry(key).or_insert_with_key(|key| Arc::new(TrafficStats::new(key.clone()))).clone()
    }

    /// Drops the stats of keys not in `live` that no request holds any more (an in-flight
    /// request on a swapped-out config may still count into them: those wait for a later call).
    pub fn prune(&self, live: &HashSet<TrafficKey>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        // Only the registry holds it, and it is the registry's lock held here: nothing can take a
        // new hold on it meanwhile.
        stats.retain(|key, held| live.contains(key) || Arc::strong_count(held) > 1);
    }

    /// `{"duration_buckets": [seconds…], "stats": [{direction, listener, route, cluster,
    /// responses: {code: n}, duration_seconds: {buckets, sum}, request_bytes, response_bytes}]}`,
    /// in key order.
    pub fn json(&self) -> Value {
        // Copied out first: formatting thousands of entries under the lock would hold up the
        // first requests of new routes.
        let all: Vec<Arc<TrafficStats>> = self.stats.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let bounds: Vec<f64> = DURATION_BUCKETS.iter().map(Duration::as_secs_f64).collect();
        json!({ "duration_buckets": bounds, "stats": all.iter().map(|s| s.json()).collect::<Vec<_>>() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: &str) -> TrafficKey {
        TrafficKey { direction: Direction::Outbound, listener: "out".into(), route: route.into(), cluster: "app".into() }
    }

    #[test]
    fn a_duration_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(500)); // on the first bound: le=0.0005
        histogram.observe(Duration::from_micros(501)); // le=0.001
        histogram.observe(Duration::from_millis(200)); // le=0.25
        histogram.observe(Duration::from_secs(11)); // past every bound: +Inf only
        let (buckets, sum) = histogram.snapshot();
        assert_eq!(buckets, [1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4]);
        assert!((sum - 11.201_001).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn codes_are_counted_exactly_and_their_blocks_made_on_first_use() {
        let stats = TrafficStats::new(key("r"));
        for code in [200, 200, 404, 503, 999] {
            stats.record(StatusCode::from_u16(code).ok(), Duration::ZERO, 0, 0);
        }
        stats.record(None, Duration::ZERO, 0, 0);
        let counted: Vec<(u16, u64)> = stats.codes().into_iter().collect();
        assert_eq!(counted, [(0, 1), (200, 2), (404, 1), (503, 1), (999, 1)]);
        let made: Vec<bool> = stats.codes.iter().map(|block| block.get().is_some()).collect();
        assert_eq!(made, [false, true, false, true, true, false, false, false, true]);
    }

    #[test]
    fn grpc_calls_are_counted_by_status_on_their_own() {
        let stats = TrafficStats::new(key("r"));
        assert!(stats.grpc.get().is_none());
        stats.record_grpc(None);
        assert!(stats.grpc.get().is_none(), "a call without a status makes no block");
        for status in [0, 0, 14, 99] {
            stats.record_grpc(Some(status));
        }
        assert_eq!(stats.json()["grpc"], json!({"0": 2, "2": 1, "14": 1}));
    }

    #[test]
    fn the_registry_hands_out_one_stats_per_key() {
        let registry = TrafficRegistry::default();
        let first = registry.stats(key("r"));
        assert!(Arc::ptr_eq(&first, &registry.stats(key("r"))));
        assert!(!Arc::ptr_eq(&first, &registry.stats(key("other"))));
    }
}
