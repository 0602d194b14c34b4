//! Why the proxy answered a request itself (no route, no endpoint, a timeout...): counted in
//! the stats, written in access logs and spans, and sent in the `x-meshproxy-error` header.

use http::StatusCode;

/// The reasons, in the order stats count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    NoRoute,
    NoHealthyEndpoint,
    ConnectFailure,
    Timeout,
    UpstreamFailure,
    Denied,
    /// A cluster's circuit breaker refused the request.
    Overflow,
    RateLimited,
    FaultInjected,
    /// An HTTP/1.1 request's `Transfer-Encoding` has a coding other than `chunked`.
    UnsupportedTransferCoding,
    /// A `CONNECT` no route allows (its host or port).
    ConnectDenied,
    /// The host a `CONNECT` names (to a cluster with `original_destination: true`) has no
    /// address: it does not resolve, or not within the cluster's `connect_timeout`.
    DnsFailure,
    /// The listener was drained (removed by a reload, or closed by a drain or shutdown) and the
    /// connection or tunnel was still open after the drain timeout: closed by the proxy.
    Drained,
    /// An upstream's response the proxy will not pass on: a transfer coding other than
    /// `chunked` (RFC 9112 §6.1 forbids dropping it); Envoy's upstream protocol error.
    UpstreamProtocolError,
}

// === impl Reason ===

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::BadRequest,
        Reason::NoRoute,
        Reason::NoHealthyEndpoint,
        Reason::ConnectFailure,
        Reason::Timeout,
        Reason::UpstreamFailure,
        Reason::Denied,
        Reason::Overflow,
        Reason::RateLimited,
        Reason::FaultInjected,
        Reason::UnsupportedTransferCoding,
        Reason::ConnectDenied,
        Reason::DnsFailure,
        Reason::Drained,
        Reason::UpstreamProtocolError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::NoRoute => "no_route",
            Reason::NoHealthyEndpoint => "no_healthy_endpoint",
            Reason::ConnectFailure => "connect_failure",
            Reason::Timeout => "timeout",
            Reason::UpstreamFailure => "upstream_failure",
            Reason::Denied => "denied",
            Reason::Overflow => "overflow",
            Reason::RateLimited => "rate_limited",
            Reason::FaultInjected => "fault_injected",
            Reason::UnsupportedTransferCoding => "unsupported_transfer_coding",
            Reason::ConnectDenied => "connect_denied",
            Reason::DnsFailure => "dns_failure",
            Reason::Drained => "drained",
            Reason::UpstreamProtocolError => "upstream_protocol_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::NoRoute => StatusCode::NOT_FOUND,
            // As Envoy's dynamic forward proxy answers a name it cannot resolve.
            Reason::NoHealthyEndpoint | Reason::Overflow | Reason::DnsFailure => StatusCode::SERVICE_UNAVAILABLE,
            // Never an answer: what ends a connection or tunnel the drain closed.
            Reason::Drained => StatusCode::SERVICE_UNAVAILABLE,
            Reason::ConnectFailure | Reason::UpstreamFailure | Reason::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            Reason::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::Denied | Reason::ConnectDenied => StatusCode::FORBIDDEN,
            Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            // The usual one; an abort answers the status its route sets (`ProxyError::into_response`).
            Reason::FaultInjected => StatusCode::SERVICE_UNAVAILABLE,
            // RFC 9112 §6.1: a coding the server does not understand.
            Reason::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
