//! The config document as the engine reads it: the same YAML/JSON shape the Python layer
//! validates (its pydantic models are the schema), with the same defaults, so either side can
//! read a user's file and agree on its meaning. Semantic checks live in the engine's compiler.

use std::collections::BTreeMap;


pub use crate::cluster_documents::*;
pub use crate::duration::{Micros, Millis};
pub use crate::retry::{Backoff, CircuitBreakers, RetryBudget, RetryOn, RetryPolicy};
pub use crate::route_rules::{DirectResponse, Fault, FaultAbort, FaultDelay, Mirror, RateLimit, Redirect, RegexRewrite};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long a worker keeps polling its sockets after its last event before it sleeps; zero
    /// (the default) sleeps at once (see `busy_poll`).
    #[serde(default)]
    pub busy_poll: Micros,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    #[serde(default)]
    pub tracing: Option<Tracing>,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

/// The admin server is Python's; the engine only carries its address along.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "Admin::default_address")]
    pub address: String,
}

/// One JSON line per request, for every listener: to standard output or appended to a file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `stdout`, or a file path (made absolute by the Python layer, relative to the config).
    #[serde(default = "AccessLog::default_path")]
    pub path: String,
    /// The fields each line carries (see `access_log::Field`); default: all of them.
    #[serde(default = "AccessLog::default_fields")]
    pub fields: Vec<String>,
    /// The share of requests logged, from 0.0 to 1.0.
    #[serde(default = "default_sample")]
    pub sample: f64,
}

/// The proxy's span of each request, propagated in `traceparent` (and B3 when it came in) and
/// exported over OTLP/HTTP by the Python layer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The OTLP/HTTP collector; Python posts batches to its `/v1/traces`.
    #[serde(default = "Tracing::default_otlp_endpoint")]
    pub otlp_endpoint: String,
    /// The share of traces the proxy starts that are recorded; a caller's decision wins.
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// The `service.name` of the exported spans.
    #[serde(default = "Tracing::default_service_name")]
    pub service_name: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "Limits::default_max_header_bytes")]
    pub max_header_bytes: u32,
    #[serde(default = "Limits::default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub tls: ListenerTls,
    /// A connection that moves no byte either way for this long is closed; 0: never.
    #[serde(default = "Listener::default_idle_timeout")]
    pub idle_timeout: Millis,
    #[serde(default)]
    pub authorization: Vec<AuthzPolicy>,
    pub rate_limit: Option<RateLimit>,
    /// Read each connection's destination before a capture redirected it (`capture`).
    #[serde(default)]
    pub original_destination: bool,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// `auto` listeners: how long a client may stay silent before it goes to `tcp_fallback`.
    #[serde(default = "crate::tcp::default_detect_timeout")]
    pub detect_timeout: Millis,
    /// `auto` listeners: the `tcp` cluster that traffic other than HTTP goes to.
    #[serde(default)]
    pub tcp_fallback: Option<String>,
}

/// Whose requests a listener carries: the local app's, to the mesh (outbound), or the mesh's,
/// to the local app (inbound).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Outbound,
    Inbound,
}

/// This sidecar's mesh credentials, as PEM files: what it presents to peers and what it trusts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Every SPIFFE ID this sidecar presents or accepts lies in this trust domain.
    pub trust_domain: String,
    /// Certificate chain, leaf first; the leaf's URI SAN is this sidecar's SPIFFE ID.
    pub cert: String,
    pub key: String,
    /// The CA certificates peers' chains must lead to (old and new ones during a CA rotation).
    pub bundle: String,
}

/// How an inbound listener treats TLS: mutual TLS only, both mutual TLS and plain text (told
/// apart by the first bytes), or plain text only.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerTls {
    #[default]
    Disable,
    Strict,
    Permissive,
}

/// Authorization of inbound requests. Deny rules win; once any enforced allow rule exists on a
/// listener, a request matching none is denied. A dry-run policy is counted and logged only.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthzPolicy {
    pub name: String,
    #[serde(default)]
    pub dry_run: bool,
    pub rules: Vec<AuthzRule>,
}

