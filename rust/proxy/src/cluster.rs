//! A cluster: the endpoints one route action sends to, how to choose among them, and the
//! upstream client that holds their pooled connections.
//!
//! The endpoints and the balancer built for them are one `Members` value behind an `ArcSwap`:
//! discovery replaces a cluster's members without recompiling anything else, a request picks
//! from one consistent value, and an attempt in flight finishes on the members it picked from.

use std::sync::Arc;

use arc_swap::ArcSwap;
use meshproxy_balance::{Balancer, Policy};

use meshproxy_config::{self as config, EndpointConfig, UpstreamProtocol};
use crate::breakers::{Breakers, Overflow};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use meshproxy_telemetry::stats::ClusterStats;
use meshproxy_tls::outbound::UpstreamTls;

/// How many more draws a pick that must avoid one endpoint makes before it takes any other.
const DRAWS_AROUND_A_FAILURE: usize = 4;

#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: std::time::Duration,
    /// How connections to the endpoints are secured; `None`: plain text.
    pub tls: Option<UpstreamTls>,
    /// What tells this cluster's way of securing its connections from others' in the endpoint
    /// registry (`None`: plain text): a new member list finds its addresses' state under it.
    pub transport: Option<Arc<str>>,
    pub stats: Arc<ClusterStats>,
    /// `None`: the cluster has no `circuit_breakers`, and nothing is counted.
    pub breakers: Option<Arc<Breakers>>,
    members: ArcSwap<Members>,
    /// What the cluster was compiled from, but its endpoints (its members say those).
    source: ClusterSource,
}

/// A cluster's settings as the config gave them, and the trust domain its mesh identities were
/// checked in: a reload that gives the same, and the endpoints it runs, can keep the cluster
/// whole, and with it every route that sends to it.
#[derive(Debug)]
pub struct ClusterSource {
    settings: config::Cluster,
    trust_domain: Option<String>,
}

/// A cluster's endpoints, in config order, and the balancer built for exactly those.
#[derive(Debug)]
pub struct Members {
    pub endpoints: Vec<Endpoint>,
    pub balancer: Balancer,
}

// === impl Cluster ===

impl Cluster {
    /// The cluster `source` describes, securing its connections with `tls`.
    pub fn new(
        source: ClusterSource,
        tls: Option<UpstreamTls>,
        transport: Option<Arc<str>>,
        stats: Arc<ClusterStats>,
        members: Arc<Members>,
    ) -> Cluster {
        let settings = &source.settings;
        Cluster {
            name: settings.name.as_str().into(),
            protocol: settings.protocol,
            connect_timeout: settings.connect_timeout.duration(),
            tls,
            transport,
            stats,
            breakers: settings.circuit_breakers.map(|limits| Arc::new(Breakers::new(limits))),
            members: ArcSwap::new(members),
            source,
        }
    }

    /// Whether a reload giving `cluster` (in `trust_domain`) would compile this very cluster
    /// again: the same settings and the endpoints it runs now. Not for server-authenticated
    /// TLS, whose CA file is read again at each reload.
    pub fn is_compiled_from(&self, cluster: &config::Cluster, trust_domain: Option<&str>) -> bool {
        cluster.tls.mode != config::ClusterTlsMode::Tls
            && self.source.is(cluster, trust_domain)
            && self.members_if_same(self.policy(), self.transport.as_deref(), &cluster.endpoints).is_some()
    }

    /// The scheme a request to the cluster carries: `https` once its connections are TLS.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// A circuit breaker refused a request: counted, and answered 503 `overflow`.
    pub fn overflow(&self, overflow: Overflow) -> ProxyError {
        self.stats.overflow_total.inc();
        ProxyError::Overflow { cluster: self.name.to_string(), limit: overflow.limit.name(), max: overflow.max }
    }

    /// The members now: an owned handle, so a request keeps what it picked from across awaits.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replaces the members; requests that picked from the old ones finish on them.
    pub fn set_members(&self, members: Members) {
        self.members.store(Arc::new(members));
    }

