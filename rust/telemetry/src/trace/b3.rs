//! B3 propagation (https://github.com/openzipkin/b3-propagation): the single `b3` header and
//! the `x-b3-*` headers, read and written. A malformed B3 context reads as `None`: no context.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::id::{push_hex, Case, SpanId, TraceId};

pub const B3: HeaderName = HeaderName::from_static("b3");
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The caller's sampling decision. Debug implies accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    Deny,
    Accept,
    Debug,
}

/// A B3 context: the caller's trace and span, or only a sampling decision, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub ids: Option<(TraceId, SpanId)>,
    pub sampling: Option<Sampling>,
}

/// Whether any `x-b3-*` header is present, valid or not.
pub fn has_multi(headers: &HeaderMap) -> bool {
    [&TRACE_ID, &SPAN_ID, &PARENT_SPAN_ID, &SAMPLED, &FLAGS].iter().any(|name| headers.contains_key(*name))
}

/// Reads `b3: {trace}-{span}[-{sampling}[-{parent}]]`, or `b3: {sampling}` alone.
pub fn parse_single(value: &[u8]) -> Option<Context> {
    let mut parts = value.split(|&b| b == b'-');
    let first = parts.next()?;
    let Some(span) = parts.next() else {
        return Some(Context { ids: None, sampling: Some(sampling_state(first)?) });
    };
    let ids = (TraceId::parse(first, Case::Any)?, SpanId::parse(span, Case::Any)?);
    let sampling = match parts.next() {
        Some(state) => Some(sampling_state(state)?),
        None => None,
    };
    if let Some(parent) = parts.next() {
        SpanId::parse(parent, Case::Any)?;
    }
    parts.next().is_none().then_some(Context { ids: Some(ids), sampling })
}

/// Reads the `x-b3-*` headers: the trace and span ids come together or not at all.
pub fn parse_multi(headers: &HeaderMap) -> Option<Context> {
    let trace = one(headers, &TRACE_ID).ok()?;
    let span = one(headers, &SPAN_ID).ok()?;
    let ids = match (trace, span) {
        (Some(trace), Some(span)) => Some((TraceId::parse(trace, Case::Any)?, SpanId::parse(span, Case::Any)?)),
        (None, None) => None,
        _ => return None,
    };
    if let Some(parent) = one(headers, &PARENT_SPAN_ID).ok()? {
        SpanId::parse(parent, Case::Any)?;
    }
    let sampled = match one(headers, &SAMPLED).ok()? {
        Some(b"1" | b"true") => Some(Sampling::Accept),
        Some(b"0" | b"false") => Some(Sampling::Deny),
        None => None,
        Some(_) => return None,
    };
    let sampling = match one(headers, &FLAGS).ok()? {
        Some(b"1") => Some(Sampling::Debug),
        Some(b"0") | None => sampled,
        Some(_) => return None,
    };
    Some(Context { ids, sampling })
}

/// The value of a header that may appear once; `Err` when it appears more than once.
fn one<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a [u8]>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first.map(HeaderValue::as_bytes)),
        _ => Err(()),
    }
}

fn sampling_state(text: &[u8]) -> Option<Sampling> {
    match text {
        b"0" => Some(Sampling::Deny),
        b"1" => Some(Sampling::Accept),
        b"d" => Some(Sampling::Debug),
        _ => None,
    }
}

/// What the upstream request says in B3: the proxy's span, its parent, the sampling decision.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing {
    pub trace_id: TraceId,
    pub span: SpanId,
    pub parent: Option<SpanId>,
    pub sampling: Sampling,
}

/// Writes the single `b3` header.
pub fn write_single(headers: &mut HeaderMap, out: &Outgoing) {
    let mut text = Vec::with_capacity(32 + 1 + 16 + 2 + 17);
    push_trace_id(&mut text, out.trace_id);
    text.push(b'-');
    push_hex(&mut text, &out.span.0);
    text.extend_from_slice(match out.sampling {
        Sampling::Deny => b"-0",
        Sampling::Accept => b"-1",
        Sampling::Debug => b"-d",
    });
    if let Some(parent) = out.parent {
        text.push(b'-');
        push_hex(&mut text, &parent.0);
    }
    insert(headers, B3, &text);
}

/// Writes the `x-b3-*` headers. Debug is said with `x-b3-flags: 1` alone: B3 says not to send
/// `x-b3-sampled` beside it.
pub fn write_multi(headers: &mut HeaderMap, out: &Outgoing) {
    let mut text = Vec::with_capacity(32);
    push_trace_id(&mut text, out.trace_id);
    insert(headers, TRACE_ID, &text);
    text.clear();
    push_hex(&mut text, &out.span.0);
    insert(headers, SPAN_ID, &text);
    match out.parent {
        Some(parent) => {
            text.clear();
            push_hex(&mut text, &parent.0);
            insert(headers, PARENT_SPAN_ID, &text);
        }
        None => {
            headers.remove(PARENT_SPAN_ID);
        }
    }
    match out.sampling {
        Sampling::Debug => {
            headers.remove(SAMPLED);
            headers.insert(FLAGS, HeaderValue::from_static("1"));
        }
        Sampling::Accept | Sampling::Deny => {
            headers.remove(FLAGS);
            let sampled = if out.sampling == Sampling::Accept { "1" } else { "0" };
            headers.insert(SAMPLED, HeaderValue::from_static(sampled));
        }
    }
}

