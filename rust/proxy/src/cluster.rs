//! A cluster: the endpoints one route action sends to, how to choose among them, and the
//! upstream client that holds their pooled connections.
//!
//! The endpoints and the balancer built for them are one `Members` value behind an `ArcSwap`:
//! discovery replaces a cluster's members without recompiling anything else, a request picks
//! from one consistent value, and an attempt in flight finishes on the members it picked from.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meshproxy_balance::Policy;

use meshproxy_config::{self as config, EndpointConfig, UpstreamProtocol};
use crate::breakers::{Breakers, Held, Limit, Overflow};
use crate::endpoint::Endpoint;
use crate::original_dst::Passthrough;
use crate::health::host::{HostHealth, Status};
use crate::health::ClusterHealth;
pub use crate::members::Members;
use crate::error::ProxyError;
use crate::headers::absolute_uri;
use crate::pool::{Dial, Lease};
use crate::body::Body;
use http::uri::PathAndQuery;
use http::Request;
use meshproxy_telemetry::stats::ClusterStats;
use meshproxy_tls::outbound::UpstreamTls;


#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: std::time::Duration,
    /// An upstream connection unused for this long is closed (see `pool`).
    pub idle_timeout: std::time::Duration,
    /// How connections to the endpoints are secured; `None`: plain text.
    pub tls: Option<UpstreamTls>,
    /// What tells this cluster's way of securing its connections from others' in the endpoint
    /// registry (`None`: plain text): a new member list finds its addresses' state under it.
    pub transport: Option<Arc<str>>,
    pub stats: Arc<ClusterStats>,
    /// Active checks and outlier ejection, when the config asks for either (see `health`).
    pub health: Option<Arc<ClusterHealth>>,
    /// `None`: the cluster has no `circuit_breakers`, and nothing is counted.
    pub breakers: Option<Arc<Breakers>>,
    /// `original_destination: true`: each request goes where its connection was going, not to
    /// the members (`original_dst`).
    pub passthrough: Option<Passthrough>,
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


// === impl Cluster ===