    /// The members now, if they are what `endpoints` (in that order, with those weights) would
    /// compile to under `policy` and `transport`: a reload that keeps this cluster's endpoints
    /// can keep them, and compares with what runs, endpoints set by discovery included.
    pub fn members_if_same(&self, policy: Policy, transport: Option<&str>, endpoints: &[EndpointConfig]) -> Option<Arc<Members>> {
        if self.transport.as_deref() != transport {
            return None;
        }
        let members = self.members.load_full();
        let same = members.balancer.policy() == policy
            && members.endpoints.len() == endpoints.len()
            && members.endpoints.iter().zip(endpoints).all(|(m, e)| *m.address == *e.address && m.weight == e.weight);
        same.then_some(members)
    }

    /// The policy the balancer picks by: the same for every member list the cluster gets.
    pub fn policy(&self) -> Policy {
        self.members.load().balancer.policy()
    }

    /// Upstream connections its endpoints hold now: (idle HTTP/1.1, open HTTP/2). An address
    /// that two clusters list, secured the same way, shares its pools: counted for both.
    pub fn connections(&self) -> (usize, usize) {
        let members = self.members.load();
        members.endpoints.iter().map(|e| e.state.connections()).fold((0, 0), |(h1, h2), (idle, open)| (h1 + idle, h2 + open))
    }
}

// === impl ClusterSource ===

impl ClusterSource {
    pub fn new(cluster: &config::Cluster, trust_domain: Option<&str>) -> ClusterSource {
        let config::Cluster { name, lb, protocol, connect_timeout, tls, endpoints: _, discovery, circuit_breakers } = cluster;
        let settings = config::Cluster {
            name: name.clone(),
            lb: lb.clone(),
            protocol: *protocol,
            connect_timeout: *connect_timeout,
            tls: tls.clone(),
            endpoints: Vec::new(),
            discovery: discovery.clone(),
            circuit_breakers: *circuit_breakers,
        };
        ClusterSource { settings, trust_domain: trust_domain.map(str::to_string) }
    }

    fn is(&self, cluster: &config::Cluster, trust_domain: Option<&str>) -> bool {
        let config::Cluster { name, lb, protocol, connect_timeout, tls, endpoints: _, discovery, circuit_breakers } = &self.settings;
        *name == cluster.name
            && *lb == cluster.lb
            && *protocol == cluster.protocol
            && *connect_timeout == cluster.connect_timeout
            && *tls == cluster.tls
            && *discovery == cluster.discovery
            && *circuit_breakers == cluster.circuit_breakers
            && (tls.mode != config::ClusterTlsMode::Mesh || self.trust_domain.as_deref() == trust_domain)
    }
}

// === impl Members ===

impl Members {
    pub fn new(policy: Policy, endpoints: Vec<Endpoint>) -> Members {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Members { balancer: Balancer::new(policy, &weights), endpoints }
    }

    /// The endpoint the balancer chooses, or `None` when no endpoint can take traffic.
    pub fn pick(&self) -> Option<&Endpoint> {
        let index = self.balancer.pick(&self.endpoints, &mut rand::rng())?;
        self.endpoints.get(index)
    }

    /// Picks as `pick` does, but not the endpoint at `avoid` when there is another: a retry
    /// after a failed connection goes elsewhere. The balancer draws again a few times, so the
    /// retry is still balanced; should every draw land on `avoid`, the first other endpoint that
    /// may be picked (positive weight) is taken.
    pub fn pick_avoiding(&self, avoid: Option<&str>) -> Option<&Endpoint> {
        let first = self.pick()?;
        let Some(avoid) = avoid else { return Some(first) };
        if *first.address != *avoid {
            return Some(first);
        }
        (0..DRAWS_AROUND_A_FAILURE)
            .find_map(|_| self.pick().filter(|e| *e.address != *avoid))
            .or_else(|| self.endpoints.iter().find(|e| e.weight > 0 && *e.address != *avoid))
            .or(Some(first))
    }
}
