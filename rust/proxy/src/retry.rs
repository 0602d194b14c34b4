//! Sending a request to the cluster, and again when a try fails in a way the route's retry
//! policy retries: each try goes to another endpoint when there is one, after a jittered
//! back-off, within the retry budget and the cluster's `max_retries`.
//!
//! A route without `retry` has the built-in policy: a bodyless request is sent again after
//! failures that prove the upstream never processed it (no connection: 3 tries; a refused
//! stream: 8), at once, with no budget. Nothing else is counted or copied for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::Body;
use crate::breakers::{Held, Limit};
use crate::budget::Budget;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::grpc_retry;
use crate::observe::Observation;
use crate::observed::Upstream;
use crate::original_dst::OriginalDestination;
use crate::outlier::Attempt;
use crate::pool::{copy_with, PoolError};
use meshproxy_config::{self as config, RetryOn, UpstreamProtocol};

/// The built-in policy's tries after refused streams. An upstream that closes HTTP/2
/// connections after so many requests (nginx: 1,000) refuses, at each close, every stream in
/// flight beyond its last one; with hundreds in flight, a retried stream may land on the next
/// connection as it closes too.
const MAX_REFUSALS: u32 = 8;

/// A route's retry policy, compiled.
#[derive(Debug)]
pub struct Retry {
    /// The policy of routes without `retry`, which counts connect failures and refusals apart.
    built_in: bool,
    on: Conditions,
    attempts: u32,
    per_try_timeout: Option<Duration>,
    status_codes: Vec<u16>,
    /// `None`: tries follow each other at once (the built-in policy).
    backoff: Option<(Duration, Duration)>,
    budget: Option<Budget>,
    /// Request bodies up to this size are kept to be sent again; 0: bodyless requests only.
    max_replay_bytes: u64,
}

/// The failures a policy retries, from its `retry_on`.
#[derive(Clone, Copy, Debug, Default)]
struct Conditions {
    connect_failure: bool,
    refused_stream: bool,
    /// Resets, disconnects, and tries over the per-try timeout.
    reset: bool,
    server_error: bool,
    gateway_error: bool,
    status_codes: bool,
    /// Bit `c`: `grpc-status` c in a response's headers is retried.
    grpc_codes: u32,
}

/// How a try failed, for the policy to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Connect,
    Refused,
    Reset,
    Status(StatusCode),
    /// A gRPC call's status in the response headers (trailers-only).
    Grpc(u8),
}

/// The tries made so far.
#[derive(Debug, Default)]
struct Tries {
    all: u32,
    connect_failures: u32,
    refusals: u32,
}

/// What a failed try leaves to return should no other try be made.
enum Outcome {
    Error(ProxyError),
    Response(Response<Body>, Upstream),
}

/// The policy of routes without `retry`: today's retries, which cost nothing when no try fails.
pub static BUILT_IN: Retry = Retry {
    built_in: true,
    on: Conditions {
        connect_failure: true,
        refused_stream: true,
        reset: false,
        server_error: false,
        gateway_error: false,
        status_codes: false,
        grpc_codes: 0,
    },
    attempts: 3,
    per_try_timeout: None,
    status_codes: Vec::new(),
    backoff: None,
    budget: None,
    max_replay_bytes: 0,
};

// === impl Retry ===

impl Retry {
    pub fn new(policy: &config::RetryPolicy) -> Retry {
        let mut on = Conditions::default();
        for condition in &policy.retry_on {
            match condition {
                RetryOn::ConnectFailure => on.connect_failure = true,
                RetryOn::RefusedStream => on.refused_stream = true,
                RetryOn::Reset => on.reset = true,
                RetryOn::ServerError => on.server_error = true,
                RetryOn::GatewayError => on.gateway_error = true,
                RetryOn::RetriableStatusCodes => on.status_codes = true,
                RetryOn::Cancelled | RetryOn::DeadlineExceeded | RetryOn::ResourceExhausted | RetryOn::Unavailable => {
                    on.grpc_codes |= condition.grpc_code().map_or(0, |code| 1 << code);
                }
            }
        }
        // As Envoy: 5xx and gateway-error cover the failures where no response came at all.
        if on.server_error || on.gateway_error {
            on.reset = true;
        }
        if on.reset {
            on.connect_failure = true;
            on.refused_stream = true;
        }
        Retry {
            built_in: false,
            on,
            attempts: policy.attempts.max(1),
            per_try_timeout: policy.per_try_timeout.filter(|t| t.0 > 0).map(|t| t.duration()),
            status_codes: policy.retriable_status_codes.clone(),
            backoff: Some((policy.backoff.base_interval.duration(), policy.backoff.max_interval.duration())),
            budget: Some(Budget::new(&policy.budget)),
            max_replay_bytes: u64::from(policy.max_replay_bytes),
        }
    }

