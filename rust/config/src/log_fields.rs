//! The fields an access log line may carry, by the names the config's `access_log.fields`
//! and the JSON keys use (one name for each).

/// Each field, in the order a line writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Time,
    DurationMs,
    Listener,
    Direction,
    Protocol,
    Method,
    Authority,
    Path,
    Status,
    Route,
    Cluster,
    UpstreamAddress,
    BytesIn,
    BytesOut,
    RequestId,
    TraceId,
    SpanId,
    ClientAddress,
    PeerIdentity,
    Error,
    GrpcStatus,
}

/// A set of fields; a line writes those in the set, in [`Field::ALL`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields(u32);

// === impl Field ===

impl Field {
    pub const ALL: [Field; 21] = [
        Field::Time,
        Field::DurationMs,
        Field::Listener,
        Field::Direction,
        Field::Protocol,
        Field::Method,
        Field::Authority,
        Field::Path,
        Field::Status,
        Field::Route,
        Field::Cluster,
        Field::UpstreamAddress,
        Field::BytesIn,
        Field::BytesOut,
        Field::RequestId,
        Field::TraceId,
        Field::SpanId,
        Field::ClientAddress,
        Field::PeerIdentity,
        Field::Error,
        Field::GrpcStatus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::DurationMs => "duration_ms",
            Field::Listener => "listener",
            Field::Direction => "direction",
            Field::Protocol => "protocol",
            Field::Method => "method",
            Field::Authority => "authority",
            Field::Path => "path",
            Field::Status => "status",
            Field::Route => "route",
            Field::Cluster => "cluster",
            Field::UpstreamAddress => "upstream_address",
            Field::BytesIn => "bytes_in",
            Field::BytesOut => "bytes_out",
            Field::RequestId => "request_id",
            Field::TraceId => "trace_id",
            Field::SpanId => "span_id",
            Field::ClientAddress => "client_address",
            Field::PeerIdentity => "peer_identity",
            Field::Error => "error",
            Field::GrpcStatus => "grpc_status",
        }
    }

    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.name() == name)
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

// === impl Fields ===

impl Fields {
    pub const ALL: Fields = Fields((1 << Field::ALL.len()) - 1);

    pub fn contains(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |field| self.contains(*field))
    }
}

impl FromIterator<Field> for Fields {
    fn from_iter<I: IntoIterator<Item = Field>>(fields: I) -> Fields {
        Fields(fields.into_iter().fold(0, |bits, field| bits | field.bit()))
    }
}

/// The config's name for standard output, as an access log's `path`.
pub const STDOUT: &str = "stdout";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_by_its_name() {
        for field in Field::ALL {
            assert_eq!(Field::parse(field.name()), Some(field));
        }
        assert_eq!(Field::parse("duration"), None);
        assert_eq!(Fields::ALL.iter().count(), Field::ALL.len());
    }

    #[test]
    fn a_subset_keeps_the_line_order() {
        let fields: Fields = [Field::Status, Field::Time].into_iter().collect();
        assert_eq!(fields.iter().collect::<Vec<_>>(), vec![Field::Time, Field::Status]);
        assert!(!fields.contains(Field::Path));
    }
}
