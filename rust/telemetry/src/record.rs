//! What telemetry keeps of one finished request: the access log writes it as a JSON line, and
//! the proxy's span, when sampled, is exported with it as its attributes. Built once per
//! request, and only when one of them wants it; every part is a cheap clone of what the
//! request path already holds.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::borrow::Cow;

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Method, Uri, Version};

use meshproxy_config::Direction;
use crate::Reason;
use meshproxy_config::spiffe::SpiffeId;
use crate::trace::{SpanId, TraceId};

#[derive(Clone, Debug)]
pub struct Record {
    /// When the request arrived.
    pub start: SystemTime,
    /// From arrival to the end of the response body (or its abandonment).
    pub duration: Duration,
    pub listener: Arc<str>,
    pub direction: Direction,
    /// The downstream protocol.
    pub protocol: Version,
    pub method: Method,
    /// The request target as received (before any rewrite).
    pub target: Uri,
    /// The `Host` header, for a target without an authority.
    pub host: Option<HeaderValue>,
    pub status: u16,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    /// The endpoint the request went to last, as configured (`HOST:PORT`).
    pub upstream_address: Option<Arc<str>>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// The `x-request-id` the upstream saw (the client's, or the one the proxy generated).
    pub request_id: Option<HeaderValue>,
    /// The trace the request belongs to: the proxy span's, or with tracing off the caller's.
    pub trace_id: Option<TraceId>,
    /// The proxy's span, with tracing on.
    pub span_id: Option<SpanId>,
    pub client_address: IpAddr,
    /// The mesh peer's SPIFFE ID, for requests that came over mutual TLS.
    pub peer_identity: Option<SpiffeId>,
    /// The reason of an error the proxy answered itself (for a TCP connection: why it ended,
    /// when not by either side closing).
    pub error: Option<Reason>,
    /// A gRPC call's `grpc-status` (from the upstream's trailers, or the proxy's own error).
    pub grpc_status: Option<u8>,
    /// An opaque TCP connection rather than a request: no method, target nor status.
    pub tcp: bool,
}

// === impl Record ===

impl Record {
    /// The authority the client asked for: from the target, else from `Host`.
    pub fn authority(&self) -> Option<Cow<'_, str>> {
        match self.target.authority() {
            Some(authority) => Some(Cow::Borrowed(authority.as_str())),
            None => self.host.as_ref().map(|host| String::from_utf8_lossy(host.as_bytes())),
        }
    }

    /// The path and query, as received.
    pub fn path(&self) -> Option<&str> {
        self.target.path_and_query().map(PathAndQuery::as_str)
    }

    /// The request path without the query.
    pub fn url_path(&self) -> &str {
        self.target.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.target.query()
    }

    /// The protocol version as OpenTelemetry's `network.protocol.version` writes it.
    pub fn protocol_version(&self) -> &'static str {
        match self.protocol {
            Version::HTTP_09 => "0.9",
            Version::HTTP_10 => "1.0",
            Version::HTTP_2 => "2",
            Version::HTTP_3 => "3",
            _ => "1.1",
        }
    }

    /// A record with the given essentials and nothing else, for tests.
    #[cfg(test)]
    pub fn example(status: u16) -> Record {
        Record {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_032_462_123),
            duration: Duration::from_micros(1_500),
            listener: "outbound".into(),
            direction: Direction::Outbound,
            protocol: Version::HTTP_11,
            method: Method::GET,
            target: Uri::from_static("/orders/1?full=true"),
            host: Some(HeaderValue::from_static("orders")),
            status,
            route: Some("orders".into()),
            cluster: Some("orders-v1".into()),
            upstream_address: Some("127.0.0.1:8081".into()),
            bytes_in: 0,
            bytes_out: 42,
            request_id: Some(HeaderValue::from_static("6f1c2d3e-0000-4000-8000-000000000001")),
            trace_id: None,
            span_id: None,
            client_address: IpAddr::from([127, 0, 0, 1]),
            peer_identity: None,
            error: None,
            grpc_status: None,
            tcp: false,
        }
    }
}
