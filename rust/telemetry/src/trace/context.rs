//! The proxy's span of one request: read the caller's trace context (W3C `traceparent` first,
//! then the single `b3` header, then the `x-b3-*` headers), start a span in that trace (or a new
//! trace), and make the upstream request carry the proxy's span as its parent, in every format
//! the caller used.

use http::header::HeaderMap;

use super::b3::{self, Sampling};
use super::id::{SpanId, TraceId};
use super::w3c::{self, TRACEPARENT, TRACESTATE};
use crate::sample::Sample;

/// Where the proxy's span sits: its trace, its own id, its parent (the caller's span, if a
/// context came in) and whether it is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub sampled: bool,
}

/// The caller's context as read from the request, before a span is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's trace and span, from the first valid format.
    pub parent: Option<(TraceId, SpanId)>,
    /// The caller's sampling decision, if it made one.
    pub sampled: Option<bool>,
    debug: bool,
    /// A valid `traceparent` came in: its `tracestate` belongs to the same trace and goes on.
    w3c: bool,
    /// B3 headers came in (valid or not): the upstream request gets them, rewritten.
    b3_single: bool,
    b3_multi: bool,
}

/// The proxy's span of one request, and how to tell the upstream about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    pub span: SpanContext,
    incoming: Incoming,
}

// === impl Incoming ===

impl Incoming {
    /// Reads the request's trace context. Malformed or repeated headers read as absent.
    pub fn read(headers: &HeaderMap) -> Incoming {
        let b3_single = headers.contains_key(b3::B3);
        let b3_multi = b3::has_multi(headers);
        let mut incoming = Incoming { b3_single, b3_multi, ..Incoming::default() };
        if let Some(parent) = only(headers, &TRACEPARENT).and_then(w3c::parse) {
            incoming.parent = Some((parent.trace_id, parent.parent));
            incoming.sampled = Some(parent.sampled);
            incoming.w3c = true;
        }
        let single = if b3_single { only(headers, &b3::B3).and_then(b3::parse_single) } else { None };
        let b3 = single.or_else(|| if b3_multi { b3::parse_multi(headers) } else { None });
        if let Some(b3) = b3 {
            incoming.debug = b3.sampling == Some(Sampling::Debug);
            if !incoming.w3c {
                incoming.parent = b3.ids;
                incoming.sampled = b3.sampling.map(|s| s != Sampling::Deny);
            }
        }
        incoming
    }

    /// The caller's trace id, if a valid context came in.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.parent.map(|(trace_id, _)| trace_id)
    }
}

/// The value of a header that appears exactly once.
fn only<'a>(headers: &'a HeaderMap, name: &http::header::HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        _ => None,
    }
}

// === impl Trace ===

impl Trace {
    /// Starts the proxy's span: in the caller's trace when one came in, else in a new trace.
    /// The caller's sampling decision is honoured; without one, `sample` decides.
    pub fn start(headers: &HeaderMap, sample: Sample) -> Trace {
        let incoming = Incoming::read(headers);
        let (trace_id, parent) = match incoming.parent {
            Some((trace_id, parent)) => (trace_id, Some(parent)),
            None => (TraceId::random(), None),
        };
        let sampled = incoming.sampled.unwrap_or_else(|| sample.draw());
        Trace { span: SpanContext { trace_id, span_id: SpanId::random(), parent, sampled }, incoming }
    }

