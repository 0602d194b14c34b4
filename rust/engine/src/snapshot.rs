//! Compiling a config document into what the data path runs: route tables with their clusters
//! resolved, balancers built, regexes compiled. Every problem found is reported with the field
//! path it sits at, in the notation the Python layer uses (`listeners[0].routes[1].cluster`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::Method;
use meshproxy_balance::{Policy, WeightedSampler};
use regex::Regex;

use crate::authz::Authorization;
use crate::cluster::{Cluster, ClusterSource, Members};
use crate::config::{self, Config};
use crate::endpoint::EndpointRegistry;
use crate::listener::{server_builder, ListenerSnapshot};
use crate::route::{Action, HeaderCheck, HeaderEdits, HostMatch, PathMatch, PrefixRewrite, Route, RouteMatch, RouteTable, Target};
use crate::spiffe::SpiffeId;
use crate::stats::Stats;
use crate::telemetry::{self, Telemetry};
use crate::tls::credentials::Credentials;
use crate::tls::inbound::InboundTls;
use crate::tls::outbound::{Owner, UpstreamTls};
use crate::tls::store::IdentityStore;
use crate::traffic::TrafficKey;

/// One problem with a config, at a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// The path of a field below another (`listeners[0].routes[3]` and `match`), formatted only
/// when a problem names it: compiling ten thousand valid routes formats none.
struct Below<'a>(&'a str, &'a str);

/// A compiled listener, ready to be bound (or to replace the snapshot of a bound one).
#[derive(Debug)]
pub struct CompiledListener {
    pub configured: String,
    pub address: SocketAddr,
    pub snapshot: ListenerSnapshot,
}

/// A whole config compiled: its listeners and its clusters.
#[derive(Debug)]
pub struct Compiled {
    pub listeners: Vec<CompiledListener>,
    pub clusters: Vec<Arc<Cluster>>,
}

/// What compilation reads besides the config: state that outlives swaps.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub endpoints: &'a EndpointRegistry,
    pub stats: &'a Arc<Stats>,
    /// The credentials mutual TLS uses, current at each handshake.
    pub identity: &'a Arc<IdentityStore>,
    /// The config's access log and tracing, built with the engine's outlets.
    pub telemetry: &'a Arc<Telemetry>,
    /// The clusters running now (none for a check): one compiled again with the endpoints it
    /// runs, in the same order, weights, policy and transport keeps the members it has instead
    /// of looking up every address again and rebuilding its balancer (a reload of a large mesh
    /// changes few clusters).
    pub running: &'a [Arc<Cluster>],
    /// The listeners running now (none for a check): a route given again, sending to clusters
    /// kept whole, is kept as its listener of the same name and direction runs it.
    pub listeners: &'a [Arc<ListenerSnapshot>],
}

// === impl Problem ===

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Below<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks a config without running it: the problems `compile` would report.
pub fn check(config: &Config) -> Vec<Problem> {
    let (endpoints, stats, identity, telemetry) = (EndpointRegistry::default(), Arc::default(), Arc::default(), Arc::default());
    let mut problems: Vec<Problem> = load_identity(config.identity.as_ref()).err().into_iter().collect();
    // Checked without opening the access log's file: a check changes nothing on disk.
    problems.extend(telemetry::check(config));
    match compile(config, Context { endpoints: &endpoints, stats: &stats, identity: &identity, telemetry: &telemetry, running: &[], listeners: &[] }) {
        Ok(_) => problems,
        Err(more) => {
            problems.extend(more);
            problems
        }
    }
}

/// Reads and checks the credentials an identity section names.
pub fn load_identity(identity: Option<&config::Identity>) -> Result<Option<Arc<Credentials>>, Problem> {
    let Some(identity) = identity else { return Ok(None) };
    Credentials::load(identity).map(|c| Some(Arc::new(c))).map_err(|e| Problem::new(format!("identity.{}", e.field), e.message))
}

/// Compiles a config into listeners ready to bind. The identity's credentials are loaded
/// apart (`load_identity`): they are engine-wide and rotate on their own.
pub fn compile(config: &Config, cx: Context<'_>) -> Result<Vec<CompiledListener>, Vec<Problem>> {
    compile_all(config, cx).map(|compiled| compiled.listeners)
}

/// Compiles a config into listeners ready to bind and its clusters, in config order (routes
/// hold the clusters they send to; the list also has those no route names, for reporting).
/// The longest busy-polling window: beyond it a worker spins through gaps no event fills.
pub const MAX_BUSY_POLL: config::Micros = config::Micros(10_000);

