//! Transparent capture, the connection's side: where a connection redirected to a capture
//! listener (`original_destination: true`) was going, read once when it is accepted
//! (`SO_ORIGINAL_DST`, from the kernel's connection tracking). Routes match on it
//! (`route::RouteMatch::destination`), and a cluster with `original_destination: true` sends
//! to it ([`Passthrough`], Envoy's `ORIGINAL_DST` cluster). Listeners and clusters without the
//! option never read it.
//!
//! Opaque TCP listeners take the same address from [`of`] for their own passthrough.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::uri::Authority;
use meshproxy_balance::Policy;
use tokio::net::TcpStream;

use crate::members::Members;
use crate::endpoint::EndpointRegistry;

/// How many original destinations a passthrough cluster keeps endpoints (and pooled
/// connections) for; past that it starts again from none.
const KEPT_DESTINATIONS: usize = 1024;

/// The destination the client dialled, if a NAT rule (`REDIRECT`) sent the connection here;
/// `None` for a connection made to the listener itself (the kernel then reports the listener's
/// own address, or has no record of the connection).
pub fn of(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let socket = socket2::SockRef::from(stream);
    let found = if local.is_ipv4() { socket.original_dst_v4() } else { socket.original_dst_v6() };
    let found = found.ok()?.as_socket()?;
    (found != local).then_some(found)
}

/// The request's original destination, put in its extensions for a passthrough cluster.
#[derive(Debug, Clone, Copy)]
pub struct OriginalDestination(pub SocketAddr);

/// The endpoints of a cluster that sends each request to its original destination: made on
/// first use, one per destination, so that requests to one destination share its pools. Each
/// is a member list of one, which a try picks from as from any cluster's members.
#[derive(Debug)]
pub struct Passthrough {
    destinations: Mutex<HashMap<SocketAddr, Arc<Members>>>,
    registry: EndpointRegistry,
    /// What a request without an original destination (not captured) picks from: nothing.
    none: Arc<Members>,
}

// === impl Passthrough ===

impl Passthrough {
    pub fn new(workers: usize) -> Passthrough {
        let none = Arc::new(Members::new(Policy::RoundRobin, Vec::new()));
        Passthrough { destinations: Mutex::default(), registry: EndpointRegistry::new(workers), none }
    }

    /// The members of `destination`: its one endpoint; none without a destination.
    pub fn members(&self, destination: Option<SocketAddr>) -> Arc<Members> {
        let Some(destination) = destination else { return self.none.clone() };
        let mut destinations = self.destinations.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = destinations.get(&destination) {
            return found.clone();
        }
        if destinations.len() >= KEPT_DESTINATIONS {
            destinations.clear();
            self.registry.prune();
        }
        let address = destination.to_string();
        let parse = |text: &str| {
            let key = meshproxy_config::address::endpoint(text)?;
            Ok((key, text.parse::<Authority>().map_err(|e| e.to_string())?))
        };
        let Ok(endpoint) = self.registry.endpoint(&address, None, 1, parse) else { return self.none.clone() };
        let members = Arc::new(Members::new(Policy::RoundRobin, vec![endpoint]));
        destinations.insert(destination, members.clone());
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn each_destination_is_one_endpoint_kept_for_its_next_requests() {
        let passthrough = Passthrough::new(2);
        let first = passthrough.members(Some(at("10.0.2.2:9090")));
        let picked = first.pick().map(|e| e.address.to_string());
        assert_eq!(picked.as_deref(), Some("10.0.2.2:9090"));
        // The same destination again: the same endpoint, and with it its pooled connections.
        assert!(Arc::ptr_eq(&first, &passthrough.members(Some(at("10.0.2.2:9090")))));
        let other = passthrough.members(Some(at("[fd00::2]:9090")));
        assert_eq!(other.pick().map(|e| e.address.to_string()).as_deref(), Some("[fd00::2]:9090"));
        // A request whose connection was not redirected has nowhere to go.
        assert!(passthrough.members(None).pick().is_none());
    }

    #[test]
    fn the_destinations_kept_are_bounded() {
        let passthrough = Passthrough::new(1);
        let first = passthrough.members(Some(at("10.0.0.1:1")));
        for port in 2..=u16::try_from(KEPT_DESTINATIONS).unwrap_or(u16::MAX) + 1 {
            passthrough.members(Some(SocketAddr::from(([10, 0, 0, 1], port))));
        }
        let kept = passthrough.destinations.lock().map(|d| d.len()).unwrap_or_default();
        assert!(kept <= KEPT_DESTINATIONS, "{kept}");
        assert!(!Arc::ptr_eq(&first, &passthrough.members(Some(at("10.0.0.1:1")))));
    }
}