    /// Whether a try that failed with `failure` may be followed by another, by the tries made.
    fn retries(&self, failure: Failure, tries: &Tries) -> bool {
        let on = &self.on;
        let covered = match failure {
            Failure::Connect => on.connect_failure,
            Failure::Refused => on.refused_stream,
            Failure::Reset => on.reset,
            Failure::Status(status) => {
                (on.server_error && status.is_server_error())
                    || (on.gateway_error && matches!(status.as_u16(), 502..=504))
                    || (on.status_codes && self.status_codes.contains(&status.as_u16()))
            }
            Failure::Grpc(code) => code < 32 && on.grpc_codes & (1 << code) != 0,
        };
        // The built-in policy counts refusals apart: see `MAX_REFUSALS`.
        let tries_left = match (self.built_in, failure) {
            (true, Failure::Connect) => tries.connect_failures < self.attempts,
            (true, Failure::Refused) => tries.refusals < MAX_REFUSALS,
            _ => tries.all < self.attempts,
        };
        covered && tries_left
    }

    /// Whether the try about to be made (after `tries`) may be followed by another should the
    /// upstream consume the request: then it is sent as a copy.
    fn may_follow(&self, tries: &Tries) -> bool {
        if self.built_in {
            tries.refusals + 1 < MAX_REFUSALS
        } else {
            tries.all + 1 < self.attempts
        }
    }

    /// Whether a try could be retried after the upstream read the request: then each try
    /// sends a copy and keeps the request.
    fn retries_after_reading(&self, protocol: UpstreamProtocol) -> bool {
        self.on.reset || self.on.server_error || self.on.gateway_error || self.on.status_codes || self.on.grpc_codes != 0
            || (self.on.refused_stream && protocol == UpstreamProtocol::Http2)
    }

    /// The request with its body in hand when it is small enough to be sent again, or as it
    /// came (streamed) otherwise; and whether it may be sent again. Only a body whose length is
    /// announced is read ahead: waiting for the end of a body that streams on (a gRPC stream)
    /// could wait for the response it waits for.
    async fn replayable(&self, request: Request<Body>) -> Result<(Request<Body>, bool), ProxyError> {
        if http_body::Body::is_end_stream(request.body()) {
            return Ok((request, true));
        }
        let fits = http_body::Body::size_hint(request.body()).exact().is_some_and(|length| length <= self.max_replay_bytes);
        if !fits {
            return Ok((request, false));
        }
        let (parts, body) = request.into_parts();
        let collected = body.collect().await.map_err(|_| ProxyError::BadRequest("the request body could not be read from the client"))?;
        let trailers = collected.trailers().cloned().map(Box::new);
        let data = collected.to_bytes();
        Ok((Request::from_parts(parts, Body::Replayed { data: (!data.is_empty()).then_some(data), trailers }), true))
    }

    /// The wait before try `n + 1` (`n` tries made): fully jittered exponential, as Envoy.
    fn backoff(&self, n: u32) -> Option<Duration> {
        let (base, max) = self.backoff?;
        let ceiling = base.saturating_mul((1u32 << n.min(16)) - 1).min(max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(jitter(nanos)))
    }
}

/// A draw from [0, `ceiling`).
fn jitter(ceiling: u64) -> u64 {
    use rand::Rng;
    if ceiling == 0 {
        0
    } else {
        rand::rng().random_range(0..ceiling)
    }
}