pub fn compile_all(config: &Config, cx: Context<'_>) -> Result<Compiled, Vec<Problem>> {
    let mut problems = Vec::new();
    if config.workers == Some(0) {
        problems.push(Problem::new("workers", "must be at least 1"));
    }
    if config.busy_poll > MAX_BUSY_POLL {
        problems.push(Problem::new("busy_poll", format!("{}us is too long; at most {}us (10ms), or 0 to sleep at once", config.busy_poll.0, MAX_BUSY_POLL.0)));
    }
    let trust_domain = config.identity.as_ref().map(|identity| identity.trust_domain.as_str());
    let clusters = compile_clusters(&config.clusters, trust_domain, cx, &mut problems);
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(listener.name.as_str()) {
            problems.push(Problem::new(format!("{at}.name"), format!("duplicate listener name '{}'", listener.name)));
        }
        let address = match SocketAddr::from_str(&listener.address) {
            Ok(address) => address,
            Err(_) => {
                problems.push(Problem::new(
                    format!("{at}.address"),
                    format!("'{}' is not a valid address; expected IP:PORT, e.g. 127.0.0.1:15001", listener.address),
                ));
                continue;
            }
        };
        if address.port() != 0 {
            if let Some(other) = addresses.insert(address, &listener.name) {
                problems.push(Problem::new(
                    format!("{at}.address"),
                    format!("listeners '{other}' and '{}' both use {address}", listener.name),
                ));
            }
        }
        let running = cx.listeners.iter().find(|l| *l.name == *listener.name && l.direction == listener.direction);
        let routes = compile_routes(&listener.name, &listener.routes, &clusters, running.map(|l| &l.routes), &at, &mut problems);
        if listener.tls != config::ListenerTls::Disable && config.identity.is_none() {
            problems.push(Problem::new(
                format!("{at}.tls"),
                "mutual TLS needs this sidecar's credentials: add an identity section (trust_domain, cert, key, bundle), or set tls: disable",
            ));
        }
        let authz = Authorization::compile(&listener.authorization, trust_domain, &listener.name, &at, &cx.stats.authz, &mut problems);
        let tls = match InboundTls::new(listener.tls, listener.protocol, cx.identity) {
            Ok(tls) => Arc::new(tls),
            Err(e) => {
                problems.push(Problem::new(format!("{at}.tls"), format!("cannot set up TLS: {e}")));
                continue;
            }
        };
        let name: Arc<str> = listener.name.as_str().into();
        let unrouted = TrafficKey { direction: listener.direction, listener: name.clone(), route: "".into(), cluster: "".into() };
        listeners.push(CompiledListener {
            configured: listener.address.clone(),
            address,
            snapshot: ListenerSnapshot {
                name,
                direction: listener.direction,
                routes,
                server: Arc::new(server_builder(listener.protocol, &config.limits)),
                tls,
                authz,
                stats: cx.stats.listener(&listener.name),
                unrouted: cx.stats.traffic.stats(unrouted),
                telemetry: cx.telemetry.clone(),
            },
        });
    }
    if problems.is_empty() {
        let clusters = config.clusters.iter().filter_map(|c| clusters.get(&c.name).cloned()).collect();
        Ok(Compiled { listeners, clusters })
    } else {
        Err(problems)
    }
}

fn compile_clusters(
    configs: &[config::Cluster],
    trust_domain: Option<&str>,
    cx: Context<'_>,
    problems: &mut Vec<Problem>,
) -> HashMap<String, Arc<Cluster>> {
    let mut clusters = HashMap::with_capacity(configs.len());
    let running: HashMap<&str, &Arc<Cluster>> = cx.running.iter().map(|c| (&*c.name, c)).collect();
    for (i, cluster) in configs.iter().enumerate() {
        let at = format!("clusters[{i}]");
        // Compiled from the same settings and running the endpoints listed: kept whole, so
        // that the routes sending to it can be kept too.
        if let Some(running) = running.get(cluster.name.as_str()).filter(|r| r.is_compiled_from(cluster, trust_domain)) {
            if clusters.insert(cluster.name.clone(), Arc::clone(running)).is_some() {
                problems.push(Problem::new(format!("{at}.name"), format!("duplicate cluster name '{}'", cluster.name)));
            }
            continue;
        }
        let policy = match Policy::from_str(&cluster.lb) {
            Ok(policy) => policy,
            Err(unknown) => {
                problems.push(Problem::new(format!("{at}.lb"), unknown.to_string()));
                Policy::default()
            }
        };
        if cluster.connect_timeout.0 == 0 {
            problems.push(Problem::new(format!("{at}.connect_timeout"), "must be greater than 0"));
        }
        let tls = compile_cluster_tls(cluster, trust_domain, &at, cx, problems);
        // Connections differ by how they are secured: a cluster securing an address its own
        // way gets its own endpoint state and pools for it.
        let transport: Option<Arc<str>> = tls.as_ref().map(|_| transport_key(&cluster.tls, cluster.protocol).into());
        // Members that run now were checked when they were made: the same list passes again.
        let kept = running.get(cluster.name.as_str()).and_then(|r| r.members_if_same(policy, transport.as_deref(), &cluster.endpoints));
        let members = match kept {
            Some(members) => members,
            None => Arc::new(compile_members(&at, &cluster.endpoints, policy, transport.as_deref(), cx.endpoints, problems)),
        };
        let compiled = Cluster::new(
            ClusterSource::new(cluster, trust_domain),
            tls,
            transport,
            cx.stats.cluster(&cluster.name),
            members,
        );
        if clusters.insert(cluster.name.clone(), Arc::new(compiled)).is_some() {
            problems.push(Problem::new(format!("{at}.name"), format!("duplicate cluster name '{}'", cluster.name)));
        }
    }
    clusters
}

