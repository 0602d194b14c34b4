//! Errors the proxy itself answers with: each a distinct status, a short plain-text body, and an
//! `x-meshproxy-error` header naming the reason, so a client can tell the proxy's answer from
//! the upstream's.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::Body;
pub use meshproxy_telemetry::Reason;

pub const ERROR_HEADER: &str = "x-meshproxy-error";

#[derive(Debug)]
pub enum ProxyError {
    /// The request is malformed in a way the HTTP parser let through (e.g. smuggling attempts).
    BadRequest(&'static str),
    NoRoute { host: String, path: String },
    NoHealthyEndpoint { cluster: String },
    ConnectFailure { cluster: String, endpoint: String, cause: String },
    Timeout { cluster: String, after: std::time::Duration },
    /// No byte moved either way for the route's `idle_timeout` before the response head.
    IdleTimeout { cluster: String, after: std::time::Duration },
    /// The upstream broke the exchange after the connection was made (reset, protocol error).
    UpstreamFailure { cluster: String, endpoint: String, cause: String },
    /// An authorization policy denied the request: a deny rule matched (`rule`), or no allow
    /// rule did.
    Denied { policy: Arc<str>, rule: Option<Arc<str>> },
    /// A circuit breaker of the cluster (`limit`, at `max`) refused the request.
    Overflow { cluster: String, limit: &'static str, max: u32 },
    /// A rate limit had no token left; one comes within `retry_after` seconds.
    RateLimited { retry_after: u64 },
    /// The route's fault injection aborted the request with this status.
    FaultInjected { status: StatusCode },
    /// An HTTP/1.1 request's `Transfer-Encoding` names a coding the proxy cannot decode: only
    /// `chunked` is understood, and forwarding the others as plain `chunked` would drop them.
    UnsupportedTransferCoding,
    /// A CONNECT to a destination no route allows.
    ConnectDenied { authority: String },
    /// The host a CONNECT names has no address (`connect`, to a passthrough cluster).
    DnsFailure { host: String, cause: String },
    /// The upstream's response broke HTTP in a way the proxy will not pass on (`what`): a
    /// transfer coding other than `chunked`, which forwarding would drop.
    UpstreamProtocolError { cluster: String, what: &'static str },
}

// === impl ProxyError ===

impl ProxyError {
    pub fn reason(&self) -> Reason {
        match self {
            ProxyError::BadRequest(_) => Reason::BadRequest,
            ProxyError::NoRoute { .. } => Reason::NoRoute,
            ProxyError::NoHealthyEndpoint { .. } => Reason::NoHealthyEndpoint,
            ProxyError::ConnectFailure { .. } => Reason::ConnectFailure,
            ProxyError::Timeout { .. } | ProxyError::IdleTimeout { .. } => Reason::Timeout,
            ProxyError::UpstreamFailure { .. } => Reason::UpstreamFailure,
            ProxyError::Denied { .. } => Reason::Denied,
            ProxyError::Overflow { .. } => Reason::Overflow,
            ProxyError::RateLimited { .. } => Reason::RateLimited,
            ProxyError::FaultInjected { .. } => Reason::FaultInjected,
            ProxyError::UnsupportedTransferCoding => Reason::UnsupportedTransferCoding,
            ProxyError::ConnectDenied { .. } => Reason::ConnectDenied,
            ProxyError::DnsFailure { .. } => Reason::DnsFailure,
            ProxyError::UpstreamProtocolError { .. } => Reason::UpstreamProtocolError,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let reason = self.reason();
        let mut response = Response::new(Body::text(format!("{self}\n")));
        *response.status_mut() = match &self {
            ProxyError::FaultInjected { status } => *status,
            _ => reason.status(),
        };
        let headers = response.headers_mut();
        if let ProxyError::RateLimited { retry_after } = self {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
        }
        headers.insert(ERROR_HEADER, HeaderValue::from_static(reason.name()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if reason == Reason::BadRequest {
            // The connection's framing can no longer be trusted.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::NoRoute { host, path } => write!(f, "no route for host '{host}' path '{path}'"),
            ProxyError::NoHealthyEndpoint { cluster } => write!(f, "no healthy endpoint in cluster '{cluster}'"),
            ProxyError::ConnectFailure { cluster, endpoint, cause } => {
                write!(f, "cannot connect to {endpoint} of cluster '{cluster}': {cause}")
            }
            ProxyError::Timeout { cluster, after } => {
                write!(f, "cluster '{cluster}' did not answer within {}ms", after.as_millis())
            }
            ProxyError::IdleTimeout { cluster, after } => {
                write!(f, "no byte moved to or from cluster '{cluster}' for {}ms (the route's idle_timeout)", after.as_millis())
            }
            ProxyError::UpstreamFailure { cluster, endpoint, cause } => {
                write!(f, "{endpoint} of cluster '{cluster}' failed: {cause}")
            }
            ProxyError::Denied { policy, rule: Some(rule) } => write!(f, "denied by rule '{rule}' of policy '{policy}'"),
            ProxyError::Denied { policy, rule: None } => write!(f, "denied: no allow rule of policy '{policy}' matches"),
            ProxyError::Overflow { cluster, limit, max } => {
                write!(f, "cluster '{cluster}' is at its circuit breakers' {limit} ({max})")
            }
            ProxyError::RateLimited { retry_after } => write!(f, "rate limited; retry after {retry_after}s"),
            ProxyError::FaultInjected { status } => write!(f, "fault injected: aborted with {}", status.as_u16()),
            ProxyError::UnsupportedTransferCoding => write!(f, "not implemented: a transfer coding other than chunked"),
            ProxyError::ConnectDenied { authority } => write!(f, "no route allows a CONNECT to '{authority}'"),
            ProxyError::DnsFailure { host, cause } => write!(f, "cannot resolve '{host}': {cause}"),
            ProxyError::UpstreamProtocolError { cluster, what } => write!(f, "cluster '{cluster}' answered {what}"),
        }
    }
}

impl std::error::Error for ProxyError {}