/// Sends the request to an endpoint of the cluster (the one its `hash` key lands on, for a
/// hashing cluster), and again as `policy` allows, and returns the response, whose body keeps
/// the endpoint's request in flight until it ends.
pub async fn forward(
    cluster: &Cluster,
    policy: &Retry,
    request: Request<Body>,
    hash: Option<u64>,
    observation: &mut Observation,
) -> Result<(Response<Body>, Upstream), ProxyError> {
    let admitted = match &cluster.breakers {
        Some(breakers) => Some(breakers.take(Limit::Requests).map_err(|overflow| cluster.overflow(overflow))?),
        None => None,
    };
    if let Some(budget) = &policy.budget {
        budget.deposit();
    }
    let (request, replayable) = if policy.max_replay_bytes > 0 { policy.replayable(request).await? } else {
        let bodyless = http_body::Body::is_end_stream(request.body());
        (request, bodyless)
    };
    let copies = replayable && policy.retries_after_reading(cluster.protocol);
    // A passthrough cluster sends every try where the request's connection was going.
    let destination = cluster.passthrough.as_ref().and_then(|_| request.extensions().get::<OriginalDestination>()).map(|d| d.0);
    let mut sending = request;
    // A gRPC call's body streams with no length announced: under gRPC conditions, it is kept
    // as it goes upstream, and sent again should it have ended within `max_replay_bytes`.
    // (Swapped in place: passed through by value, every request was copied once more.)
    let kept = if !replayable && policy.on.grpc_codes != 0 { keep(&mut sending, policy.max_replay_bytes) } else { None };
    let mut tries = Tries::default();
    // The endpoint the last try failed on: a retry goes to another one.
    let mut failed_on: Option<Arc<str>> = None;
    // Held while a retry is in progress.
    let mut retrying: Option<Held> = None;
    loop {
        // Held until the try ends: discovery may replace the members meanwhile.
        let members = match &cluster.passthrough {
            None => cluster.members(),
            Some(passthrough) => passthrough.members(destination),
        };
        let endpoint = members
            .pick_for(hash, failed_on.as_deref())
            .ok_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() })?;
        observation.note_upstream(&endpoint.address);
        // A try that reaches the upstream consumes the request: one that may be sent again is
        // copied first (before it takes this endpoint's authority). Requests that never left
        // (no connection) come back from the pool.
        let spare = (copies && policy.may_follow(&tries)).then(|| copy(&sending)).flatten();
        // The request without its body, for the kept body to be sent again with. Boxed: it
        // lives across the try, and inline its size would be in every request's future.
        let head = kept.as_ref().filter(|_| policy.may_follow(&tries)).map(|_| Box::new(copy_with(&sending, Body::Empty)));
        cluster.address_to(&mut sending, endpoint)?;
        tries.all += 1;

        cluster.stats.upstream_requests_total.inc();
        let in_flight = endpoint.start();
        let started = Instant::now();
        let dial = cluster.dial(endpoint);
        // Outlier detection, when the cluster has it, counts the try's outcome. The try's
        // future is awaited where it is made: passed on by value, its kilobytes would be
        // copied at each hand-over, and into the box the request's future lives in.
        let attempt = Attempt::begin(cluster, endpoint);
        let sent = match policy.per_try_timeout {
            None => endpoint.state.pool().send(dial, sending).await,
            Some(limit) => tokio::time::timeout(limit, endpoint.state.pool().send(dial, sending))
                .await
                .unwrap_or(Err(PoolError::TimedOut(limit))),
        };
        if let Some(attempt) = attempt {
            attempt.settle(&sent);
        }
        let (failure, outcome, unsent) = match sent {
            Ok((response, lease)) => {
                endpoint.observe_latency(started.elapsed());
                cluster.stats.responses.count(response.status());
                let response = response.map(|body| Body::Streamed { body, received: None });
                let failure = match policy.on.grpc_codes {
                    0 => Failure::Status(response.status()),
                    _ => crate::grpc::status(response.headers()).map_or(Failure::Status(response.status()), Failure::Grpc),
                };
                if !((copies || head.is_some()) && policy.retries(failure, &tries)) {
                    return Ok((response, Upstream { in_flight: Some(in_flight), lease, admitted, timer: None }));
                }
                (failure, Outcome::Response(response, Upstream { in_flight: Some(in_flight), lease, admitted: None, timer: None }), None)
            }
            Err(PoolError::Connect { cause, unsent }) => {
                cluster.stats.connect_failures_total.inc();
                tries.connect_failures += 1;
                // Counted as slow as the connect timeout: latency-aware picks shun the endpoint
                // (a refused connection fails fast, and would otherwise look like the best one)
                // until discovery removes it or its answers bring the estimate down again.
                endpoint.observe_latency(cluster.connect_timeout);
                let error = ProxyError::ConnectFailure {
                    cluster: cluster.name.to_string(),
                    endpoint: endpoint.address.to_string(),
                    cause: cause.to_string(),
                };
                (Failure::Connect, Outcome::Error(error), (replayable || kept.is_some()).then_some(*unsent))
            }
            Err(PoolError::Overflow(overflow)) => return Err(cluster.overflow(overflow)),
            // The client's body broke mid-way (bad chunk framing, reset, hang-up): not the
            // upstream's fault, and the client's framing can no longer be trusted.
            Err(PoolError::Exchange(error)) if is_request_body_error(&error) => {
                return Err(ProxyError::BadRequest("the request body could not be read from the client"));
            }
            Err(PoolError::TimedOut(after)) => {
                cluster.stats.timeouts_total.inc();
                endpoint.observe_latency(after);
                (Failure::Reset, Outcome::Error(ProxyError::Timeout { cluster: cluster.name.to_string(), after }), None)
            }
            Err(PoolError::Refused(error)) => {
                cluster.stats.upstream_failures_total.inc();
                tries.refusals += 1;
                (Failure::Refused, Outcome::Error(upstream_failure(cluster, &endpoint.address, &error)), None)
            }
            Err(PoolError::Exchange(error)) => {
                cluster.stats.upstream_failures_total.inc();
                (Failure::Reset, Outcome::Error(upstream_failure(cluster, &endpoint.address, &error)), None)
            }
        };
        failed_on = Some(endpoint.address.clone());
        // Another try, if the policy, the budget and the cluster's breakers allow one.
        let again = || {
            let (data, trailers) = kept.as_ref()?.again()?;
            Some((*head?).map(|_| Body::Replayed { data, trailers }))
        };
        let next = match unsent.or(spare).or_else(again) {
            Some(next) if policy.retries(failure, &tries) && within_budget(cluster, policy) => next,
            _ => return outcome.finish(admitted),
        };
        if retrying.is_none() {
            retrying = match &cluster.breakers {
                Some(breakers) => match breakers.take(Limit::Retries) {
                    Ok(held) => Some(held),
                    Err(_) => {
                        cluster.stats.retry_overflow_total.inc();
                        return outcome.finish(admitted);
                    }
                },
                None => None,
            };
        }
        cluster.stats.retries_total.inc();
        // The failed response's body is not read: its connection closes.
        drop(outcome);
        if let Some(wait) = policy.backoff(tries.all) {
            tokio::time::sleep(wait).await;
        }
        sending = next;
    }
}