impl Drop for Cluster {
    /// Wakes the health supervisor, which stops once the cluster is gone.
    fn drop(&mut self) {
        if let Some(health) = &self.health {
            health.wake();
        }
    }
}

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
        let name: Arc<str> = settings.name.as_str().into();
        let health = ClusterHealth::new(&name, settings.health_check.as_ref(), settings.outlier_detection.as_ref(), &stats);
        // Members kept from a running cluster carry that cluster's health handles, or none.
        let members = match &health {
            Some(health) => Arc::new(with_health(health, &mut health.hosts(), members.endpoints.clone(), members.balancer.policy())),
            None if members.endpoints.iter().any(|e| e.health.is_some()) => {
                let plain = members.endpoints.iter().map(Endpoint::without_health).collect();
                Arc::new(Members::new(members.balancer.policy(), plain))
            }
            None => members,
        };
        Cluster {
            name,
            protocol: settings.protocol,
            connect_timeout: settings.connect_timeout.duration(),
            idle_timeout: settings.idle_timeout.duration(),
            tls,
            transport,
            stats,
            health,
            breakers: settings.circuit_breakers.map(|limits| Arc::new(Breakers::new(limits))),
            passthrough: None,
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

    /// How to reach `endpoint` as this cluster does (its protocol, timeouts, TLS, breakers).
    pub fn dial<'a>(&'a self, endpoint: &'a Endpoint) -> Dial<'a> {
        Dial {
            address: &endpoint.address,
            protocol: self.protocol,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            tls: self.tls.as_ref(),
            breakers: self.breakers.as_ref(),
        }
    }

    /// An HTTP/2 request without an authority gets `endpoint`'s (`:authority` is required).
    pub fn address_to(&self, request: &mut Request<Body>, endpoint: &Endpoint) -> Result<(), ProxyError> {
        if self.protocol == UpstreamProtocol::Http2 && request.uri().authority().is_none() {
            let path_and_query = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = absolute_uri(self.scheme(), endpoint.authority.clone(), path_and_query)?;
        }
        Ok(())
    }

    /// A circuit breaker refused a request: counted, and answered 503 `overflow`.
    pub fn overflow(&self, overflow: Overflow) -> ProxyError {
        self.stats.overflow_total.inc();
        ProxyError::Overflow { cluster: self.name.to_string(), limit: overflow.limit.name(), max: overflow.max }
    }

    /// An HTTP/1.1 response with a transfer coding other than `chunked` (`headers::Present`).
    /// RFC 9112 §6.1: a proxy must not drop a coding, and hyper decodes `chunked` only, so
    /// `gzip, chunked` would reach the client as plain chunks of gzip. Refused as Envoy refuses
    /// it (an upstream protocol error, 502); the connection it came on (`lease`) is closed
    /// rather than reused.
    #[cold]
    pub fn refuse_transfer_coding(&self, lease: Option<Box<Lease>>) -> ProxyError {
        self.stats.upstream_failures_total.inc();
        if let Some(mut lease) = lease {
            lease.discard();
        }
        ProxyError::UpstreamProtocolError { cluster: self.name.to_string(), what: "with a transfer coding other than chunked" }
    }

    /// One place of `limit` under the cluster's circuit breakers, if it has them, held until
    /// dropped; over the limit, the overflow (counted) to answer with.
    pub fn hold(&self, limit: Limit) -> Result<Option<Held>, ProxyError> {
        self.breakers.as_ref().map(|breakers| breakers.take(limit)).transpose().map_err(|overflow| self.overflow(overflow))
    }

    /// The members now: an owned handle, so a request keeps what it picked from across awaits.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replaces the members; requests that picked from the old ones finish on them. With
    /// health checks or outlier ejection, the new members carry each address's health (kept
    /// for addresses that stay) and the balancer leaves out the unhealthy ones.
    pub fn set_members(&self, members: Members) {
        match &self.health {
            None => self.members.store(Arc::new(members)),
            Some(health) => {
                let mut hosts = health.hosts();
                let policy = members.balancer.policy();
                self.members.store(Arc::new(with_health(health, &mut hosts, members.endpoints, policy)));
                drop(hosts);
                // To start checking new addresses.
                health.wake();
            }
        }
    }

    /// Builds the balancer again for the members' health now (see `health`).
    pub fn rebalance(&self) {
        if let Some(health) = &self.health {
            // Under the lock `set_members` holds: a new list is never replaced by an old one.
            let _ordered = health.hosts();
            let members = self.members.load_full();
            self.members.store(Arc::new(Members::by_health(members.balancer.policy(), members.endpoints.clone())));
        }
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

impl Cluster {
    /// Its endpoints by health now: (available, failing checks, ejected). Without health
    /// settings every endpoint counts as available.
    pub fn health_counts(&self) -> (usize, usize, usize) {
        let members = self.members.load();
        members.endpoints.iter().fold((0, 0, 0), |(up, failed, ejected), e| match Status::of(e.health.as_deref()) {
            Status::Unchecked | Status::Healthy => (up + 1, failed, ejected),
            Status::Unhealthy => (up, failed + 1, ejected),
            Status::Ejected => (up, failed, ejected + 1),
        })
    }
}

/// `endpoints`, each given its address's health in the cluster (new addresses start
/// unchecked), and balanced by it. Called with the cluster's hosts locked.
fn with_health(health: &ClusterHealth, hosts: &mut HashMap<Arc<str>, Arc<HostHealth>>, endpoints: Vec<Endpoint>, policy: Policy) -> Members {
    let endpoints = endpoints.into_iter().map(|e| Endpoint { health: Some(health.host(hosts, &e.address)), ..e }).collect();
    Members::by_health(policy, endpoints)
}

// === impl ClusterSource ===

impl ClusterSource {
    pub fn new(cluster: &config::Cluster, trust_domain: Option<&str>) -> ClusterSource {
        let config::Cluster {
            name, lb, protocol, connect_timeout, idle_timeout, tls, endpoints: _, discovery, health_check, outlier_detection, circuit_breakers, original_destination,
        } = cluster;
        let settings = config::Cluster {
            name: name.clone(),
            lb: lb.clone(),
            protocol: *protocol,
            connect_timeout: *connect_timeout,
            idle_timeout: *idle_timeout,
            tls: tls.clone(),
            endpoints: Vec::new(),
            discovery: discovery.clone(),
            health_check: health_check.clone(),
            outlier_detection: outlier_detection.clone(),
            circuit_breakers: *circuit_breakers,
            original_destination: *original_destination,
        };
        ClusterSource { settings, trust_domain: trust_domain.map(str::to_string) }
    }

    fn is(&self, cluster: &config::Cluster, trust_domain: Option<&str>) -> bool {
        let config::Cluster {
            name, lb, protocol, connect_timeout, idle_timeout, tls, endpoints: _, discovery, health_check, outlier_detection, circuit_breakers, original_destination,
        } = &self.settings;
        *name == cluster.name
            && *lb == cluster.lb
            && *protocol == cluster.protocol
            && *connect_timeout == cluster.connect_timeout
            && *idle_timeout == cluster.idle_timeout
            && *tls == cluster.tls
            && *discovery == cluster.discovery
            && *health_check == cluster.health_check
            && *outlier_detection == cluster.outlier_detection
            && *circuit_breakers == cluster.circuit_breakers
            && *original_destination == cluster.original_destination
            && (tls.mode != config::ClusterTlsMode::Mesh || self.trust_domain.as_deref() == trust_domain)
    }
}
