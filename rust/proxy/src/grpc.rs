//! gRPC-aware proxying. A gRPC call is an HTTP/2 POST whose `content-type` is
//! `application/grpc` (or `application/grpc+proto`, `application/grpc;...`): told apart by the
//! version and method, then that one header, so other requests pay two compares. gRPC has no
//! HTTP/1.1 mapping; an HTTP/1.1 request keeps HTTP errors (a broken body closes its connection).
//!
//! For a call, the proxy reads `grpc-status` from the response's trailers (or from its headers,
//! for a trailers-only response) into the stats, the access log and the span; honours
//! `grpc-timeout` as the call's deadline over the whole call (`grpc_deadline`); and answers its own errors as gRPC errors (HTTP 200,
//! the status and message in a trailers-only response), since a gRPC client reads a bare HTTP
//! 503 as a protocol failure, not as `UNAVAILABLE`. Trailers themselves need nothing here:
//! bodies carry them frame by frame, end to end, and `te: trailers` is kept (`headers`).

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode, Version};

use crate::body::Body;
use crate::error::{ProxyError, ERROR_HEADER};

pub const GRPC_STATUS: &str = "grpc-status";
pub const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The gRPC status codes the proxy answers with (grpc/doc/statuscodes.md).
pub mod code {
    pub const CANCELLED: u8 = 1;
    pub const UNKNOWN: u8 = 2;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

/// Whether a request is a gRPC call.
pub fn is_call(version: Version, method: &Method, headers: &HeaderMap) -> bool {
    version == Version::HTTP_2
        && *method == Method::POST
        && headers.get(CONTENT_TYPE).is_some_and(|value| is_grpc_content_type(value.as_bytes()))
}

fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The call's `grpc-timeout`, if it has a valid one (`grpc_deadline` makes it the call's
/// deadline).
pub fn asked_timeout(headers: &HeaderMap) -> Option<Duration> {
    headers.get(GRPC_TIMEOUT).and_then(|value| parse_timeout(value.as_bytes()))
}

/// `TimeoutValue TimeoutUnit`: at most 8 digits, then `H`, `M`, `S`, `m`, `u` or `n`
/// (grpc/doc/PROTOCOL-HTTP2.md). Anything else is ignored, as gRPC servers do.
fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `grpc-status` of trailers, or of the headers of a trailers-only response.
pub fn status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get(GRPC_STATUS)?.as_bytes();
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    u8::try_from(value.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))).ok()
}

/// The gRPC code of an error the proxy answers itself: the one mapping, for every error.
pub fn code(error: &ProxyError) -> u8 {
    match error {
        ProxyError::NoHealthyEndpoint { .. }
        | ProxyError::ConnectFailure { .. }
        | ProxyError::UpstreamFailure { .. }
        | ProxyError::UpstreamProtocolError { .. }
        | ProxyError::Overflow { .. }
        | ProxyError::DnsFailure { .. } => code::UNAVAILABLE,
        ProxyError::Timeout { .. } | ProxyError::IdleTimeout { .. } => code::DEADLINE_EXCEEDED,
        ProxyError::Denied { .. } | ProxyError::ConnectDenied { .. } => code::PERMISSION_DENIED,
        ProxyError::RateLimited { .. } => code::RESOURCE_EXHAUSTED,
        // As gRPC maps HTTP statuses (grpc/doc/http-grpc-status-mapping.md).
        ProxyError::NoRoute { .. } | ProxyError::UnsupportedTransferCoding => code::UNIMPLEMENTED,
        ProxyError::BadRequest(_) => code::INTERNAL,
        ProxyError::FaultInjected { status } => from_http(*status),
    }
}