/// Whether the policy's budget has a retry left (counted when it has not).
fn within_budget(cluster: &Cluster, policy: &Retry) -> bool {
    let Some(budget) = &policy.budget else { return true };
    let granted = budget.withdraw();
    if !granted {
        cluster.stats.retry_budget_exhausted_total.inc();
    }
    granted
}

// === impl Outcome ===

impl Outcome {
    /// The last try's error or response, which holds the request's place in the cluster.
    fn finish(self, admitted: Option<Held>) -> Result<(Response<Body>, Upstream), ProxyError> {
        match self {
            Outcome::Error(error) => Err(error),
            Outcome::Response(response, upstream) => Ok((response, Upstream { admitted, ..upstream })),
        }
    }
}

/// Gives the request its streamed body kept as it goes upstream (`grpc_retry`); the copy.
fn keep(request: &mut Request<Body>, limit: u64) -> Option<grpc_retry::KeptCopy> {
    match std::mem::replace(request.body_mut(), Body::Empty) {
        Body::Streamed { body, received } if limit > 0 => {
            let (kept, copy) = grpc_retry::keep(body, received, limit);
            *request.body_mut() = Body::Kept(Box::new(kept));
            Some(copy)
        }
        body => {
            *request.body_mut() = body;
            None
        }
    }
}

