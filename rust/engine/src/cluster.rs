//! A cluster: the endpoints one route action sends to, how to choose among them, and the
//! upstream client that holds their pooled connections.

use std::sync::Arc;

use meshproxy_balance::Balancer;

use crate::config::UpstreamProtocol;
use crate::endpoint::Endpoint;
use crate::stats::ClusterStats;
use crate::tls::outbound::UpstreamTls;

#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<Endpoint>,
    pub balancer: Balancer,
    pub connect_timeout: std::time::Duration,
    /// How connections to the endpoints are secured; `None`: plain text.
    pub tls: Option<UpstreamTls>,
    pub stats: Arc<ClusterStats>,
}

// === impl Cluster ===

impl Cluster {
    /// The endpoint the balancer chooses, or `None` when no endpoint can take traffic.
    pub fn pick(&self) -> Option<&Endpoint> {
        let index = self.balancer.pick(&self.endpoints, &mut rand::rng())?;
        self.endpoints.get(index)
    }

    /// Upstream connections its endpoints hold now: (idle HTTP/1.1, open HTTP/2). An address
    /// that two clusters list, secured the same way, shares its pools: counted for both.
    pub fn connections(&self) -> (usize, usize) {
        self.endpoints.iter().map(|e| e.state.connections()).fold((0, 0), |(h1, h2), (idle, open)| (h1 + idle, h2 + open))
    }
}
