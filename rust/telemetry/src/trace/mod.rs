//! Distributed tracing: the proxy's span of each request, propagated in W3C Trace Context and
//! B3 headers, and exported (when sampled) through a bounded queue that Python drains in
//! batches and sends over OTLP.

pub mod attributes;
pub mod b3;
pub mod context;
pub mod export;
pub mod id;
pub mod w3c;

pub use context::{Incoming, SpanContext, Trace};
pub use export::{FinishedSpan, SpanQueue};
pub use id::{SpanId, TraceId};

#[cfg(test)]
mod tests {
    //! Whatever a client sends as trace headers, reading them never panics, a value that does not
    //! parse counts as no context, and the upstream request always carries a valid one.

    use http::header::{HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::id::Case;
    use super::*;
    use crate::sample::Sample;

    const NAMES: [&str; 7] = ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"];

    /// Header values a client might send: printable noise, hex-and-dash soup, and near-misses of
    /// valid values.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(0x20u8..0x7f, 0..80),
            "[0-9a-fA-F-]{0,70}".prop_map(String::into_bytes),
            (0usize..55, any::<u8>()).prop_map(|(at, byte)| {
                let mut v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec();
                v[at] = byte;
                v
            }),
            "[0-9a-f]{16}-[0-9a-f]{16}(-[01d](-[0-9a-f]{16})?)?".prop_map(String::into_bytes),
        ]
    }

    fn headers() -> impl Strategy<Value = HeaderMap> {
        proptest::collection::vec((0..NAMES.len(), value()), 0..6).prop_map(|pairs| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.append(HeaderName::from_static(NAMES[name]), value);
                }
            }
            headers
        })
    }

    proptest! {
        #[test]
        fn any_headers_yield_a_valid_traceparent_upstream(mut headers in headers(), ratio in 0.0f64..=1.0) {
            let sample = Sample::new(ratio).unwrap_or(Sample::ALL);
            let trace = Trace::start(&headers, sample);
            trace.inject(&mut headers);
            let sent = headers.get("traceparent").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
            let parsed = w3c::parse(&sent);
            prop_assert_eq!(parsed.map(|p| (p.trace_id, p.parent, p.sampled)),
                            Some((trace.span.trace_id, trace.span.span_id, trace.span.sampled)));
            if headers.contains_key("b3") {
                let b3 = headers.get("b3").and_then(|v| b3::parse_single(v.as_bytes()));
                prop_assert_eq!(b3.and_then(|c| c.ids).map(|(_, span)| span), Some(trace.span.span_id));
            }
        }

        #[test]
        fn a_traceparent_that_does_not_parse_is_no_context(value in value()) {
            let Ok(header) = HeaderValue::from_bytes(&value) else { return Ok(()) };
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", header);
            let incoming = Incoming::read(&headers);
            match w3c::parse(&value) {
                None => prop_assert_eq!(incoming.parent, None),
                Some(parent) => {
                    prop_assert_eq!(incoming.parent, Some((parent.trace_id, parent.parent)));
                    // What parses is what the spec's grammar allows: lowercase hex ids.
                    prop_assert!(TraceId::parse(&value[3..35], Case::Lower).is_some());
                }
            }
        }

        #[test]
        fn b3_values_that_do_not_parse_are_no_context(value in value()) {
            let Ok(header) = HeaderValue::from_bytes(&value) else { return Ok(()) };
            let mut headers = HeaderMap::new();
            headers.insert("b3", header.clone());
            headers.insert("x-b3-traceid", header);
            let incoming = Incoming::read(&headers);
            if b3::parse_single(&value).is_none() && b3::parse_multi(&headers).is_none() {
                prop_assert_eq!((incoming.parent, incoming.sampled), (None, None));
            }
        }
    }
}