/// Every condition given must hold; within a list, any entry may match. No conditions match
/// every request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    pub name: String,
    pub action: AuthzAction,
    /// SPIFFE IDs: exact, a prefix ending in `*`, or `*` for any authenticated peer.
    #[serde(default)]
    pub identities: Option<Vec<String>>,
    /// The `ns` segment of the peer's SPIFFE ID.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Exact paths, or prefixes ending in `*`; the query is not part of the path.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// A method or a list of them, as in route matches.
    #[serde(default)]
    pub methods: Option<Methods>,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderMatch>,
    /// The negations: each holds when no entry of its list matches (for `not_headers`, when
    /// none of the header matches holds). A plain-text peer never satisfies `not_identities`
    /// or `not_namespaces` in an allow rule, and always does in a deny rule.
    #[serde(default)]
    pub not_identities: Option<Vec<String>>,
    #[serde(default)]
    pub not_namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub not_paths: Option<Vec<String>>,
    #[serde(default)]
    pub not_methods: Option<Methods>,
    #[serde(default)]
    pub not_headers: BTreeMap<String, HeaderMatch>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthzAction {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 or HTTP/2 with prior knowledge, told apart by the connection's first bytes.
    #[default]
    Auto,
    Http1,
    Http2,
    /// Opaque bytes, both ways, to the cluster of its one route.
    Tcp,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub match_: RouteMatch,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub split: Option<Vec<WeightedCluster>>,
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexRewrite>,
    pub host_rewrite: Option<String>,
    pub rate_limit: Option<RateLimit>,
    pub fault: Option<Fault>,
    pub mirror: Option<Mirror>,
    #[serde(default)]
    pub request_headers: HeaderEdits,
    #[serde(default)]
    pub response_headers: HeaderEdits,
    #[serde(default = "Route::default_timeout")]
    pub timeout: Millis,
    #[serde(default)]
    pub timeout_covers: crate::TimeoutCovers,
    /// A stream that moves no byte either way for this long ends; 0: never.
    #[serde(default = "crate::timeouts::never")]
    pub idle_timeout: Millis,
    /// What a hashing cluster keys this route's requests by.
    #[serde(default)]
    pub hash_policy: Vec<crate::HashPolicy>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderMatch>,
    #[serde(default)]
    pub method: Option<Methods>,
    /// Where the connection was going before a capture redirected it (`capture`).
    #[serde(default)]
    pub original_destination: Option<Vec<String>>,
    /// Matches `CONNECT` requests (tunnels of `HTTPS_PROXY` clients), and only those: a route
    /// without it never matches one (see `docs/protocols-websocket-and-connect.md`).
    #[serde(default)]
    pub connect: bool,
    /// The port of the request's authority is one of these (a CONNECT's `host:port`).
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
}

