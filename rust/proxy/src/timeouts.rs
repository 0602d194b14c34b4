//! A route's timeouts past the wait for the response head: its `timeout` covering the whole
//! response (`timeout_covers: response`, Envoy's meaning) and a stream's `idle_timeout`
//! (Envoy's route `idle_timeout`: no byte either way for that long ends the stream); and a gRPC
//! call's deadline, from its `grpc-timeout`, over the whole call (`call_limits`, `grpc_deadline`).
//!
//! Routes with neither (and calls without a deadline) never reach this module: the route holds `None` and the request takes
//! the plain path in `proxy`, with no timer, allocation or await of its own. A route with them
//! waits for the head here (answering 504 `timeout` when a limit passes first), then hands a
//! `ResponseTimer` to the response body (`observed`), which stops the body with an error (a
//! reset, for the client) when a limit passes while it streams. The idle clock is `idle`'s:
//! the body notes that a frame moved, and the timer looks once per tick.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Response};
use tokio::time::{Instant, Sleep};

use crate::body::Body;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::grpc_deadline::{self, Messages};
use crate::idle::Quiet;
use meshproxy_config::{self as config, TimeoutCovers};
use meshproxy_telemetry::stats::ClusterStats;

/// A route's limits beyond the wait for the response head; a route has them only when its
/// config asks (`StreamTimeouts::new` is `None` otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTimeouts {
    /// The route's `timeout`, when it covers the whole response.
    pub response: Option<Duration>,
    /// The route's `idle_timeout`.
    pub idle: Option<Duration>,
}

/// What ends a response body early: the route's limits, as they stand when the head came.
#[derive(Debug)]
pub struct ResponseTimer {
    /// The whole response's deadline, and the route's `timeout` it comes from.
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    idle: Option<(Quiet, Duration)>,
    /// The request body's bytes sent so far, when it streams: its bytes count as movement.
    received: Option<Counted>,
    stats: Arc<ClusterStats>,
    /// For a gRPC call: its response's messages so far, for its deadline to end it with
    /// trailers between two messages (`grpc_deadline`).
    messages: Option<Messages>,
}

/// A counter of bytes kept elsewhere, and its value at the last look.
#[derive(Debug)]
struct Counted {
    bytes: Arc<AtomicU64>,
    seen: u64,
}

/// Why a response body was stopped: the body's error, which resets the client's stream.
#[derive(Debug)]
pub struct StreamTimedOut {
    idle: bool,
    after: Duration,
}

/// A gRPC call stopped by its deadline in the middle of a message: its stream is reset with
/// CANCEL, which hyper takes from the h2 error among the body error's sources.
#[derive(Debug)]
struct CallCancelled {
    expired: StreamTimedOut,
    reset: h2::Error,
}

// === impl StreamTimeouts ===

impl StreamTimeouts {
    pub fn new(route: &config::Route) -> Option<StreamTimeouts> {
        let response = match route.timeout_covers {
            TimeoutCovers::Response => route.timeout.nonzero(),
            TimeoutCovers::Headers => None,
        };
        let idle = route.idle_timeout.nonzero();
        (response.is_some() || idle.is_some()).then_some(StreamTimeouts { response, idle })
    }

    /// Awaits `forwarded` (the exchange with the cluster) within the route's `timeout` (`head`,
    /// when it covers the head only) or its whole-response deadline, and its idle timeout; the
    /// response comes with the timer of what is left, for its body. `received` counts the
    /// request body's bytes, if it has one.
    pub async fn forward<F, U>(
        self,
        forwarded: F,
        head: Option<Duration>,
        cluster: &Cluster,
        received: Option<Arc<AtomicU64>>,
    ) -> Result<(Response<Body>, U, Box<ResponseTimer>), ProxyError>
    where
        F: Future<Output = Result<(Response<Body>, U), ProxyError>> + Unpin,
    {
        let limit = self.response.or(head);
        let deadline = limit.map(|limit| (Instant::now() + limit, limit));
        let mut idle = self.idle.map(|after| (Quiet::new(after), after));
        let mut received = received.map(|bytes| Counted { seen: bytes.load(Relaxed), bytes });
        let waiting = until_head(forwarded, &mut idle, &mut received);
        let answered = match deadline {
            Some((at, _)) => tokio::time::timeout_at(at, waiting).await.ok(),
            None => Some(waiting.await),
        };
        let (response, upstream) = match answered {
            Some(Some(answered)) => answered?,
            Some(None) => {
                cluster.stats.timeouts_total.inc();
                let after = idle.map_or(Duration::ZERO, |(_, after)| after);
                return Err(ProxyError::IdleTimeout { cluster: cluster.name.to_string(), after });
            }
            None => {
                cluster.stats.timeouts_total.inc();
                let after = limit.unwrap_or_default();
                return Err(ProxyError::Timeout { cluster: cluster.name.to_string(), after });
            }
        };
        let deadline = match (self.response, deadline) {
            (Some(_), Some((at, limit))) => Some((Box::pin(tokio::time::sleep_until(at)), limit)),
            _ => None,
        };
        let timer = Box::new(ResponseTimer { deadline, idle, received, stats: Arc::clone(&cluster.stats), messages: None });
        Ok((response, upstream, timer))
    }
}

