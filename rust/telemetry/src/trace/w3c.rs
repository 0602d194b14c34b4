//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` header, read
//! and written. `tracestate` is carried through untouched by the caller.

use http::header::{HeaderName, HeaderValue};

use super::id::{hex_byte, push_hex, Case, SpanId, TraceId};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 + `-` + 16 + `-` + 2.
const LENGTH: usize = 55;

/// What a valid `traceparent` says: the caller's trace, its span, and its sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent: SpanId,
    pub sampled: bool,
}

/// Reads one `traceparent` value; `None` when it is not valid (the spec then says to start a
/// new trace, as if it were absent).
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    if value.len() < LENGTH || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2], Case::Lower)?;
    // Version ff is forbidden; version 00 has exactly this length; a later version may append
    // fields after another '-', which this reader skips (§ "Versioning of traceparent").
    let tail_ok = match version {
        0xff => false,
        0x00 => value.len() == LENGTH,
        _ => value.len() == LENGTH || value[LENGTH] == b'-',
    };
    if !tail_ok {
        return None;
    }
    let trace_id = TraceId::parse(&value[3..35], Case::Lower)?;
    let parent = SpanId::parse(&value[36..52], Case::Lower)?;
    let flags = hex_byte(&value[53..55], Case::Lower)?;
    Some(TraceParent { trace_id, parent, sampled: flags & 1 == 1 })
}

/// The `traceparent` naming `span` of `trace_id` as the parent of what the receiver does.
pub fn format(trace_id: TraceId, span: SpanId, sampled: bool) -> HeaderValue {
    let mut text = Vec::with_capacity(LENGTH);
    text.extend_from_slice(b"00-");
    push_hex(&mut text, &trace_id.0);
    text.push(b'-');
    push_hex(&mut text, &span.0);
    text.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    // Built from hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_reads_and_writes_back() {
        let parent = parse(EXAMPLE).unwrap();
        assert!(parent.sampled);
        assert_eq!(parent.parent.to_string(), "00f067aa0ba902b7");
        assert_eq!(format(parent.trace_id, parent.parent, true).as_bytes(), EXAMPLE);
        assert_eq!(format(parent.trace_id, parent.parent, false).as_bytes().last(), Some(&b'0'));
    }

    #[test]
    fn the_sampled_flag_is_the_low_bit() {
        assert!(!parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        assert!(parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap().sampled);
    }

    #[test]
    fn later_versions_may_append_fields() {
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next").is_some());
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none());
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            b"0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
