//! Clusters compiled: members (endpoints and their balancer), kept across reloads when unchanged, and upstream TLS.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use http::uri::Authority;
use meshproxy_balance::Policy;

use meshproxy_proxy::cluster::{Cluster, ClusterSource, Members};
use meshproxy_config::address::EndpointAddress;
use meshproxy_config::{self as config, values, Problem};
use meshproxy_proxy::endpoint::EndpointRegistry;
use meshproxy_proxy::original_dst::Passthrough;
use meshproxy_config::spiffe::SpiffeId;
use meshproxy_tls::outbound::{Owner, UpstreamTls};

use super::{Below, Context};

pub(super) fn compile_clusters(
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
        for (key, duration) in [("connect_timeout", cluster.connect_timeout), ("idle_timeout", cluster.idle_timeout)] {
            if let Err(message) = values::positive_duration(key, duration.0.saturating_mul(1000)) {
                problems.push(Problem::new(format!("{at}.{key}"), message));
            }
        }
        super::health::check_health(cluster, &at, problems);
        super::tcp::check_cluster(cluster, &at, problems);
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
        let mut compiled = Cluster::new(
            ClusterSource::new(cluster, trust_domain),
            tls,
            transport,
            cx.stats.cluster(&cluster.name),
            members,
        );
        if cluster.original_destination {
            check_passthrough(cluster, &at, problems);
            compiled.passthrough = Some(Passthrough::new(cx.endpoints.workers()));
        }
        if clusters.insert(cluster.name.clone(), Arc::new(compiled)).is_some() {
            problems.push(Problem::new(format!("{at}.name"), format!("duplicate cluster name '{}'", cluster.name)));
        }
    }
    clusters
}

/// A cluster sending to each request's original destination has no endpoints of its own, and
/// nothing to check or secure them with: the destinations are whatever the app dialled.
fn check_passthrough(cluster: &config::Cluster, at: &str, problems: &mut Vec<Problem>) {
    let given = [
        ("endpoints", !cluster.endpoints.is_empty()),
        ("discovery", cluster.discovery.is_some()),
        ("health_check", cluster.health_check.is_some()),
        ("tls", cluster.tls.mode != config::ClusterTlsMode::Disable),
    ];
    for (key, _) in given.iter().filter(|(_, given)| *given) {
        problems.push(Problem::new(
            format!("{at}.{key}"),
            "a cluster with original_destination: true sends each request where its connection was going; remove this",
        ));
    }
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
    let mut read = Vec::with_capacity(configs.len());
    for (j, endpoint) in configs.iter().enumerate() {
        match registry.endpoint(&endpoint.address, transport, endpoint.weight, parse_endpoint_address) {
            Ok(compiled) => read.push((j, compiled)),
            Err(problem) => problems.push(Problem::new(
                format!("{at}.endpoints[{j}].address"),
                format!("'{}' is not a valid address; {problem}", endpoint.address),
            )),
        }
    }
    // One address twice, as the kernel compares them; formatted only for a problem: a mesh
    // has a hundred thousand endpoints and none.
    let mut seen = HashSet::with_capacity(read.len());
    for (j, compiled) in &read {
        if !seen.insert(&compiled.state.key) {
            problems.push(Problem::new(
                format!("{at}.endpoints[{j}].address"),
                format!("duplicate endpoint '{}'", configs[*j].address),
            ));
        }
    }
    let endpoints = read.into_iter().map(|(_, compiled)| compiled).collect();
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

/// `HOST:PORT` with a DNS name, an IPv4 literal or a bracketed IPv6 literal, and a port: the
/// config's rule (`meshproxy_config::address`), then the form a connection dials.
fn parse_endpoint_address(text: &str) -> Result<(EndpointAddress, Authority), String> {
    let address = config::address::endpoint(text)?;
    let authority = Authority::from_str(text).map_err(|_| config::address::ENDPOINT_EXAMPLE.to_owned())?;
    Ok((address, authority))
}