/// `forwarded`'s answer; `None` once nothing moved for the idle timeout first.
async fn until_head<F: Future + Unpin>(mut forwarded: F, idle: &mut Option<(Quiet, Duration)>, received: &mut Option<Counted>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(answer) = Pin::new(&mut forwarded).poll(cx) {
            return Poll::Ready(Some(answer));
        }
        match idle {
            Some((quiet, _)) => quiet.poll_quiet(cx, || received.as_mut().is_some_and(Counted::moved)).map(|()| None),
            None => Poll::Pending,
        }
    })
    .await
}

// === impl ResponseTimer ===

impl ResponseTimer {
    /// The response is a gRPC call's: its deadline ends it with trailers where it can.
    pub fn end_calls_with_trailers(&mut self) {
        self.messages = Some(Messages::default());
    }

    /// A frame of the response moved (`data`, if it carried some).
    pub fn moved(&mut self, data: Option<&[u8]>) {
        if let Some((quiet, _)) = &mut self.idle {
            quiet.moved();
        }
        if let (Some(messages), Some(data)) = (&mut self.messages, data) {
            messages.feed(data);
        }
    }

    /// Whether `expired` is a gRPC call's deadline (counted as the call's DEADLINE_EXCEEDED
    /// however the call ends).
    pub fn is_call_deadline(&self, expired: &StreamTimedOut) -> bool {
        self.messages.is_some() && !expired.idle
    }

    /// How a response whose limit passed (`expired`) ends: a gRPC call past its deadline with
    /// trailers saying DEADLINE_EXCEEDED when the response so far is whole messages, or else a
    /// reset with CANCEL; any other response (and an idle timeout) with the error, which resets
    /// the client's stream (INTERNAL_ERROR) or cuts its HTTP/1.1 response.
    pub fn end(&self, expired: StreamTimedOut) -> Result<HeaderMap, Box<dyn std::error::Error + Send + Sync>> {
        match &self.messages {
            Some(messages) if !expired.idle && messages.whole() => Ok(grpc_deadline::exceeded_trailers(expired.after)),
            Some(_) if !expired.idle => Err(Box::new(CallCancelled { expired, reset: h2::Error::from(h2::Reason::CANCEL) })),
            _ => Err(Box::new(expired)),
        }
    }

    /// The whole response's deadline, should it have passed while the body kept coming (the
    /// timer wheel marks it; no clock is read): the error that stops the body then.
    pub fn passed(&mut self) -> Option<StreamTimedOut> {
        let (deadline, after) = self.deadline.as_ref()?;
        if !deadline.is_elapsed() {
            return None;
        }
        self.stats.timeouts_total.inc();
        Some(StreamTimedOut { idle: false, after: *after })
    }

    /// Called while the response body has nothing: ready with the error that stops it once a
    /// limit has passed (counted as the cluster's timeout).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<StreamTimedOut> {
        let passed = self.deadline.as_mut().is_some_and(|(deadline, _)| deadline.as_mut().poll(cx).is_ready());
        let expired = match (&self.deadline, &mut self.idle) {
            (Some((_, after)), _) if passed => StreamTimedOut { idle: false, after: *after },
            (_, Some((quiet, after))) => {
                let received = &mut self.received;
                std::task::ready!(quiet.poll_quiet(cx, || received.as_mut().is_some_and(Counted::moved)));
                StreamTimedOut { idle: true, after: *after }
            }
            _ => return Poll::Pending,
        };
        self.stats.timeouts_total.inc();
        Poll::Ready(expired)
    }
}

// === impl Counted ===

impl Counted {
    /// Whether the count changed since the last look.
    fn moved(&mut self) -> bool {
        let now = self.bytes.load(Relaxed);
        std::mem::replace(&mut self.seen, now) != now
    }
}

// === impl StreamTimedOut ===

impl std::fmt::Display for StreamTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.after.as_millis();
        if self.idle {
            write!(f, "the response moved no byte for {ms}ms (the route's idle_timeout)")
        } else {
            write!(f, "the response did not end within {ms}ms (the route's timeout)")
        }
    }
}