/// gRPC's mapping of an HTTP status that carries no `grpc-status`.
fn from_http(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502..=504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// The proxy's error as a gRPC client reads it: a trailers-only response (HTTP 200, no body)
/// with the code and, as `grpc-message`, the text an HTTP client gets as the body.
pub fn error_response(error: &ProxyError) -> (Response<Body>, u8) {
    let code = code(error);
    let mut response = Response::new(Body::Empty);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code)));
    if let Ok(message) = HeaderValue::from_maybe_shared(bytes::Bytes::from(percent_encoded(&error.to_string()))) {
        headers.insert(GRPC_MESSAGE, message);
    }
    headers.insert(ERROR_HEADER, HeaderValue::from_static(error.reason().name()));
    (response, code)
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
fn percent_encoded(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn a_call_is_a_post_with_a_grpc_content_type() {
        let h2 = Version::HTTP_2;
        for grpc in ["application/grpc", "application/grpc+proto", "Application/GRPC;charset=utf-8"] {
            assert!(is_call(h2, &Method::POST, &headers(&[("content-type", grpc)])), "{grpc}");
        }
        assert!(!is_call(h2, &Method::GET, &headers(&[("content-type", "application/grpc")])));
        assert!(!is_call(Version::HTTP_11, &Method::POST, &headers(&[("content-type", "application/grpc")])));
        for not in ["application/grpc-web", "application/json", "application/grp"] {
            assert!(!is_call(h2, &Method::POST, &headers(&[("content-type", not)])), "{not}");
        }
        assert!(!is_call(h2, &Method::POST, &HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_is_read_with_its_unit() {
        assert_eq!(asked_timeout(&headers(&[("grpc-timeout", "250m")])), Some(Duration::from_millis(250)));
        assert_eq!(asked_timeout(&headers(&[("grpc-timeout", "1H")])), Some(Duration::from_secs(3600)));
        assert_eq!(asked_timeout(&headers(&[("grpc-timeout", "3S")])), Some(Duration::from_secs(3)));
        assert_eq!(asked_timeout(&headers(&[("grpc-timeout", "99999999u")])), Some(Duration::from_micros(99_999_999)));
        for ignored in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(asked_timeout(&headers(&[("grpc-timeout", ignored)])), None, "{ignored:?}");
        }
        assert_eq!(asked_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn status_is_read_as_a_number() {
        assert_eq!(status(&headers(&[("grpc-status", "0")])), Some(0));
        assert_eq!(status(&headers(&[("grpc-status", "14")])), Some(14));
        assert_eq!(status(&headers(&[("grpc-status", "x")])), None);
        assert_eq!(status(&headers(&[("grpc-status", "1000")])), None);
        assert_eq!(status(&HeaderMap::new()), None);
    }

    #[test]
    fn proxy_errors_are_trailers_only_grpc_errors() {
        let error = ProxyError::NoHealthyEndpoint { cluster: "orders".into() };
        let (response, code) = error_response(&error);
        assert_eq!((response.status(), code), (StatusCode::OK, code::UNAVAILABLE));
        let h = response.headers();
        assert_eq!(h.get("grpc-status").map(HeaderValue::as_bytes), Some(&b"14"[..]));
        assert_eq!(h.get("grpc-message").map(HeaderValue::as_bytes), Some(&b"no healthy endpoint in cluster 'orders'"[..]));
        assert_eq!(h.get("content-type").map(HeaderValue::as_bytes), Some(&b"application/grpc"[..]));
        assert!(http_body::Body::is_end_stream(response.body()));
        assert_eq!(code_of(ProxyError::Timeout { cluster: "c".into(), after: Duration::ZERO }), code::DEADLINE_EXCEEDED);
        assert_eq!(code_of(ProxyError::Denied { policy: "p".into(), rule: None }), code::PERMISSION_DENIED);
        assert_eq!(code_of(ProxyError::RateLimited { retry_after: 1 }), code::RESOURCE_EXHAUSTED);
        assert_eq!(code_of(ProxyError::FaultInjected { status: StatusCode::SERVICE_UNAVAILABLE }), code::UNAVAILABLE);
        assert_eq!(percent_encoded("50% é"), b"50%25 %C3%A9".to_vec());
    }

    fn code_of(error: ProxyError) -> u8 {
        code(&error)
    }
}