/// A copy of a request whose body is in hand (or absent), to send again.
fn copy(request: &Request<Body>) -> Option<Request<Body>> {
    Some(copy_with(request, request.body().replay()?))
}

fn upstream_failure(cluster: &Cluster, endpoint: &str, error: &hyper::Error) -> ProxyError {
    ProxyError::UpstreamFailure { cluster: cluster.name.to_string(), endpoint: endpoint.to_string(), cause: root_cause(error) }
}

/// Whether the exchange failed because the request body, streamed from the client, yielded an
/// error: hyper reports that as a user-body error caused by the body's own `hyper::Error`.
fn is_request_body_error(error: &hyper::Error) -> bool {
    error.is_user() && std::error::Error::source(error).is_some_and(|source| source.is::<hyper::Error>())
}

/// The innermost cause of an error chain: the part a user can act on ("connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml_json: &str) -> Retry {
        let config: config::RetryPolicy = serde_json::from_str(yaml_json).unwrap_or_else(|e| panic!("{e}"));
        Retry::new(&config)
    }

    #[test]
    fn backoff_is_fully_jittered_and_capped() {
        let policy = policy(r#"{"backoff": {"base_interval": "10ms", "max_interval": "50ms"}}"#);
        for _ in 0..200 {
            let first = policy.backoff(1).unwrap_or_default();
            assert!(first < Duration::from_millis(10), "{first:?}");
            let second = policy.backoff(2).unwrap_or_default();
            assert!(second < Duration::from_millis(30), "{second:?}");
            let late = policy.backoff(10).unwrap_or_default();
            assert!(late < Duration::from_millis(50), "{late:?}");
        }
        // Jittered: not the same wait each time.
        let waits: std::collections::HashSet<Duration> = (0..50).filter_map(|_| policy.backoff(3)).collect();
        assert!(waits.len() > 1);
        assert_eq!(BUILT_IN.backoff(1), None);
    }

    #[test]
    fn retry_on_covers_as_envoy_does() {
        let tries = Tries { all: 1, ..Tries::default() };
        let five = policy(r#"{"retry_on": ["5xx"]}"#);
        for failure in [Failure::Connect, Failure::Refused, Failure::Reset, Failure::Status(StatusCode::NOT_IMPLEMENTED)] {
            assert!(five.retries(failure, &tries), "{failure:?}");
        }
        assert!(!five.retries(Failure::Status(StatusCode::NOT_FOUND), &tries));
        let gateway = policy(r#"{"retry_on": ["gateway-error"]}"#);
        assert!(gateway.retries(Failure::Status(StatusCode::BAD_GATEWAY), &tries));
        assert!(!gateway.retries(Failure::Status(StatusCode::INTERNAL_SERVER_ERROR), &tries));
        let codes = policy(r#"{"retry_on": ["retriable-status-codes"], "retriable_status_codes": [409]}"#);
        assert!(codes.retries(Failure::Status(StatusCode::CONFLICT), &tries));
        assert!(!codes.retries(Failure::Connect, &tries));
        let connect = policy(r#"{"retry_on": ["connect-failure"], "attempts": 2}"#);
        assert!(connect.retries(Failure::Connect, &tries));
        assert!(!connect.retries(Failure::Reset, &tries));
        assert!(!connect.retries(Failure::Connect, &Tries { all: 2, ..Tries::default() }), "attempts include the first");
    }

    #[test]
    fn the_built_in_policy_counts_refusals_apart() {
        let tries = Tries { all: 7, connect_failures: 0, refusals: 7 };
        assert!(BUILT_IN.retries(Failure::Refused, &tries));
        assert!(!BUILT_IN.retries(Failure::Refused, &Tries { refusals: 8, ..tries }));
        assert!(BUILT_IN.retries(Failure::Connect, &Tries { all: 3, connect_failures: 2, refusals: 1 }));
        assert!(!BUILT_IN.retries(Failure::Connect, &Tries { all: 3, connect_failures: 3, refusals: 0 }));
        assert!(!BUILT_IN.retries(Failure::Status(StatusCode::SERVICE_UNAVAILABLE), &tries));
        assert!(!BUILT_IN.retries(Failure::Reset, &tries));
    }
}
