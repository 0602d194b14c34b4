//! One access log line: a JSON object with the chosen fields of a [`Record`]. Absent values
//! are written as `null`, so every line of a log has the same keys.

use std::io::Write;

use meshproxy_config::{Field, Fields};
use super::time::write_rfc3339;
use crate::record::Record;

/// Appends the line (with its newline) to `out`.
pub fn write_line(out: &mut Vec<u8>, record: &Record, fields: Fields) {
    out.push(b'{');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.name().as_bytes());
        out.extend_from_slice(b"\":");
        write_value(out, record, field);
    }
    out.extend_from_slice(b"}\n");
}

fn write_value(out: &mut Vec<u8>, record: &Record, field: Field) {
    // Writing to a Vec cannot fail.
    let _ = match field {
        Field::Time => {
            out.push(b'"');
            write_rfc3339(out, record.start);
            out.push(b'"');
            Ok(())
        }
        Field::DurationMs => write!(out, "{:.3}", record.duration.as_secs_f64() * 1000.0),
        Field::Listener => string(out, &record.listener),
        Field::Direction => string(out, record.direction.name()),
        Field::Protocol if record.tcp => string(out, "TCP"),
        Field::Protocol => string(out, &format!("HTTP/{}", record.protocol_version())),
        Field::Method | Field::Path | Field::Status | Field::Authority | Field::Route if record.tcp => optional(out, None::<&str>),
        Field::Method => string(out, record.method.as_str()),
        Field::Authority => optional(out, record.authority()),
        Field::Path => optional(out, record.path()),
        Field::Status => write!(out, "{}", record.status),
        Field::Route => optional(out, record.route.as_deref()),
        Field::Cluster => optional(out, record.cluster.as_deref()),
        Field::UpstreamAddress => optional(out, record.upstream_address.as_deref()),
        Field::BytesIn => write!(out, "{}", record.bytes_in),
        Field::BytesOut => write!(out, "{}", record.bytes_out),
        Field::RequestId => optional(out, record.request_id.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()))),
        Field::TraceId => optional(out, record.trace_id.map(|id| id.to_string())),
        Field::SpanId => optional(out, record.span_id.map(|id| id.to_string())),
        Field::ClientAddress => string(out, &record.client_address.to_string()),
        Field::PeerIdentity => optional(out, record.peer_identity.as_ref().map(|id| id.as_str())),
        Field::Error => optional(out, record.error.map(|reason| reason.name())),
        Field::GrpcStatus => match record.grpc_status {
            Some(status) => write!(out, "{status}"),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        },
    };
}

/// A JSON string, escaped.
fn string(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    serde_json::to_writer(out, text).map_err(std::io::Error::from)
}

fn optional(out: &mut Vec<u8>, text: Option<impl AsRef<str>>) -> std::io::Result<()> {
    match text {
        Some(text) => string(out, text.as_ref()),
        None => out.write_all(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;
    use serde_json::{json, Value};

    use super::*;
    use crate::Reason;
    use crate::trace::{SpanId, TraceId};

    fn line(record: &Record, fields: Fields) -> Value {
        let mut out = Vec::new();
        write_line(&mut out, record, fields);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn every_field_is_written_under_its_name() {
        let mut record = Record::example(200);
        record.trace_id = Some(TraceId([0xab; 16]));
        record.span_id = Some(SpanId([0x01; 8]));
        let value = line(&record, Fields::ALL);
        assert_eq!(value, json!({
            "time": "2025-11-25T01:01:02.123Z",
            "duration_ms": 1.5,
            "listener": "outbound",
            "direction": "outbound",
            "protocol": "HTTP/1.1",
            "method": "GET",
            "authority": "orders",
            "path": "/orders/1?full=true",
            "status": 200,
            "route": "orders",
            "cluster": "orders-v1",
            "upstream_address": "127.0.0.1:8081",
            "bytes_in": 0,
            "bytes_out": 42,
            "request_id": "6f1c2d3e-0000-4000-8000-000000000001",
            "trace_id": "abababababababababababababababab",
            "span_id": "0101010101010101",
            "client_address": "127.0.0.1",
            "peer_identity": null,
            "error": null,
            "grpc_status": null,
        }));
    }

    #[test]
    fn a_subset_writes_only_its_fields_and_absent_values_are_null() {
        let mut record = Record::example(502);
        record.error = Some(Reason::ConnectFailure);
        record.cluster = None;
        let fields = [Field::Status, Field::Cluster, Field::Error].into_iter().collect();
        assert_eq!(line(&record, fields), json!({"status": 502, "cluster": null, "error": "connect_failure"}));
    }

    #[test]
    fn values_from_the_client_are_escaped() {
        let mut record = Record::example(200);
        record.host = Some(HeaderValue::from_static("a\"b\\c"));
        record.request_id = HeaderValue::from_bytes(b"caf\xe9").ok();
        let fields = [Field::Authority, Field::RequestId].into_iter().collect();
        assert_eq!(line(&record, fields), json!({"authority": "a\"b\\c", "request_id": "caf\u{fffd}"}));
    }
}
