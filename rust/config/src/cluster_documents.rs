//! The clusters of the config document as the engine reads them: their endpoints (listed, or
//! found by a discovery source the Python layer runs), how their connections are secured, and
//! how requests are balanced across them.

use serde::{Deserialize, Serialize};

use crate::duration::Millis;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default = "Cluster::default_lb")]
    pub lb: String,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default = "Cluster::default_connect_timeout")]
    pub connect_timeout: Millis,
    /// An upstream connection unused for this long is closed.
    #[serde(default = "crate::timeouts::default_cluster_idle_timeout")]
    pub idle_timeout: Millis,
    #[serde(default)]
    pub tls: ClusterTls,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub discovery: Option<Discovery>,
    #[serde(default)]
    pub health_check: Option<crate::HealthCheck>,
    #[serde(default)]
    pub outlier_detection: Option<crate::OutlierDetection>,
    #[serde(default)]
    pub circuit_breakers: Option<crate::CircuitBreakers>,
    /// Send each request to its connection's original destination (`capture`), not to endpoints.
    #[serde(default)]
    pub original_destination: bool,
}

/// Where a cluster's endpoints come from when its config does not list them. The Python layer
/// runs the sources and applies documents with the lists they found in `endpoints`; the engine
/// only carries these settings along (as it does the admin address), so that both sides read
/// one document.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Discovery {
    /// A watched YAML or JSON file listing `{address, weight}`.
    File { path: String },
    /// DNS records of `name`, resolved again when their TTL (held within `min_ttl`..`max_ttl`) runs out.
    Dns {
        name: String,
        #[serde(default)]
        record: DnsRecord,
        /// A and AAAA records: the endpoints' port (SRV records carry their own).
        #[serde(default)]
        port: Option<u16>,
        /// `IP:PORT` of the DNS server; none: the system's.
        #[serde(default)]
        resolver: Option<String>,
        #[serde(default = "Discovery::default_min_ttl")]
        min_ttl: Millis,
        #[serde(default = "Discovery::default_max_ttl")]
        max_ttl: Millis,
    },
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum DnsRecord {
    #[default]
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "SRV")]
    Srv,
}

/// How the sidecar talks to a cluster's endpoints: plain text, mutual TLS with mesh peers that
/// must present one of `identities`, or ordinary server-authenticated TLS.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    #[serde(default)]
    pub mode: ClusterTlsMode,
    /// Mesh mode: the SPIFFE IDs the endpoints may present.
    #[serde(default)]
    pub identities: Vec<String>,
    /// TLS mode: the server name to send and verify (default: the endpoint's host name).
    #[serde(default)]
    pub sni: Option<String>,
    /// TLS mode: a PEM file of CA certificates to trust instead of the system's.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTlsMode {
    #[default]
    Disable,
    Mesh,
    Tls,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    /// Opaque bytes: each downstream connection gets its own upstream connection.
    Tcp,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub address: String,
    #[serde(default = "EndpointConfig::default_weight")]
    pub weight: u32,
}

// === impl Cluster, Discovery, EndpointConfig ===

impl Cluster {
    pub(crate) fn default_lb() -> String {
        "p2c_ewma".to_string()
    }
    pub(crate) fn default_connect_timeout() -> Millis {
        Millis(1_000)
    }
}

impl Discovery {
    pub(crate) fn default_min_ttl() -> Millis {
        Millis(1_000)
    }
    pub(crate) fn default_max_ttl() -> Millis {
        Millis(300_000)
    }
}

impl EndpointConfig {
    pub(crate) fn default_weight() -> u32 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn discovery_settings_are_carried_with_the_python_defaults() {
        let cluster = |discovery: &str| {
            let doc = format!(r#"{{"listeners": [], "clusters": [{{"name": "c", "discovery": {discovery}}}]}}"#);
            Config::from_json(&doc).map(|mut config| config.clusters.remove(0).discovery)
        };
        let dns = cluster(r#"{"type": "dns", "name": "orders.mesh.local", "port": 8080}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dns,
            Some(Discovery::Dns {
                name: "orders.mesh.local".into(),
                record: DnsRecord::A,
                port: Some(8080),
                resolver: None,
                min_ttl: Millis(1_000),
                max_ttl: Millis(300_000),
            })
        );
        let srv = cluster(r#"{"type": "dns", "name": "_http._tcp.orders", "record": "SRV"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(srv, Some(Discovery::Dns { record: DnsRecord::Srv, port: None, .. })));
        let file = cluster(r#"{"type": "file", "path": "/etc/mesh/orders.yaml"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file, Some(Discovery::File { path: "/etc/mesh/orders.yaml".into() }));
        assert!(cluster(r#"{"type": "file", "path": "a.yaml", "port": 1}"#).is_err());
        assert!(cluster(r#"{"type": "consul"}"#).is_err());
    }
}