    /// Makes the upstream request's headers name the proxy's span as the parent: `traceparent`
    /// always, B3 in the form(s) it came in. `tracestate` goes on only with the trace it
    /// belongs to (a valid incoming `traceparent`).
    pub fn inject(&self, headers: &mut HeaderMap) {
        let span = &self.span;
        headers.insert(TRACEPARENT, w3c::format(span.trace_id, span.span_id, span.sampled));
        if !self.incoming.w3c {
            headers.remove(TRACESTATE);
        }
        let sampling = match (self.incoming.debug, span.sampled) {
            (true, _) => Sampling::Debug,
            (false, true) => Sampling::Accept,
            (false, false) => Sampling::Deny,
        };
        let out = b3::Outgoing { trace_id: span.trace_id, span: span.span_id, parent: span.parent, sampling };
        if self.incoming.b3_single {
            b3::write_single(headers, &out);
        }
        if self.incoming.b3_multi {
            b3::write_multi(headers, &out);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn get(headers: &HeaderMap, name: &str) -> Option<String> {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    #[test]
    fn an_incoming_traceparent_becomes_the_parent_of_the_proxy_span() {
        let mut headers = map(&[("traceparent", PARENT), ("tracestate", "vendor=1")]);
        let trace = Trace::start(&headers, Sample::new(0.0).unwrap());
        assert_eq!(trace.span.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.span.parent.map(|p| p.to_string()).as_deref(), Some("00f067aa0ba902b7"));
        assert!(trace.span.sampled, "the caller's decision wins over the ratio");
        trace.inject(&mut headers);
        let expected = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", trace.span.span_id);
        assert_eq!(get(&headers, "traceparent"), Some(expected));
        assert_eq!(get(&headers, "tracestate").as_deref(), Some("vendor=1"));
        assert_eq!(get(&headers, "b3"), None, "B3 is written only when it came in");
    }

    #[test]
    fn without_a_context_a_new_trace_starts_and_the_ratio_decides() {
        let mut headers = map(&[("tracestate", "orphan=1")]);
        let trace = Trace::start(&headers, Sample::new(1.0).unwrap());
        assert_eq!(trace.span.parent, None);
        assert!(trace.span.sampled);
        trace.inject(&mut headers);
        assert_eq!(get(&headers, "traceparent"), Some(format!("00-{}-{}-01", trace.span.trace_id, trace.span.span_id)));
        assert_eq!(get(&headers, "tracestate"), None, "a tracestate without its traceparent is dropped");
        let unsampled = Trace::start(&HeaderMap::new(), Sample::new(0.0).unwrap());
        assert!(!unsampled.span.sampled);
    }

    #[test]
    fn a_malformed_traceparent_is_replaced_by_a_new_trace() {
        let mut headers = map(&[("traceparent", "00-zzzz-01"), ("tracestate", "vendor=1")]);
        let trace = Trace::start(&headers, Sample::new(0.0).unwrap());
        assert_eq!(trace.span.parent, None);
        trace.inject(&mut headers);
        assert_eq!(get(&headers, "traceparent"), Some(format!("00-{}-{}-00", trace.span.trace_id, trace.span.span_id)));
        assert_eq!(get(&headers, "tracestate"), None);
    }

    #[test]
    fn b3_in_is_b3_out_with_the_proxy_span() {
        let mut headers = map(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
        let trace = Trace::start(&headers, Sample::new(1.0).unwrap());
        assert!(!trace.span.sampled);
        assert_eq!(trace.span.parent.map(|p| p.to_string()).as_deref(), Some("e457b5a2e4d86bd1"));
        trace.inject(&mut headers);
        assert_eq!(
            get(&headers, "b3"),
            Some(format!("80f198ee56343ba864fe8b2a57d3eff7-{}-0-e457b5a2e4d86bd1", trace.span.span_id))
        );
        assert!(get(&headers, "traceparent").is_some_and(|t| t.starts_with("00-80f198ee56343ba864fe8b2a57d3eff7-")));
        assert_eq!(get(&headers, "x-b3-traceid"), None);
    }

    #[test]
    fn multi_b3_with_a_64_bit_trace_goes_out_in_64_bits() {
        let mut headers = map(&[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "e457b5a2e4d86bd1"), ("x-b3-sampled", "1")]);
        let trace = Trace::start(&headers, Sample::new(0.0).unwrap());
        assert!(trace.span.sampled);
        trace.inject(&mut headers);
        assert_eq!(get(&headers, "x-b3-traceid").as_deref(), Some("a3ce929d0e0e4736"));
        assert_eq!(get(&headers, "x-b3-spanid"), Some(trace.span.span_id.to_string()));
        assert_eq!(get(&headers, "x-b3-parentspanid").as_deref(), Some("e457b5a2e4d86bd1"));
        assert_eq!(get(&headers, "traceparent"), Some(format!("00-0000000000000000a3ce929d0e0e4736-{}-01", trace.span.span_id)));
    }

    #[test]
    fn a_b3_sampling_decision_alone_starts_a_trace_with_that_decision() {
        let mut headers = map(&[("b3", "1")]);
        let trace = Trace::start(&headers, Sample::new(0.0).unwrap());
        assert!(trace.span.sampled);
        assert_eq!(trace.span.parent, None);
        trace.inject(&mut headers);
        assert_eq!(get(&headers, "b3"), Some(format!("{}-{}-1", trace.span.trace_id, trace.span.span_id)));
    }

    #[test]
    fn w3c_wins_over_b3_and_both_are_rewritten() {
        let mut headers = map(&[("traceparent", PARENT), ("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "e457b5a2e4d86bd1")]);
        let trace = Trace::start(&headers, Sample::new(0.0).unwrap());
        trace.inject(&mut headers);
        assert_eq!(get(&headers, "x-b3-traceid").as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(get(&headers, "x-b3-parentspanid").as_deref(), Some("00f067aa0ba902b7"));
    }

    #[test]
    fn a_repeated_traceparent_is_no_context() {
        let headers = map(&[("traceparent", PARENT), ("traceparent", PARENT)]);
        assert_eq!(Incoming::read(&headers).parent, None);
    }
}
