//! Compiling a config document into what the data path runs: route tables with their clusters
//! resolved, balancers built, regexes compiled. Every problem found is reported with the field
//! path it sits at, in the notation the Python layer uses (`listeners[0].routes[1].cluster`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;


use meshproxy_proxy::authz::Authorization;
use meshproxy_proxy::cluster::Cluster;
use meshproxy_config::{self as config, values, Config, Problem};
use meshproxy_proxy::endpoint::EndpointRegistry;
use meshproxy_proxy::listener::{server_builder, ListenerSnapshot};
use meshproxy_telemetry::stats::Stats;
use meshproxy_telemetry::{self as telemetry, Telemetry};
use meshproxy_tls::credentials::Credentials;
use meshproxy_tls::inbound::InboundTls;
use meshproxy_tls::store::IdentityStore;
use meshproxy_telemetry::traffic::TrafficKey;
use meshproxy_telemetry::rules::RuleKey;
use meshproxy_proxy::rules::rate_limiter;


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

impl fmt::Display for Below<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
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
pub fn compile_all(config: &Config, cx: Context<'_>) -> Result<Compiled, Vec<Problem>> {
    let mut problems = Vec::new();
    if config.workers == Some(0) {
        problems.push(Problem::new("workers", "must be at least 1"));
    }
    if let Err(message) = values::busy_poll(config.busy_poll.0) {
        problems.push(Problem::new("busy_poll", message));
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
        let address = match config::address::listen(&listener.address) {
            Ok(address) => address,
            Err(problem) => {
                problems.push(Problem::new(format!("{at}.address"), format!("'{}' is not a valid address; {problem}", listener.address)));
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
        if !listener.original_destination {
            for (r, _) in listener.routes.iter().enumerate().filter(|(_, route)| route.match_.original_destination.is_some()) {
                problems.push(Problem::new(
                    format!("{at}.routes[{r}].match.original_destination"),
                    "needs the listener's original_destination: true (only a capture listener knows where its connections were going)",
                ));
            }
        }
        let running = cx.listeners.iter().find(|l| *l.name == *listener.name && l.direction == listener.direction);
        let tcp = compile_tcp(listener, &clusters, &at, &mut problems);
        check_connect_routes(listener, &clusters, &at, &mut problems);
        // A tcp listener's one route names its cluster (`tcp`); it routes no request.
        // (and an auto capture listener's TCP routes, which follow its HTTP ones).
        let http_routes = &listener.routes[..http_route_count(listener, &clusters)];
        let routes = compile_routes(&listener.name, http_routes, &clusters, running.map(|l| &l.routes), &cx.stats.rules, &at, &mut problems);
        let rate_limit = listener.rate_limit.as_ref().and_then(|limit| {
            // Given again, it is kept with the tokens it has: a reload does not refill it.
            let kept = running.and_then(|l| l.rate_limit.as_ref()).filter(|running| running.compiled_from == *limit);
            kept.cloned().or_else(|| {
                let stats = cx.stats.rules.stats(RuleKey { listener: listener.name.as_str().into(), route: "".into() });
                rate_limiter(limit, stats, &format!("{at}.rate_limit"), &mut problems).map(Arc::new)
            })
        });
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
                idle_timeout: listener.idle_timeout.nonzero(),
                original_destination: listener.original_destination,
                authz,
                rate_limit,
                stats: cx.stats.listener(&listener.name),
                unrouted: cx.stats.traffic.stats(unrouted),
                telemetry: cx.telemetry.clone(),
                tcp,
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

mod clusters;
mod hashing;
mod health;
mod routes;
mod tcp;
mod tunnel;
#[cfg(test)]
mod tests;

use clusters::compile_clusters;
pub use clusters::compile_members;
use routes::compile_routes;
use tcp::{compile_tcp, http_route_count};
use tunnel::check_connect_routes;