/// A 64-bit trace id (one that came in as 16 digits) goes out as 16 digits, for upstreams
/// that read only those.
fn push_trace_id(text: &mut Vec<u8>, trace_id: TraceId) {
    if trace_id.is_short() {
        push_hex(text, trace_id.low());
    } else {
        push_hex(text, &trace_id.0);
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, text: &[u8]) {
    // Hex digits and dashes: always a valid header value.
    if let Ok(value) = HeaderValue::from_bytes(text) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_single_header_reads_in_every_form() {
        let full = parse_single(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90").unwrap();
        assert_eq!(full.sampling, Some(Sampling::Accept));
        assert_eq!(full.ids.map(|(t, s)| (t.to_string(), s.to_string())),
                   Some(("80f198ee56343ba864fe8b2a57d3eff7".into(), "e457b5a2e4d86bd1".into())));
        let ids_only = parse_single(b"a3ce929d0e0e4736-e457b5a2e4d86bd1").unwrap();
        assert_eq!(ids_only.sampling, None);
        assert!(ids_only.ids.is_some_and(|(t, _)| t.is_short()));
        assert_eq!(parse_single(b"0"), Some(Context { ids: None, sampling: Some(Sampling::Deny) }));
        assert_eq!(parse_single(b"d").and_then(|c| c.sampling), Some(Sampling::Debug));
    }

    #[test]
    fn malformed_single_headers_read_as_no_context() {
        for bad in [
            &b""[..],
            b"2",
            b"a3ce929d0e0e4736",
            b"a3ce929d0e0e4736-e457b5a2e4d86bd1-x",
            b"a3ce929d0e0e4736-e457b5a2e4d86bd1-1-zz",
            b"a3ce929d0e0e4736-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-extra",
            b"a3ce929d0e0e47-e457b5a2e4d86bd1",
            b"a3ce929d0e0e4736-0000000000000000",
        ] {
            assert_eq!(parse_single(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_multi_headers_need_both_ids_or_neither() {
        let both = map(&[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "e457b5a2e4d86bd1"), ("x-b3-sampled", "1")]);
        assert_eq!(parse_multi(&both).and_then(|c| c.sampling), Some(Sampling::Accept));
        let sampled_only = map(&[("x-b3-sampled", "0")]);
        assert_eq!(parse_multi(&sampled_only), Some(Context { ids: None, sampling: Some(Sampling::Deny) }));
        let debug = map(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")]);
        assert_eq!(parse_multi(&debug).and_then(|c| c.sampling), Some(Sampling::Debug));
        assert_eq!(parse_multi(&map(&[("x-b3-traceid", "a3ce929d0e0e4736")])), None);
        assert_eq!(parse_multi(&map(&[("x-b3-sampled", "yes")])), None);
        let twice = map(&[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-traceid", "a3ce929d0e0e4737"), ("x-b3-spanid", "e457b5a2e4d86bd1")]);
        assert_eq!(parse_multi(&twice), None);
    }

    #[test]
    fn writing_names_the_proxy_span_with_the_callers_as_parent() {
        let out = Outgoing {
            trace_id: TraceId::parse(b"a3ce929d0e0e4736", Case::Any).unwrap(),
            span: SpanId::parse(b"1111111111111111", Case::Any).unwrap(),
            parent: SpanId::parse(b"e457b5a2e4d86bd1", Case::Any),
            sampling: Sampling::Accept,
        };
        let mut headers = map(&[("x-b3-flags", "1")]);
        write_single(&mut headers, &out);
        write_multi(&mut headers, &out);
        fn get(headers: &HeaderMap, name: &str) -> Option<String> {
            headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        }
        assert_eq!(get(&headers, "b3").as_deref(), Some("a3ce929d0e0e4736-1111111111111111-1-e457b5a2e4d86bd1"));
        assert_eq!(get(&headers, "x-b3-traceid").as_deref(), Some("a3ce929d0e0e4736"));
        assert_eq!(get(&headers, "x-b3-spanid").as_deref(), Some("1111111111111111"));
        assert_eq!(get(&headers, "x-b3-parentspanid").as_deref(), Some("e457b5a2e4d86bd1"));
        assert_eq!(get(&headers, "x-b3-sampled").as_deref(), Some("1"));
        assert_eq!(get(&headers, "x-b3-flags"), None);
        write_multi(&mut headers, &Outgoing { sampling: Sampling::Debug, parent: None, ..out });
        assert_eq!((get(&headers, "x-b3-flags").as_deref(), get(&headers, "x-b3-sampled"), get(&headers, "x-b3-parentspanid")), (Some("1"), None, None));
    }
}
