//! The routing table of one listener: routes in order, first match wins.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use meshproxy_balance::WeightedSampler;
use regex::Regex;

use crate::cluster::Cluster;
use crate::hash_key::HashKey;
use crate::retry::{Retry, BUILT_IN};
use crate::direct::Answered;
use crate::rules::RouteRules;
use meshproxy_config as config;
use meshproxy_config::capture::DestinationMatch;
use meshproxy_telemetry::traffic::{TrafficKey, TrafficRegistry, TrafficStats};

#[derive(Debug)]
pub struct RouteTable {
    /// Shared with the tables of later configs that keep them (see `snapshot::compile_routes`).
    pub routes: Vec<Arc<Route>>,
    /// Meshes route mostly by exact host: for each such host, the routes naming it, in order.
    /// A lookup merges them with `other_hosts`, so it reads only the routes that can match
    /// instead of all of them.
    by_host: HashMap<String, Vec<usize>>,
    /// Routes matching any host or a `*.suffix`, in order.
    other_hosts: Vec<usize>,
}

#[derive(Debug)]
pub struct Route {
    /// The route's `name`, or `<listener>/<index>` when it has none: the label in stats.
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub action: Action,
    pub prefix_rewrite: Option<PrefixRewrite>,
    /// Rate limit, faults, regex and host rewrites (`rules`).
    pub rules: RouteRules,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// Time allowed from sending upstream to response headers; `None` waits forever.
    pub timeout: Option<std::time::Duration>,
    /// The route's `idle_timeout` and a `timeout` covering the whole response; `None` when it
    /// has neither, and its requests take the plain path.
    pub stream_timeouts: Option<crate::timeouts::StreamTimeouts>,
    /// What a hashing cluster keys the route's requests by; `None`: nothing (the others).
    pub hash_key: Option<HashKey>,
    /// The route's `retry` policy; `None`: the built-in one (`retry::BUILT_IN`).
    pub retry: Option<Box<Retry>>,
    /// What the route was compiled from: a reload giving it again, over the same clusters,
    /// keeps this route instead of compiling it again.
    pub compiled_from: config::Route,
}

/// Where a matched request goes: one cluster, or a weighted split across several (canaries);
/// or nowhere, the proxy answering it (a redirect, a direct response: `direct`).
#[derive(Debug)]
pub enum Action {
    Cluster(Target),
    Split { targets: Vec<Target>, sampler: WeightedSampler },
    Answer(Answered),
}

/// A cluster a route sends to, with the stats of the route's traffic to it.
#[derive(Debug)]
pub struct Target {
    pub cluster: Arc<Cluster>,
    /// Found in the engine's registry on the first request, so that a config of 10,000 routes
    /// holds stats only for the routes that carry traffic, and counts carry on across swaps.
    traffic: OnceLock<Arc<TrafficStats>>,
}

#[derive(Debug, Default)]
pub struct RouteMatch {
    pub host: HostMatch,
    pub path: PathMatch,
    pub headers: Vec<(HeaderName, HeaderCheck)>,
    /// `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// `None` matches every connection; a list, the connections whose original destination
    /// (`original_dst`) one entry matches.
    pub destination: Option<Vec<DestinationMatch>>,
    /// Matches CONNECT requests (tunnels), and only those; other routes never match one.
    pub connect: bool,
    /// The port of the request's authority is one of these; `None`: any.
    pub ports: Option<Vec<u16>>,
}

#[derive(Debug, Default)]
pub enum HostMatch {
    #[default]
    Any,
    /// Lowercase host without port.
    Exact(String),
    /// `*.example.com` keeps `.example.com`: at least one label must precede it.
    Suffix(String),
}

#[derive(Debug, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Exact(String),
    Prefix(String),
    /// Anchored at both ends when compiled: the whole path must match.
    Regex(Regex),
}

#[derive(Debug)]
pub enum HeaderCheck {
    /// Some value of the header equals this one.
    Exact(HeaderValue),
    /// The header is there (`true`) or absent (`false`).
    Present(bool),
    /// Some value of the header matches, whole.
    Regex(Regex),
}

#[derive(Debug)]
pub struct PrefixRewrite {
    pub prefix: String,
    pub replacement: String,
}

#[derive(Debug, Default)]
pub struct HeaderEdits {
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// Host without port, as sent (compared case-insensitively).
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// Where the connection was going before a capture redirected it; read only on listeners
    /// with `original_destination: true`.
    pub destination: Option<SocketAddr>,
    /// `host[:port]` as sent; its port is read only by routes that match ports.
    pub authority: &'a str,
    /// A CONNECT request (a tunnel to `authority`), not an RFC 8441 extended one.
    pub connect: bool,
}

// === impl RouteTable ===