/// `x-channel: beta` is shorthand for `x-channel: {exact: beta}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum HeaderMatch {
    Exact(String),
    Rule(HeaderRule),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `method: GET` is shorthand for `method: [GET]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Methods {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The defaults of the fields a document may leave out, by `section.field` (durations in
/// milliseconds): the Python schema takes its defaults from here (`_native.CONFIG_DEFAULTS`),
/// so each is written once.
pub fn defaults() -> serde_json::Value {
    let mut defaults = serde_json::json!({
        "admin.address": Admin::default_address(),
        "access_log.path": AccessLog::default_path(),
        "access_log.sample": default_sample(),
        "tracing.otlp_endpoint": Tracing::default_otlp_endpoint(),
        "tracing.sample": default_sample(),
        "tracing.service_name": Tracing::default_service_name(),
        "limits.max_header_bytes": Limits::default_max_header_bytes(),
        "limits.max_concurrent_streams": Limits::default_max_concurrent_streams(),
        "listener.idle_timeout_ms": Listener::default_idle_timeout().0,
        "route.timeout_ms": Route::default_timeout().0,
        "fault.percent": crate::route_rules::all_percent(),
        "mirror.percent": crate::route_rules::all_percent(),
        "redirect.status": Redirect::default_status(),
        "cluster.lb": Cluster::default_lb(),
        "cluster.connect_timeout_ms": Cluster::default_connect_timeout().0,
        "discovery.min_ttl_ms": Discovery::default_min_ttl().0,
        "discovery.max_ttl_ms": Discovery::default_max_ttl().0,
        "endpoint.weight": EndpointConfig::default_weight(),
    });
    if let Some(map) = defaults.as_object_mut() {
        map.extend(crate::health::defaults().into_iter().map(|(key, value)| (key.to_string(), value)));
        map.extend(crate::retry::defaults().map(|(key, value)| (key.to_string(), value)));
        map.extend(crate::timeouts::defaults().map(|(key, value)| (key.to_string(), value)));
        map.extend(crate::tcp::defaults().map(|(key, value)| (key.to_string(), value)));
    }
    defaults
}

// === impl Config ===

impl Config {
    pub fn from_json(doc: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(doc)
    }

    /// The same config in one spelling: hosts and header names lowercase, methods uppercase
    /// lists, header matches in rule form. Two documents mean the same iff their canonical
    /// forms are equal; this is how the tests hold the Python schema and the engine together.
    pub fn canonical(mut self) -> Config {
        for route in self.listeners.iter_mut().flat_map(|l| l.routes.iter_mut()) {
            let m = &mut route.match_;
            m.host = m.host.take().map(|h| h.to_ascii_lowercase());
            m.method = m.method.take().map(|ms| Methods::Many(ms.to_vec().iter().map(|x| x.to_ascii_uppercase()).collect()));
            m.headers = canonical_headers(std::mem::take(&mut m.headers));
            for edits in [&mut route.request_headers, &mut route.response_headers] {
                edits.add = std::mem::take(&mut edits.add).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
                edits.remove.iter_mut().for_each(|name| *name = name.to_ascii_lowercase());
            }
        }
        for rule in self.listeners.iter_mut().flat_map(|l| l.authorization.iter_mut()).flat_map(|p| p.rules.iter_mut()) {
            rule.headers = canonical_headers(std::mem::take(&mut rule.headers));
            rule.not_headers = canonical_headers(std::mem::take(&mut rule.not_headers));
            for methods in [&mut rule.methods, &mut rule.not_methods] {
                *methods = methods.take().map(|ms| Methods::Many(ms.to_vec().iter().map(|x| x.to_ascii_uppercase()).collect()));
            }
        }
        self
    }
}

fn canonical_headers(headers: BTreeMap<String, HeaderMatch>) -> BTreeMap<String, HeaderMatch> {
    headers.into_iter().map(|(name, rule)| (name.to_ascii_lowercase(), HeaderMatch::Rule(rule.rule()))).collect()
}

impl Admin {
    fn default_address() -> String {
        "127.0.0.1:15000".to_string()
    }
}

impl AccessLog {
    fn default_path() -> String {
        crate::STDOUT.to_string()
    }
    fn default_fields() -> Vec<String> {
        crate::Field::ALL.iter().map(|field| field.name().to_string()).collect()
    }
}

impl Tracing {
    fn default_otlp_endpoint() -> String {
        "http://127.0.0.1:4318".to_string()
    }
    fn default_service_name() -> String {
        "meshproxy".to_string()
    }
}

fn default_sample() -> f64 {
    1.0
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: Self::default_max_header_bytes(),
            max_concurrent_streams: Self::default_max_concurrent_streams(),
        }
    }
}

impl Limits {
    fn default_max_header_bytes() -> u32 {
        65_536
    }
    fn default_max_concurrent_streams() -> u32 {
        1_024
    }
}

impl Direction {
    /// As the config spells it, and as stats label it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl Listener {
    /// Envoy's default for a connection without requests.
    fn default_idle_timeout() -> Millis {
        Millis(3_600_000)
    }
}

impl Route {
    fn default_timeout() -> Millis {
        Millis(15_000)
    }
}

impl HeaderMatch {
    /// The rule form of either spelling.
    pub fn rule(&self) -> HeaderRule {
        match self {
            HeaderMatch::Exact(value) => HeaderRule { exact: Some(value.clone()), ..HeaderRule::default() },
            HeaderMatch::Rule(rule) => rule.clone(),
        }
    }
}

impl Methods {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Methods::One(m) => vec![m.clone()],
            Methods::Many(ms) => ms.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_python_schema() {
        let config = Config::from_json(r#"{"listeners": [{"name": "l", "address": "127.0.0.1:0", "routes": [{"cluster": "c"}]}], "clusters": [{"name": "c"}]}"#);
        let config = config.unwrap_or_else(|e| panic!("{e}"));
        let route = &config.listeners[0].routes[0];
        assert_eq!(route.timeout, Millis(15_000));
        assert_eq!(config.listeners[0].protocol, ListenerProtocol::Auto);
        assert_eq!(config.clusters[0].lb, "p2c_ewma");
        assert_eq!(config.clusters[0].connect_timeout, Millis(1_000));
        assert_eq!(config.limits, Limits { max_header_bytes: 65_536, max_concurrent_streams: 1_024 });
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_json(r#"{"listeners": [], "bogus": 1}"#).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unknown field `bogus`")));
    }
}