/// A cluster's endpoint list checked and built into members: each address parsed (or found in
/// the registry, with the state it has), none twice. Problems are reported below `at`, the
/// cluster's path (`clusters[2]`): compiling a config and `Engine::set_endpoints` check a list
/// alike and name the same paths.
pub fn compile_members(
    at: &str,
    configs: &[config::EndpointConfig],
    policy: Policy,
    transport: Option<&str>,
    registry: &EndpointRegistry,
    problems: &mut Vec<Problem>,
) -> Members {
    let mut seen = HashSet::with_capacity(configs.len());
    let mut endpoints = Vec::with_capacity(configs.len());
    for (j, endpoint) in configs.iter().enumerate() {
        // Formatted only for a problem: a mesh has a hundred thousand endpoints and none.
        let path = || format!("{at}.endpoints[{j}].address");
        let Some(compiled) = registry.endpoint(&endpoint.address, transport, endpoint.weight, parse_endpoint_address) else {
            problems.push(Problem::new(
                path(),
                format!("'{}' is not a valid address; expected HOST:PORT, e.g. 127.0.0.1:8080", endpoint.address),
            ));
            continue;
        };
        if !seen.insert(endpoint.address.as_str()) {
            problems.push(Problem::new(path(), format!("duplicate endpoint '{}'", endpoint.address)));
            continue;
        }
        endpoints.push(compiled);
    }
    Members::new(policy, endpoints)
}

/// How the cluster secures its connections, if it does.
fn compile_cluster_tls(
    cluster: &config::Cluster,
    trust_domain: Option<&str>,
    at: &str,
    cx: Context<'_>,
    problems: &mut Vec<Problem>,
) -> Option<UpstreamTls> {
    let tls = &cluster.tls;
    let at = Below(at, "tls");
    let misplaced = |key: &str, problems: &mut Vec<Problem>| {
        problems.push(Problem::new(format!("{at}.{key}"), format!("applies to mode {} only", if key == "identities" { "mesh" } else { "tls" })));
    };
    match tls.mode {
        config::ClusterTlsMode::Disable => {
            if !tls.identities.is_empty() {
                misplaced("identities", problems);
            }
            for (key, given) in [("sni", tls.sni.is_some()), ("ca", tls.ca.is_some())] {
                if given {
                    misplaced(key, problems);
                }
            }
            None
        }
        config::ClusterTlsMode::Mesh => {
            let Some(trust_domain) = trust_domain else {
                problems.push(Problem::new(
                    format!("{at}.mode"),
                    "mode mesh needs this sidecar's credentials: add an identity section (trust_domain, cert, key, bundle)",
                ));
                return None;
            };
            if tls.identities.is_empty() {
                problems.push(Problem::new(format!("{at}.identities"), "mode mesh needs the SPIFFE IDs the endpoints may present"));
            }
            for (key, given) in [("sni", tls.sni.is_some()), ("ca", tls.ca.is_some())] {
                if given {
                    misplaced(key, problems);
                }
            }
            let mut allowed = Vec::with_capacity(tls.identities.len());
            for (k, identity) in tls.identities.iter().enumerate() {
                match SpiffeId::parse(identity) {
                    Ok(id) if id.trust_domain() == trust_domain => allowed.push(id),
                    Ok(id) => problems.push(Problem::new(
                        format!("{at}.identities[{k}]"),
                        format!("{id} is outside the trust domain '{trust_domain}' of identity.trust_domain"),
                    )),
                    Err(e) => problems.push(Problem::new(format!("{at}.identities[{k}]"), e.to_string())),
                }
            }
            match UpstreamTls::mesh(cx.identity, allowed.into(), cluster.protocol, owner(cluster, cx)) {
                Ok(upstream) => Some(upstream),
                Err(e) => {
                    problems.push(Problem::new(at.to_string(), format!("cannot set up TLS: {e}")));
                    None
                }
            }
        }
        config::ClusterTlsMode::Tls => {
            if !tls.identities.is_empty() {
                misplaced("identities", problems);
            }
            let ca = match &tls.ca {
                Some(path) => match std::fs::read(path) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        problems.push(Problem::new(format!("{at}.ca"), format!("cannot read '{path}': {e}")));
                        return None;
                    }
                },
                None => None,
            };
            match UpstreamTls::server_authenticated(tls.sni.as_deref(), ca.as_deref(), cluster.protocol, owner(cluster, cx)) {
                Ok(upstream) => Some(upstream),
                Err(message) => {
                    let key = if message.contains("server name") { "sni" } else { "ca" };
                    problems.push(Problem::new(format!("{at}.{key}"), message));
                    None
                }
            }
        }
    }
}