impl RouteTable {
    pub fn new(routes: Vec<Arc<Route>>) -> RouteTable {
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut other_hosts = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            match &route.matcher.host {
                HostMatch::Exact(host) => by_host.entry(host.clone()).or_default().push(index),
                HostMatch::Any | HostMatch::Suffix(_) => other_hosts.push(index),
            }
        }
        RouteTable { routes, by_host, other_hosts }
    }

    /// The first route, in config order, that matches the request. Always inlined (as are
    /// `matches`, `rewrite` and `host_without_port`): called once per request, from `proxy`
    /// only, whose size keeps a plain `#[inline]` from being taken (a call's prologue and
    /// epilogue, about 20 instructions each per request).
    #[inline(always)]
    pub fn find(&self, target: &RequestTarget<'_>) -> Option<&Route> {
        let host: Cow<'_, str> = if target.host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(target.host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(target.host)
        };
        let exact = self.by_host.get(host.as_ref()).map_or(&[][..], Vec::as_slice);
        let (mut exact, mut other) = (exact.iter().peekable(), self.other_hosts.iter().peekable());
        // Both lists are in config order: merging them visits candidates in config order.
        loop {
            let next = match (exact.peek(), other.peek()) {
                (Some(&&e), Some(&&o)) if e < o => exact.next(),
                (Some(_), None) => exact.next(),
                (_, Some(_)) => other.next(),
                (None, None) => return None,
            };
            let route = next.and_then(|&index| self.routes.get(index))?;
            if route.matcher.matches(target) {
                return Some(route);
            }
        }
    }
}

// === impl Route ===

impl Route {
    /// The retry policy requests of this route go by.
    pub fn retry(&self) -> &Retry {
        self.retry.as_deref().unwrap_or(&BUILT_IN)
    }

    /// The target of this request: the one cluster, or one drawn by weight from a split.
    /// `None` for a route the proxy answers, and for a split without targets, which
    /// compilation refuses.
    pub fn pick(&self) -> Option<&Target> {
        match &self.action {
            Action::Answer(_) => None,
            Action::Cluster(target) => Some(target),
            Action::Split { targets, sampler } => {
                // Compilation guarantees a positive total weight; fall back to the first anyway.
                let index = sampler.sample(&mut rand::rng()).unwrap_or(0);
                targets.get(index).or(targets.first())
            }
        }
    }

    /// Every target, each once per mention.
    pub fn targets(&self) -> &[Target] {
        self.action.targets()
    }

    /// The upstream path and query after the prefix or regex rewrite.
    #[inline(always)]
    pub fn rewrite<'p>(&self, path_and_query: &'p str) -> std::borrow::Cow<'p, str> {
        if let Some(regex) = &self.rules.regex_rewrite {
            return regex.apply(path_and_query);
        }
        match &self.prefix_rewrite {
            Some(rw) if path_and_query.starts_with(rw.prefix.as_str()) => {
                let rest = &path_and_query[rw.prefix.len()..];
                std::borrow::Cow::Owned(format!("{}{}", rw.replacement, rest))
            }
            _ => std::borrow::Cow::Borrowed(path_and_query),
        }
    }
}

// === impl Action ===

impl Action {
    /// Every target, each once per mention; none for a route that answers itself.
    pub fn targets(&self) -> &[Target] {
        match self {
            Action::Cluster(target) => std::slice::from_ref(target),
            Action::Split { targets, .. } => targets,
            Action::Answer(_) => &[],
        }
    }
}

// === impl Target ===

impl Target {
    pub fn new(cluster: Arc<Cluster>) -> Target {
        Target { cluster, traffic: OnceLock::new() }
    }

    /// The stats of this route's traffic to the cluster: from `registry` under the key `key`
    /// makes, the first time; a load of a pointer after that.
    pub fn traffic(&self, registry: &TrafficRegistry, key: impl FnOnce() -> TrafficKey) -> &Arc<TrafficStats> {
        self.traffic.get_or_init(|| registry.stats(key()))
    }
}

// === impl RouteMatch ===

impl RouteMatch {
    #[inline(always)]
    pub fn matches(&self, target: &RequestTarget<'_>) -> bool {
        self.connect == target.connect
            && self.host.matches(target.host)
            && self.path.matches(target.path)
            && self.methods.as_ref().is_none_or(|ms| ms.contains(target.method))
            && self.headers.iter().all(|(name, check)| check.matches(target.headers, name))
            && self.destination.as_ref().is_none_or(|entries| {
                target.destination.is_some_and(|destination| entries.iter().any(|entry| entry.matches(destination)))
            })
            && self.ports.as_ref().is_none_or(|ports| authority_port(target.authority).is_some_and(|port| ports.contains(&port)))
    }
}

