//! What an exported span says about its request: its name, its attributes (OpenTelemetry's
//! HTTP semantic-convention names where one exists, `meshproxy.*` with the access log's field
//! names otherwise), and whether it failed. The proxy's span is a server span: it covers the
//! request as the proxy received it, from arrival to the end of the response.

use std::time::UNIX_EPOCH;

use http::uri::Authority;

use crate::record::Record;

/// An attribute value: OTLP's string or int.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// `{method} {route}`, or the method alone for a request no route matched.
pub fn name(record: &Record) -> String {
    match &record.route {
        Some(route) => format!("{} {route}", record.method),
        None => record.method.to_string(),
    }
}

/// Start and end, in nanoseconds since the Unix epoch.
pub fn times(record: &Record) -> (u64, u64) {
    let start = record.start.duration_since(UNIX_EPOCH).unwrap_or_default();
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    (nanos(start), nanos(start + record.duration))
}

/// The span failed: the proxy answered with an error of its own, or the status is 5xx. Says
/// how, as OpenTelemetry's `error.type`: the proxy's reason, or the status code.
pub fn error_type(record: &Record) -> Option<String> {
    match record.error {
        Some(reason) => Some(reason.name().to_string()),
        None if record.status >= 500 => Some(record.status.to_string()),
        None => None,
    }
}

pub fn attributes(record: &Record) -> Vec<(&'static str, Value)> {
    let text = |s: &str| Value::Str(s.to_string());
    let mut out = vec![
        ("http.request.method", text(record.method.as_str())),
        ("url.path", text(record.url_path())),
        ("http.response.status_code", Value::Int(i64::from(record.status))),
        ("network.protocol.name", text("http")),
        ("network.protocol.version", text(record.protocol_version())),
        ("network.peer.address", Value::Str(record.client_address.to_string())),
        ("http.request.body.size", Value::Int(i64::try_from(record.bytes_in).unwrap_or(i64::MAX))),
        ("http.response.body.size", Value::Int(i64::try_from(record.bytes_out).unwrap_or(i64::MAX))),
        ("meshproxy.listener", text(&record.listener)),
        ("meshproxy.direction", text(record.direction.name())),
    ];
    if let Some(query) = record.query() {
        out.push(("url.query", text(query)));
    }
    if let Some(authority) = record.authority().and_then(|a| Authority::try_from(a.as_bytes()).ok()) {
        out.push(("server.address", text(authority.host())));
        if let Some(port) = authority.port_u16() {
            out.push(("server.port", Value::Int(i64::from(port))));
        }
    }
    if let Some(error) = error_type(record) {
        out.push(("error.type", Value::Str(error)));
    }
    if let Some(status) = record.grpc_status {
        out.push(("rpc.system", text("grpc")));
        out.push(("rpc.grpc.status_code", Value::Int(i64::from(status))));
    }
    let optional = [
        ("meshproxy.route", record.route.as_deref()),
        ("meshproxy.cluster", record.cluster.as_deref()),
        ("meshproxy.upstream_address", record.upstream_address.as_deref()),
        ("meshproxy.request_id", record.request_id.as_ref().and_then(|v| v.to_str().ok())),
        ("meshproxy.peer_identity", record.peer_identity.as_ref().map(|id| id.as_str())),
    ];
    out.extend(optional.into_iter().filter_map(|(key, value)| value.map(|v| (key, text(v)))));
    out
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;
    use crate::Reason;

    fn get<'a>(attributes: &'a [(&'static str, Value)], key: &str) -> Option<&'a Value> {
        attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_request_is_described_in_semantic_convention_terms() {
        let mut record = Record::example(200);
        record.host = Some(HeaderValue::from_static("orders:8080"));
        let attributes = attributes(&record);
        let str = |s: &str| Some(Value::Str(s.into()));
        assert_eq!(get(&attributes, "http.request.method").cloned(), str("GET"));
        assert_eq!(get(&attributes, "url.path").cloned(), str("/orders/1"));
        assert_eq!(get(&attributes, "url.query").cloned(), str("full=true"));
        assert_eq!(get(&attributes, "server.address").cloned(), str("orders"));
        assert_eq!(get(&attributes, "server.port").cloned(), Some(Value::Int(8080)));
        assert_eq!(get(&attributes, "http.response.status_code").cloned(), Some(Value::Int(200)));
        assert_eq!(get(&attributes, "network.peer.address").cloned(), str("127.0.0.1"));
        assert_eq!(get(&attributes, "meshproxy.cluster").cloned(), str("orders-v1"));
        assert_eq!(get(&attributes, "meshproxy.upstream_address").cloned(), str("127.0.0.1:8081"));
        assert_eq!(get(&attributes, "error.type"), None);
        assert_eq!(get(&attributes, "meshproxy.peer_identity"), None);
        assert_eq!(get(&attributes, "rpc.grpc.status_code"), None);
        record.grpc_status = Some(14);
        assert_eq!(get(&super::attributes(&record), "rpc.grpc.status_code").cloned(), Some(Value::Int(14)));
        assert_eq!(name(&record), "GET orders");
        assert_eq!(times(&record), (1_764_032_462_123_000_000, 1_764_032_462_124_500_000));
    }

    #[test]
    fn proxy_errors_and_5xx_fail_the_span() {
        let mut record = Record::example(502);
        assert_eq!(error_type(&record).as_deref(), Some("502"));
        record.error = Some(Reason::ConnectFailure);
        assert_eq!(error_type(&record).as_deref(), Some("connect_failure"));
        assert_eq!(error_type(&Record::example(404)), None);
    }
}