fn owner(cluster: &config::Cluster, cx: Context<'_>) -> Owner {
    Owner { cluster: cluster.name.as_str().into(), stats: cx.stats.clone() }
}

/// What tells one way of securing a cluster's connections from another.
fn transport_key(tls: &config::ClusterTls, protocol: config::UpstreamProtocol) -> String {
    format!("{:?} {:?} {:?} {:?} {:?}", tls.mode, protocol, tls.identities, tls.sni, tls.ca)
}

/// `HOST:PORT` with a DNS name, an IPv4 literal or a bracketed IPv6 literal, and a port.
fn parse_endpoint_address(address: &str) -> Option<Authority> {
    let authority = Authority::from_str(address).ok()?;
    let port_ok = authority.port_u16().is_some_and(|p| p != 0);
    let host_ok = !authority.host().is_empty() && !address.contains('@');
    (port_ok && host_ok).then_some(authority)
}

/// The routes of the listener named `listener`. `running` is the table the listener runs now,
/// if it has the same name and direction: a route given exactly as there, sending to clusters
/// kept whole, is kept as it runs (with the stats its targets found) instead of compiled again.
fn compile_routes(
    listener: &str,
    configs: &[config::Route],
    clusters: &HashMap<String, Arc<Cluster>>,
    running: Option<&RouteTable>,
    listener_at: &str,
    problems: &mut Vec<Problem>,
) -> RouteTable {
    let mut routes = Vec::with_capacity(configs.len());
    let mut names = HashSet::with_capacity(configs.len());
    let mut kept = KeptRoutes { running: running.map_or(&[][..], |table| &table.routes), by_name: None };
    for (j, route) in configs.iter().enumerate() {
        let at = || format!("{listener_at}.routes[{j}]");
        if let Some(name) = &route.name {
            if !names.insert(name.as_str()) {
                problems.push(Problem::new(format!("{}.name", at()), format!("duplicate route name '{name}'")));
            }
        }
        let name: Arc<str> = match (&route.name, kept.find(j, route, clusters)) {
            (_, Some(running)) => {
                routes.push(running);
                continue;
            }
            (Some(name), None) => name.as_str().into(),
            (None, None) => format!("{listener}/{j}").into(),
        };
        let at = at();
        let matcher = compile_match(&route.match_, &at, problems);
        let action = compile_action(route, clusters, &at, problems);
        let prefix_rewrite = match (&route.prefix_rewrite, &route.match_.path_prefix) {
            (None, _) => None,
            (Some(replacement), Some(prefix)) if replacement.starts_with('/') => {
                Some(PrefixRewrite { prefix: prefix.clone(), replacement: replacement.clone() })
            }
            (Some(_), Some(_)) => {
                problems.push(Problem::new(format!("{at}.prefix_rewrite"), "must start with '/'"));
                None
            }
            (Some(_), None) => {
                problems.push(Problem::new(format!("{at}.prefix_rewrite"), "needs match.path_prefix: it replaces that prefix"));
                None
            }
        };
        let request_headers = compile_edits(&route.request_headers, &at, "request_headers", problems);
        let response_headers = compile_edits(&route.response_headers, &at, "response_headers", problems);
        let (Some(action), Some(matcher)) = (action, matcher) else { continue };
        routes.push(Arc::new(Route {
            name,
            matcher,
            action,
            prefix_rewrite,
            request_headers,
            response_headers,
            timeout: (route.timeout.0 > 0).then(|| route.timeout.duration()),
            compiled_from: route.clone(),
        }));
    }
    RouteTable::new(routes)
}

/// The routes a listener runs, looked up for the ones a reload gives again.
struct KeptRoutes<'a> {
    running: &'a [Arc<Route>],
    /// By stats name, made when a route is not found at its own index (routes were added,
    /// removed or moved): most reloads never need it.
    by_name: Option<HashMap<&'a str, &'a Arc<Route>>>,
}