/// The port of `host:port` or `[v6]:port`; `None` without one.
pub fn authority_port(authority: &str) -> Option<u16> {
    let (host, port) = authority.rsplit_once(':')?;
    // `[::1]` alone: the colon is the address's.
    if host.starts_with('[') && !host.ends_with(']') {
        return None;
    }
    port.parse().ok()
}

impl HostMatch {
    pub fn parse(pattern: &str) -> HostMatch {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.as_str() {
            "*" => HostMatch::Any,
            p if p.starts_with("*.") => HostMatch::Suffix(p[1..].to_string()),
            _ => HostMatch::Exact(pattern),
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(want) => host.eq_ignore_ascii_case(want),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(want) => path == want,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

impl HeaderCheck {
    pub fn matches(&self, headers: &HeaderMap, name: &HeaderName) -> bool {
        match self {
            HeaderCheck::Present(want) => headers.contains_key(name) == *want,
            HeaderCheck::Exact(want) => headers.get_all(name).iter().any(|v| v == want),
            HeaderCheck::Regex(re) => {
                headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|s| re.is_match(s)))
            }
        }
    }
}

// === impl HeaderEdits ===

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.add {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The host of an authority or `Host` header value, without its port.
#[inline(always)]
pub fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop what follows the closing one.
        return rest.find(']').map_or(authority, |end| &authority[..end + 2]);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A route config with every default: what the routes below stand for.
    fn any_config() -> config::Route {
        serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"))
    }

    fn route(index: usize, matcher: RouteMatch) -> Arc<Route> {
        Arc::new(Route {
            name: index.to_string().into(),
            matcher,
            action: Action::Split { targets: vec![], sampler: WeightedSampler::new(&[]) },
            prefix_rewrite: None,
            rules: RouteRules::default(),
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            timeout: None,
            stream_timeouts: None,
            hash_key: None,
            retry: None,
            compiled_from: any_config(),
        })
    }

    fn target<'a>(host: &'a str, path: &'a str, method: &'a Method, headers: &'a HeaderMap) -> RequestTarget<'a> {
        RequestTarget { host, path, method, headers, authority: host, connect: false, destination: None }
    }

    #[test]
    fn connect_routes_match_connect_requests_only_and_by_port() {
        let headers = HeaderMap::new();
        let connect = RouteMatch { connect: true, ports: Some(vec![443]), ..RouteMatch::default() };
        let tunnel = |authority| RequestTarget { host: "example.com", path: "", method: &Method::CONNECT, headers: &headers, authority, connect: true, destination: None };
        assert!(connect.matches(&tunnel("example.com:443")));
        assert!(!connect.matches(&tunnel("example.com:22")), "a port the route does not list");
        assert!(!RouteMatch::default().matches(&tunnel("example.com:443")), "a route without connect never matches a CONNECT");
        assert!(!connect.matches(&target("example.com", "/", &Method::GET, &headers)));
        assert_eq!(authority_port("[::1]:8443"), Some(8443));
        assert_eq!(authority_port("[::1]"), None);
        assert_eq!(authority_port("example.com"), None);
    }

    #[test]
    fn host_patterns_match_as_documented() {
        assert!(HostMatch::parse("orders").matches("ORDERS"));
        assert!(!HostMatch::parse("orders").matches("orders.svc"));
        assert!(HostMatch::parse("*.example.com").matches("a.example.com"));
        assert!(HostMatch::parse("*.example.com").matches("a.b.EXAMPLE.com"));
        assert!(!HostMatch::parse("*.example.com").matches("example.com"));
        assert!(!HostMatch::parse("*.example.com").matches("badexample.com"));
        assert!(HostMatch::parse("*").matches(""));
    }

    #[test]
    fn ports_are_ignored_when_reading_a_host() {
        assert_eq!(host_without_port("orders:8080"), "orders");
        assert_eq!(host_without_port("orders"), "orders");
        assert_eq!(host_without_port("[::1]:15001"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn header_checks_cover_exact_present_absent_and_regex() {
        let mut headers = HeaderMap::new();
        headers.append("x-channel", HeaderValue::from_static("alpha"));
        headers.append("x-channel", HeaderValue::from_static("beta"));
        let name = HeaderName::from_static("x-channel");
        let missing = HeaderName::from_static("x-missing");
        assert!(HeaderCheck::Exact(HeaderValue::from_static("beta")).matches(&headers, &name));
        assert!(!HeaderCheck::Exact(HeaderValue::from_static("gamma")).matches(&headers, &name));
        assert!(HeaderCheck::Present(true).matches(&headers, &name));
        assert!(HeaderCheck::Present(false).matches(&headers, &missing));
        assert!(!HeaderCheck::Present(true).matches(&headers, &missing));
        let re = Regex::new("^(?:b.*)$").unwrap_or_else(|e| panic!("{e}"));
        assert!(HeaderCheck::Regex(re).matches(&headers, &name));
    }

    #[test]
    fn an_original_destination_match_needs_a_connection_going_there() {
        let entries = ["10.0.2.2:8080", "10.0.3.0/24"].map(|e| config::capture::destination(e).unwrap_or_else(|p| panic!("{p}")));
        let matcher = RouteMatch { destination: Some(entries.to_vec()), ..RouteMatch::default() };
        let headers = HeaderMap::new();
        let going = |to: Option<&str>| RequestTarget {
            destination: to.map(|to| to.parse().unwrap_or_else(|e| panic!("{e}"))),
            ..target("h", "/", &Method::GET, &headers)
        };
        assert!(matcher.matches(&going(Some("10.0.2.2:8080"))));
        assert!(matcher.matches(&going(Some("10.0.3.9:443"))));
        assert!(!matcher.matches(&going(Some("10.0.2.2:8081"))));
        // Not captured (or not read): a route asking for a destination does not match.
        assert!(!matcher.matches(&going(None)));
        assert!(RouteMatch::default().matches(&going(None)));
    }

    #[test]
    fn prefix_rewrite_keeps_the_rest_of_the_path_and_query() {
        let route = Route {
            name: "r".into(),
            matcher: RouteMatch::default(),
            action: Action::Split { targets: vec![], sampler: WeightedSampler::new(&[]) },
            prefix_rewrite: Some(PrefixRewrite { prefix: "/api".into(), replacement: "/v2".into() }),
            rules: RouteRules::default(),
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            timeout: None,
            stream_timeouts: None,
            hash_key: None,
            retry: None,
            compiled_from: any_config(),
        };
        assert_eq!(route.rewrite("/api/users?id=1"), "/v2/users?id=1");
        assert_eq!(route.rewrite("/other"), "/other");
    }

    proptest! {
        #[test]
        fn every_matcher_field_must_hold(
            host in "[a-z]{1,6}", path in "/[a-z/]{0,8}", other in "[a-z]{1,6}",
        ) {
            let headers = HeaderMap::new();
            let get = Method::GET;
            let by_host = RouteMatch { host: HostMatch::parse(&host), ..RouteMatch::default() };
            prop_assert!(by_host.matches(&target(&host, &path, &get, &headers)));
            prop_assert_eq!(by_host.matches(&target(&other, &path, &get, &headers)), other == host);
            let by_prefix = RouteMatch { path: PathMatch::Prefix(path.clone()), ..RouteMatch::default() };
            let longer = format!("{}x", path);
            prop_assert!(by_prefix.matches(&target(&other, &longer, &get, &headers)));
            let post_only = RouteMatch { methods: Some(vec![Method::POST]), ..RouteMatch::default() };
            prop_assert!(!post_only.matches(&target(&host, &path, &get, &headers)));
            prop_assert!(post_only.matches(&target(&host, &path, &Method::POST, &headers)));
        }

        #[test]
        fn the_first_matching_route_wins(paths in prop::collection::vec("/[a-c]{0,3}", 1..6), probe in "/[a-c]{0,4}") {
            let table = RouteTable::new(paths.iter().enumerate().map(|(i, p)| {
                route(i, RouteMatch { path: PathMatch::Prefix(p.clone()), ..RouteMatch::default() })
            }).collect());
            let headers = HeaderMap::new();
            let found = table.find(&target("h", &probe, &Method::GET, &headers)).map(|r| r.name.to_string());
            let expected = paths.iter().position(|p| probe.starts_with(p.as_str())).map(|i| i.to_string());
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn the_host_index_finds_what_a_scan_in_order_finds(
            hosts in prop::collection::vec(prop::sample::select(vec!["*", "a.x", "b.x", "*.x", "A.X", "b.y"]), 1..12),
            paths in prop::collection::vec("/[ab]{0,2}", 12),
            probe_host in prop::sample::select(vec!["a.x", "A.x", "b.x", "c.x", "x", "b.y", "z"]),
            probe_path in "/[ab]{0,3}",
        ) {
            let matchers = || hosts.iter().zip(&paths).map(|(h, p)| RouteMatch {
                host: HostMatch::parse(h),
                path: PathMatch::Prefix(p.clone()),
                ..RouteMatch::default()
            });
            let table = RouteTable::new(matchers().enumerate().map(|(i, m)| route(i, m)).collect());
            let headers = HeaderMap::new();
            let probe = target(probe_host, &probe_path, &Method::GET, &headers);
            let found = table.find(&probe).map(|r| r.name.to_string());
            let expected = matchers().position(|m| m.matches(&probe)).map(|i| i.to_string());
            prop_assert_eq!(found, expected);
        }
    }
}
