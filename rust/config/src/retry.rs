//! The resilience settings of a route (`retry`) and of a cluster (`circuit_breakers`), as the
//! engine reads them. Defaults are Envoy's and Linkerd's, written once here (`defaults()` in
//! `documents` hands them to the Python schema).

use serde::{Deserialize, Serialize};

use crate::duration::Millis;

/// When, how often and how fast a route's requests are tried again. A route without one has
/// the built-in policy: bodyless requests tried again after failures that prove the upstream
/// never processed them (no connection, a refused stream).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "RetryPolicy::default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Tries in all, the first included.
    #[serde(default = "RetryPolicy::default_attempts")]
    pub attempts: u32,
    /// Time allowed for each try's response headers; none: only the route's timeout.
    #[serde(default)]
    pub per_try_timeout: Option<Millis>,
    /// With `retriable-status-codes`: the statuses tried again.
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default)]
    pub budget: RetryBudget,
    /// Request bodies up to this size are kept to be sent again; larger ones are streamed and
    /// never retried.
    #[serde(default = "RetryPolicy::default_max_replay_bytes")]
    pub max_replay_bytes: u32,
}

/// What a try may fail with for the request to be tried again (Envoy's `x-envoy-retry-on`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum RetryOn {
    /// No connection could be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM, or left it out of a GOAWAY).
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// The upstream did not answer: reset, disconnect, or a try that timed out.
    #[serde(rename = "reset")]
    Reset,
    /// Any 5xx, and everything `reset` covers.
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503, 504, and everything `reset` covers.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The statuses of `retriable_status_codes`.
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    /// A gRPC call answered `grpc-status` 1 CANCELLED in its headers (a trailers-only
    /// response, as Envoy: a status in trailers comes after the response was passed on).
    #[serde(rename = "cancelled")]
    Cancelled,
    /// `grpc-status` 4 DEADLINE_EXCEEDED in the headers.
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// `grpc-status` 8 RESOURCE_EXHAUSTED in the headers.
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    /// `grpc-status` 14 UNAVAILABLE in the headers.
    #[serde(rename = "unavailable")]
    Unavailable,
}

impl RetryOn {
    /// The gRPC status code a gRPC condition retries.
    pub fn grpc_code(self) -> Option<u8> {
        match self {
            RetryOn::Cancelled => Some(1),
            RetryOn::DeadlineExceeded => Some(4),
            RetryOn::ResourceExhausted => Some(8),
            RetryOn::Unavailable => Some(14),
            _ => None,
        }
    }
}

/// Fully jittered exponential back-off between tries (Envoy's): before try n+1, a wait drawn
/// from [0, min(max_interval, base_interval * (2^n - 1))).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "Backoff::default_base_interval")]
    pub base_interval: Millis,
    #[serde(default = "Backoff::default_max_interval")]
    pub max_interval: Millis,
}

/// Linkerd's retry budget: over the last ten seconds, retries may be at most `percent` % of the
/// route's requests, plus `min_per_second` each second whatever the traffic.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "RetryBudget::default_percent")]
    pub percent: f64,
    #[serde(default = "RetryBudget::default_min_per_second")]
    pub min_per_second: u32,
}

/// Limits on what a cluster takes at once (Envoy's circuit breakers); above one, a request is
/// answered 503 `overflow` at once.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default = "CircuitBreakers::default_max")]
    pub max_connections: u32,
    #[serde(default = "CircuitBreakers::default_max")]
    pub max_pending_requests: u32,
    #[serde(default = "CircuitBreakers::default_max")]
    pub max_requests: u32,
    #[serde(default = "CircuitBreakers::default_max_retries")]
    pub max_retries: u32,
}

/// The defaults of the resilience settings, for `documents::defaults`.
pub(crate) fn defaults() -> [(&'static str, serde_json::Value); 11] {
    use serde_json::json;
    [
        ("retry.retry_on", json!(RetryPolicy::default_retry_on())),
        ("retry.attempts", json!(RetryPolicy::default_attempts())),
        ("retry.max_replay_bytes", json!(RetryPolicy::default_max_replay_bytes())),
        ("backoff.base_interval_ms", json!(Backoff::default_base_interval().0)),
        ("backoff.max_interval_ms", json!(Backoff::default_max_interval().0)),
        ("budget.percent", json!(RetryBudget::default_percent())),
        ("budget.min_per_second", json!(RetryBudget::default_min_per_second())),
        ("circuit_breakers.max_connections", json!(CircuitBreakers::default_max())),
        ("circuit_breakers.max_pending_requests", json!(CircuitBreakers::default_max())),
        ("circuit_breakers.max_requests", json!(CircuitBreakers::default_max())),
        ("circuit_breakers.max_retries", json!(CircuitBreakers::default_max_retries())),
    ]
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// The failures the built-in policy retries: the request never reached the application.
    fn default_retry_on() -> Vec<RetryOn> {
        vec![RetryOn::ConnectFailure, RetryOn::RefusedStream]
    }
    fn default_attempts() -> u32 {
        3
    }
    fn default_max_replay_bytes() -> u32 {
        64 * 1024
    }
}

// === impl Backoff ===

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base_interval: Backoff::default_base_interval(), max_interval: Backoff::default_max_interval() }
    }
}

impl Backoff {
    fn default_base_interval() -> Millis {
        Millis(25)
    }
    fn default_max_interval() -> Millis {
        Millis(250)
    }
}

// === impl RetryBudget ===

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget { percent: RetryBudget::default_percent(), min_per_second: RetryBudget::default_min_per_second() }
    }
}

impl RetryBudget {
    fn default_percent() -> f64 {
        20.0
    }
    fn default_min_per_second() -> u32 {
        10
    }
}

// === impl CircuitBreakers ===

impl CircuitBreakers {
    fn default_max() -> u32 {
        1024
    }
    fn default_max_retries() -> u32 {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_takes_the_defaults() {
        let policy: RetryPolicy = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy.retry_on, vec![RetryOn::ConnectFailure, RetryOn::RefusedStream]);
        assert_eq!((policy.attempts, policy.per_try_timeout, policy.max_replay_bytes), (3, None, 65_536));
        assert_eq!(policy.backoff, Backoff { base_interval: Millis(25), max_interval: Millis(250) });
        assert_eq!(policy.budget, RetryBudget { percent: 20.0, min_per_second: 10 });
        let on: Vec<RetryOn> = serde_json::from_str(r#"["5xx", "gateway-error", "reset", "retriable-status-codes"]"#).unwrap_or_default();
        assert_eq!(on.len(), 4);
        let breakers: CircuitBreakers = serde_json::from_str(r#"{"max_requests": 2}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(breakers, CircuitBreakers { max_connections: 1024, max_pending_requests: 1024, max_requests: 2, max_retries: 3 });
    }
}