impl KeptRoutes<'_> {
    /// The running route that `route`, the `index`th of the new table, would compile to: the
    /// same stats name (an unnamed route's names its index), the same config, and targets
    /// that are the clusters the new config has.
    fn find(&mut self, index: usize, route: &config::Route, clusters: &HashMap<String, Arc<Cluster>>) -> Option<Arc<Route>> {
        if self.running.is_empty() {
            return None;
        }
        let at_index = self.running.get(index).filter(|r| r.compiled_from.name == route.name);
        let found = match (at_index, &route.name) {
            (Some(running), _) => running,
            // An unnamed route's stats name is its index: it cannot be kept anywhere else.
            (None, None) => return None,
            (None, Some(name)) => {
                let running = self.running;
                let by_name = self.by_name.get_or_insert_with(|| {
                    running.iter().filter(|r| r.compiled_from.name.is_some()).map(|r| (&*r.name, r)).collect()
                });
                by_name.get(name.as_str())?
            }
        };
        let same_clusters = found.targets().iter().all(|t| clusters.get(&*t.cluster.name).is_some_and(|c| Arc::ptr_eq(c, &t.cluster)));
        (same_clusters && found.compiled_from == *route).then(|| Arc::clone(found))
    }
}

fn compile_action(route: &config::Route, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Option<Action> {
    let known = |name: &str, path: &dyn Fn() -> String, problems: &mut Vec<Problem>| match clusters.get(name) {
        Some(cluster) => Some(Target::new(cluster.clone())),
        None => {
            let mut defined: Vec<&str> = clusters.keys().map(String::as_str).collect();
            defined.sort_unstable();
            let defined = if defined.is_empty() { "none".to_string() } else { defined.join(", ") };
            problems.push(Problem::new(path(), format!("unknown cluster '{name}'; defined clusters: {defined}")));
            None
        }
    };
    match (&route.cluster, &route.split) {
        (Some(name), None) => known(name, &|| format!("{at}.cluster"), problems).map(Action::Cluster),
        (None, Some(split)) => {
            let mut targets = Vec::new();
            let mut weights = Vec::new();
            for (k, entry) in split.iter().enumerate() {
                targets.push(known(&entry.cluster, &|| format!("{at}.split[{k}].cluster"), problems));
                weights.push(entry.weight);
            }
            if weights.iter().map(|&w| u64::from(w)).sum::<u64>() == 0 {
                problems.push(Problem::new(format!("{at}.split"), "the weights sum to 0; at least one must be positive"));
                return None;
            }
            let targets: Option<Vec<_>> = targets.into_iter().collect();
            targets.map(|targets| Action::Split { targets, sampler: WeightedSampler::new(&weights) })
        }
        (Some(_), Some(_)) => {
            problems.push(Problem::new(at.to_string(), "give either 'cluster' or 'split', not both"));
            None
        }
        (None, None) => {
            problems.push(Problem::new(at.to_string(), "needs a 'cluster' or a 'split'"));
            None
        }
    }
}

/// `route_at` is the route's path; paths below it are formatted only for a problem.
fn compile_match(m: &config::RouteMatch, route_at: &str, problems: &mut Vec<Problem>) -> Option<RouteMatch> {
    let before = problems.len();
    let at = Below(route_at, "match");
    let path = match (&m.path, &m.path_prefix, &m.path_regex) {
        (None, None, None) => PathMatch::Any,
        (Some(p), None, None) => PathMatch::Exact(p.clone()),
        (None, Some(p), None) => PathMatch::Prefix(p.clone()),
        (None, None, Some(re)) => match anchored(re) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                problems.push(Problem::new(format!("{at}.path_regex"), regex_problem(&e)));
                PathMatch::Any
            }
        },
        _ => {
            problems.push(Problem::new(at.to_string(), "give at most one of path, path_prefix, path_regex"));
            PathMatch::Any
        }
    };
    for (key, value) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
            problems.push(Problem::new(format!("{at}.{key}"), "must start with '/'"));
        }
    }
    let mut headers = Vec::new();
    for (name, rule) in &m.headers {
        let path = format!("{at}.headers.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.push(Problem::new(path, format!("'{name}' is not a valid header name")));
            continue;
        };
        let rule = rule.rule();
        let check = match (rule.exact, rule.present, rule.regex) {
            (Some(v), None, None) => match HeaderValue::from_str(&v) {
                Ok(v) => HeaderCheck::Exact(v),
                Err(_) => {
                    problems.push(Problem::new(format!("{path}.exact"), "not a valid header value"));
                    continue;
                }
            },
            (None, Some(present), None) => HeaderCheck::Present(present),
            (None, None, Some(re)) => match anchored(&re) {
                Ok(re) => HeaderCheck::Regex(re),
                Err(e) => {
                    problems.push(Problem::new(format!("{path}.regex"), regex_problem(&e)));
                    continue;
                }
            },
            _ => {
                problems.push(Problem::new(path, "give exactly one of exact, present, regex"));
                continue;
            }
        };
        headers.push((header, check));
    }
    let methods = m.method.as_ref().map(|methods| {
        methods
            .to_vec()
            .iter()
            .filter_map(|name| match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    problems.push(Problem::new(format!("{at}.method"), format!("'{name}' is not a valid HTTP method")));
                    None
                }
            })
            .collect()
    });
    let host = m.host.as_deref().map_or(HostMatch::Any, HostMatch::parse);
    (problems.len() == before).then_some(RouteMatch { host, path, headers, methods })
}