impl std::error::Error for StreamTimedOut {}

// === impl CallCancelled ===

impl std::fmt::Display for CallCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (the call's deadline, mid-message)", self.expired)
    }
}

impl std::error::Error for CallCancelled {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reset)
    }
}

/// The limits of a gRPC call (`grpc_deadline`): its route's, with the call's deadline (from
/// `grpc-timeout`) covering the whole response when it has one. Returns the stream timeouts, if
/// any, and the limit on the head alone for a call without them.
pub fn call_limits(headers: &HeaderMap, route_timeout: Option<Duration>, stream: Option<StreamTimeouts>) -> (Option<StreamTimeouts>, Option<Duration>) {
    let Some(asked) = crate::grpc::asked_timeout(headers) else {
        return (stream, route_timeout);
    };
    let deadline = route_timeout.map_or(asked, |route| asked.min(route));
    let response = stream.and_then(|s| s.response).map_or(deadline, |covered| covered.min(deadline));
    (Some(StreamTimeouts { response: Some(response), idle: stream.and_then(|s| s.idle) }), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn a_call_with_grpc_timeout_gets_a_deadline_over_the_whole_response() {
        let route = Some(Duration::from_secs(15));
        let covering = |response: Duration| Some(StreamTimeouts { response: Some(response), idle: None });
        assert_eq!(call_limits(&headers(&[("grpc-timeout", "250m")]), route, None), (covering(Duration::from_millis(250)), None));
        assert_eq!(call_limits(&headers(&[("grpc-timeout", "1H")]), route, None), (covering(Duration::from_secs(15)), None));
        assert_eq!(call_limits(&headers(&[("grpc-timeout", "3S")]), None, None), (covering(Duration::from_secs(3)), None));
        // The route's idle timeout stays; its whole-response timeout, when shorter, wins.
        let idle = Some(StreamTimeouts { response: Some(Duration::from_secs(1)), idle: Some(Duration::from_secs(2)) });
        assert_eq!(
            call_limits(&headers(&[("grpc-timeout", "3S")]), route, idle),
            (Some(StreamTimeouts { response: Some(Duration::from_secs(1)), idle: Some(Duration::from_secs(2)) }), None)
        );
        // Without a (valid) grpc-timeout: the route's limits, as for any request.
        for ignored in [&[][..], &[("grpc-timeout", "10x")][..]] {
            assert_eq!(call_limits(&headers(ignored), route, None), (None, route));
            assert_eq!(call_limits(&headers(ignored), route, idle), (idle, route));
        }
    }

    fn route(json: &str) -> config::Route {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_route_without_either_setting_has_no_stream_timeouts() {
        assert_eq!(StreamTimeouts::new(&route("{}")), None);
        // Its timeout covers the head only: the plain path has it.
        assert_eq!(StreamTimeouts::new(&route(r#"{"timeout": "5s"}"#)), None);
        assert_eq!(
            StreamTimeouts::new(&route(r#"{"timeout": "5s", "timeout_covers": "response"}"#)),
            Some(StreamTimeouts { response: Some(Duration::from_secs(5)), idle: None })
        );
        assert_eq!(
            StreamTimeouts::new(&route(r#"{"idle_timeout": "300ms"}"#)),
            Some(StreamTimeouts { response: None, idle: Some(Duration::from_millis(300)) })
        );
    }

    fn timer(idle: Duration, received: Option<Arc<AtomicU64>>) -> ResponseTimer {
        let received = received.map(|bytes| Counted { seen: 0, bytes });
        ResponseTimer { deadline: None, idle: Some((Quiet::new(idle), idle)), received, stats: Arc::default(), messages: None }
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_fires_after_quiet_and_request_bytes_count_as_movement() {
        let idle = Duration::from_secs(4);
        let mut quiet = timer(idle, None);
        let started = Instant::now();
        let expired = std::future::poll_fn(|cx| quiet.poll_expired(cx)).await;
        assert!(expired.idle);
        let took = started.elapsed();
        assert!(took >= idle && took <= idle + idle / 4, "{took:?}");
        assert_eq!(quiet.stats.timeouts_total.get(), 1);

        // A request body still streaming keeps the stream alive, the response silent.
        let bytes = Arc::new(AtomicU64::new(0));
        let mut uploading = timer(idle, Some(Arc::clone(&bytes)));
        let feeding = {
            let bytes = Arc::clone(&bytes);
            tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    bytes.fetch_add(100, Relaxed);
                }
            })
        };
        let started = Instant::now();
        std::future::poll_fn(|cx| uploading.poll_expired(cx)).await;
        assert!(started.elapsed() >= Duration::from_secs(10) + idle, "{:?}", started.elapsed());
        feeding.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