fn compile_edits(edits: &config::HeaderEdits, route_at: &str, key: &str, problems: &mut Vec<Problem>) -> HeaderEdits {
    let mut compiled = HeaderEdits::default();
    let at = Below(route_at, key);
    for (name, value) in &edits.add {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => compiled.add.push((name, value)),
            (Err(_), _) => problems.push(Problem::new(format!("{at}.add.{name}"), format!("'{name}' is not a valid header name"))),
            (_, Err(_)) => problems.push(Problem::new(format!("{at}.add.{name}"), "not a valid header value")),
        }
    }
    for (k, name) in edits.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => compiled.remove.push(name),
            Err(_) => problems.push(Problem::new(format!("{at}.remove[{k}]"), format!("'{name}' is not a valid header name"))),
        }
    }
    compiled
}

/// One line saying what is wrong with a pattern. The regex crate's own message draws a caret
/// diagram under the *anchored* pattern, which is not what the user wrote.
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    let reason = text.lines().find_map(|line| line.trim().strip_prefix("error: ")).unwrap_or(text.trim());
    format!("not a valid regular expression: {reason}")
}

/// The whole subject must match, as a path or header value rule means.
fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{HeaderCheck, PathMatch};

    fn problems(doc: serde_json::Value) -> Vec<String> {
        let config: Config = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
        check(&config).iter().map(ToString::to_string).collect()
    }

    fn listener(routes: serde_json::Value) -> serde_json::Value {
        serde_json::json!([{"name": "out", "address": "127.0.0.1:0", "routes": routes}])
    }

    #[test]
    fn the_readme_config_compiles() {
        let doc = serde_json::json!({
            "listeners": listener(serde_json::json!([
                {"match": {"host": "orders", "headers": {"x-channel": "beta"}}, "cluster": "orders-v2"},
                {"match": {"host": "orders", "path_prefix": "/"}, "split": [{"cluster": "orders-v1", "weight": 90}, {"cluster": "orders-v2", "weight": 10}]},
            ])),
            "clusters": [
                {"name": "orders-v1", "lb": "p2c_ewma", "protocol": "http1", "endpoints": [{"address": "127.0.0.1:8081"}, {"address": "127.0.0.1:8082", "weight": 2}]},
                {"name": "orders-v2", "endpoints": [{"address": "127.0.0.1:8083"}]},
            ],
        });
        assert_eq!(problems(doc), Vec::<String>::new());
    }

    /// Compiles `doc` over the clusters of `running`, as a reload does.
    fn clusters_over(doc: serde_json::Value, registry: &EndpointRegistry, running: &[Arc<Cluster>]) -> Vec<Arc<Cluster>> {
        let config: Config = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
        let (stats, identity, telemetry) = (Arc::default(), Arc::default(), Arc::default());
        let cx = Context { endpoints: registry, stats: &stats, identity: &identity, telemetry: &telemetry, running, listeners: &[] };
        compile_all(&config, cx).unwrap_or_else(|p| panic!("{p:?}")).clusters
    }

    fn mesh(lb: &str, weight: u32) -> serde_json::Value {
        serde_json::json!({
            "listeners": listener(serde_json::json!([{"cluster": "a"}])),
            "clusters": [
                {"name": "a", "lb": lb, "endpoints": [{"address": "127.0.0.1:8081"}, {"address": "127.0.0.1:8082", "weight": weight}]},
                {"name": "b", "endpoints": [{"address": "127.0.0.1:8083"}]},
            ],
        })
    }

    #[test]
    fn a_reload_keeps_a_cluster_whole_or_its_members_when_it_keeps_its_endpoints() {
        let registry = EndpointRegistry::default();
        let running = clusters_over(mesh("p2c_ewma", 2), &registry, &[]);
        let again = clusters_over(mesh("p2c_ewma", 2), &registry, &running);
        for (old, new) in running.iter().zip(&again) {
            assert!(Arc::ptr_eq(old, new), "{} is kept whole", old.name);
        }
        // A weight or a policy changed: the cluster's members are built again; the other stays.
        for doc in [mesh("p2c_ewma", 3), mesh("round_robin", 2)] {
            let changed = clusters_over(doc, &registry, &running);
            assert!(!Arc::ptr_eq(&running[0].members(), &changed[0].members()));
            assert!(Arc::ptr_eq(&running[1], &changed[1]));
        }
        // Another setting changed: a new cluster, with the members it had.
        let mut doc = mesh("p2c_ewma", 2);
        doc["clusters"][0]["connect_timeout"] = serde_json::json!("250ms");
        let changed = clusters_over(doc, &registry, &running);
        assert!(!Arc::ptr_eq(&running[0], &changed[0]));
        assert_eq!(changed[0].connect_timeout, std::time::Duration::from_millis(250));
        assert!(Arc::ptr_eq(&running[0].members(), &changed[0].members()));
    }

    #[test]
    fn members_set_apart_from_the_config_are_compared_as_they_run() {
        let registry = EndpointRegistry::default();
        let running = clusters_over(mesh("p2c_ewma", 2), &registry, &[]);
        // As discovery does: the running list is no longer the one the config gave.
        let mut problems = Vec::new();
        let endpoint = |address: &str| config::EndpointConfig { address: address.into(), weight: 1 };
        let set = compile_members("clusters[0]", &[endpoint("127.0.0.1:8081")], Policy::P2cEwma, None, &registry, &mut problems);
        running[0].set_members(set);
        let again = clusters_over(mesh("p2c_ewma", 2), &registry, &running);
        let members = again[0].members();
        let addresses: Vec<&str> = members.endpoints.iter().map(|e| &*e.address).collect();
        assert_eq!(addresses, ["127.0.0.1:8081", "127.0.0.1:8082"]);
    }

    /// What a running engine holds between reloads: its clusters and listener snapshots.
    struct Running {
        clusters: Vec<Arc<Cluster>>,
        listeners: Vec<Arc<ListenerSnapshot>>,
    }

    /// Compiles `doc` over `running`, as a reload does.
    fn reload(doc: &serde_json::Value, registry: &EndpointRegistry, running: &Running) -> Running {
        let config: Config = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}"));
        let (stats, identity, telemetry) = (Arc::default(), Arc::default(), Arc::default());
        let cx = Context { endpoints: registry, stats: &stats, identity: &identity, telemetry: &telemetry, running: &running.clusters, listeners: &running.listeners };
        let compiled = compile_all(&config, cx).unwrap_or_else(|p| panic!("{p:?}"));
        Running { clusters: compiled.clusters, listeners: compiled.listeners.into_iter().map(|l| Arc::new(l.snapshot)).collect() }
    }

    fn routes(running: &Running) -> &[Arc<Route>] {
        &running.listeners[0].routes.routes
    }

    /// Two clusters and routes of every kind: named, unnamed, with a header match and a split.
    fn routed() -> serde_json::Value {
        serde_json::json!({
            "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [
                {"name": "orders", "match": {"host": "orders", "headers": {"x-channel": "beta"}}, "cluster": "a", "timeout": "2s"},
                {"match": {"path_prefix": "/static/"}, "cluster": "b"},
                {"name": "canary", "split": [{"cluster": "a", "weight": 90}, {"cluster": "b", "weight": 10}]},
                {"name": "rest", "cluster": "b"},
            ]}],
            "clusters": [
                {"name": "a", "endpoints": [{"address": "127.0.0.1:8081"}]},
                {"name": "b", "endpoints": [{"address": "127.0.0.1:8082"}]},
            ],
        })
    }

    fn kept(before: &Running, after: &Running) -> Vec<bool> {
        routes(after).iter().zip(routes(before)).map(|(new, old)| Arc::ptr_eq(new, old)).collect()
    }

    #[test]
    fn a_reload_giving_the_same_routes_keeps_them_as_they_run() {
        let registry = EndpointRegistry::default();
        let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
        let again = reload(&routed(), &registry, &first);
        assert_eq!(kept(&first, &again), [true; 4]);
        // A check, or a first apply, has nothing to keep.
        let fresh = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
        assert_eq!(kept(&first, &fresh), [false; 4]);
    }

    #[test]
    fn a_changed_route_is_compiled_again_and_the_others_are_kept() {
        let registry = EndpointRegistry::default();
        let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
        let change = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut doc = routed();
            edit(&mut doc["listeners"][0]["routes"]);
            reload(&doc, &registry, &first)
        };
        let timeout = change(&|r| r[0]["timeout"] = serde_json::json!("5s"));
        assert_eq!(kept(&first, &timeout), [false, true, true, true]);
        assert_eq!(routes(&timeout)[0].timeout, Some(std::time::Duration::from_secs(5)));

        let header = change(&|r| r[0]["match"]["headers"]["x-channel"] = serde_json::json!("gamma"));
        assert_eq!(kept(&first, &header), [false, true, true, true]);
        assert!(matches!(&routes(&header)[0].matcher.headers[0].1, HeaderCheck::Exact(v) if v == "gamma"));

        let path = change(&|r| r[1]["match"]["path_prefix"] = serde_json::json!("/assets/"));
        assert_eq!(kept(&first, &path), [true, false, true, true]);
        assert!(matches!(&routes(&path)[1].matcher.path, PathMatch::Prefix(p) if p == "/assets/"));

        let weight = change(&|r| r[2]["split"][1]["weight"] = serde_json::json!(30));
        assert_eq!(kept(&first, &weight), [true, true, false, true]);
        assert_eq!(routes(&weight)[2].compiled_from.split.as_ref().map(|s| s[1].weight), Some(30));

        let cluster = change(&|r| r[3]["cluster"] = serde_json::json!("a"));
        assert_eq!(kept(&first, &cluster), [true, true, true, false]);
        assert_eq!(&*routes(&cluster)[3].targets()[0].cluster.name, "a");
    }

    #[test]
    fn a_route_to_a_cluster_compiled_again_is_compiled_again() {
        let registry = EndpointRegistry::default();
        let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
        let mut doc = routed();
        doc["clusters"][1]["endpoints"][0]["address"] = serde_json::json!("127.0.0.1:9090");
        let moved = reload(&doc, &registry, &first);
        // Routes to b (alone or in the split) send to the new b; the route to a alone stays.
        assert_eq!(kept(&first, &moved), [true, false, false, false]);
        for route in &routes(&moved)[1..] {
            let b = route.targets().iter().find(|t| &*t.cluster.name == "b").map(|t| t.cluster.clone());
            assert!(b.is_some_and(|b| Arc::ptr_eq(&b, &moved.clusters[1])), "{}", route.name);
        }
    }

    #[test]
    fn a_moved_route_is_kept_by_name_and_an_unnamed_one_only_at_its_index() {
        let registry = EndpointRegistry::default();
        let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
        let mut doc = routed();
        let table = doc["listeners"][0]["routes"].as_array_mut().map(std::mem::take).unwrap_or_default();
        // Moved to the front: `rest`; `orders`, `canary` and the unnamed one shift by one.
        doc["listeners"][0]["routes"] = serde_json::json!([table[3], table[0], table[1], table[2]]);
        let moved = reload(&doc, &registry, &first);
        let old = routes(&first);
        let same = |new: usize, old_index: usize| Arc::ptr_eq(&routes(&moved)[new], &old[old_index]);
        assert!(same(0, 3) && same(1, 0) && same(3, 2));
        // Unnamed, its stats name is its index: `out/2` now, not the `out/1` it ran as.
        assert!(!same(2, 1));
        assert_eq!(&*routes(&moved)[2].name, "out/2");
    }

    #[test]
    fn routes_of_a_listener_that_changes_direction_are_compiled_again() {
        let registry = EndpointRegistry::default();
        let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
        let mut doc = routed();
        doc["listeners"][0]["direction"] = serde_json::json!("inbound");
        assert_eq!(kept(&first, &reload(&doc, &registry, &first)), [false; 4]);
    }

    #[test]
    fn each_mistake_is_reported_at_its_path() {
        let doc = serde_json::json!({
            "listeners": [
                {"name": "a", "address": "127.0.0.1:9000", "routes": [
                    {"cluster": "missing"},
                    {"match": {"path_regex": "(unclosed"}, "cluster": "c"},
                    {"split": [{"cluster": "c", "weight": 0}]},
                ]},
                {"name": "b", "address": "127.0.0.1:9000"},
                {"name": "c", "address": "localhost"},
            ],
            "clusters": [{"name": "c", "lb": "fastest", "endpoints": [{"address": "nope"}]}],
        });
        let got = problems(doc);
        let expect = [
            "clusters[0].lb: 'fastest' is not valid; expected one of round_robin, random, least_request, p2c_ewma",
            "clusters[0].endpoints[0].address: 'nope' is not a valid address; expected HOST:PORT, e.g. 127.0.0.1:8080",
            "listeners[0].routes[0].cluster: unknown cluster 'missing'; defined clusters: c",
            "listeners[0].routes[1].match.path_regex: not a valid regular expression",
            "listeners[0].routes[2].split: the weights sum to 0; at least one must be positive",
            "listeners[1].address: listeners 'a' and 'b' both use 127.0.0.1:9000",
            "listeners[2].address: 'localhost' is not a valid address; expected IP:PORT, e.g. 127.0.0.1:15001",
        ];
        assert_eq!(got.len(), expect.len(), "{got:#?}");
        for (got, want) in got.iter().zip(expect) {
            assert!(got.starts_with(want), "{got} / {want}");
        }
    }
}
