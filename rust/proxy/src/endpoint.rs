//! Endpoints and the load state that outlives config swaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use meshproxy_balance::{InFlight, Load, PeakEwma};
use meshproxy_config::address::EndpointAddress;

use crate::health::host::HostHealth;
use crate::pool::Pool;
use crate::workers;

/// One upstream address of a cluster, as compiled from the config.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: Arc<str>,
    pub authority: Authority,
    pub weight: u32,
    pub state: Arc<EndpointState>,
    /// Its health in this cluster, when the cluster checks or ejects (see `health`).
    pub health: Option<Arc<HostHealth>>,
}

/// What the balancer learns about an address, and its connections. Shared by every cluster that
/// lists the address and kept across config swaps for as long as some cluster still lists it.
#[derive(Debug)]
pub struct EndpointState {
    /// The address as configured, and as parsed: the same for every cluster that lists it.
    pub address: Arc<str>,
    pub authority: Authority,
    /// The address as the kernel compares it: two spellings of one address (`[::1]:80` and
    /// `[0::1]:80`) are one endpoint of a cluster.
    pub key: EndpointAddress,
    pub in_flight: InFlight,
    pub latency: PeakEwma,
    /// One pool per worker: a connection is driven by the worker that opened it, so requests
    /// use their own worker's connections and never hop threads.
    pools: Box<[Arc<Pool>]>,
}

/// One request in flight on an endpoint; ends when dropped (response finished or abandoned).
#[derive(Debug)]
pub struct InFlightRequest(Arc<EndpointState>);

/// Finds the state of an address that survived a swap. Used only while compiling a config or
/// a cluster's new endpoint list.
#[derive(Debug)]
pub struct EndpointRegistry {
    states: Mutex<States>,
    workers: usize,
}

#[derive(Debug, Default)]
struct States {
    by_key: HashMap<String, Weak<EndpointState>>,
    /// How many entries the last prune left: `sweep` prunes again once there are twice as many.
    after_prune: usize,
}

// === impl Endpoint ===

impl Endpoint {
    pub fn start(&self) -> InFlightRequest {
        self.state.in_flight.begin();
        InFlightRequest(self.state.clone())
    }

    pub fn observe_latency(&self, rtt: Duration) {
        self.state.latency.observe(rtt);
    }

    /// The same endpoint, without a cluster's health handle.
    pub fn without_health(&self) -> Endpoint {
        Endpoint { health: None, ..self.clone() }
    }
}

// === impl EndpointState ===

impl EndpointState {
    fn new(address: &str, (key, authority): (EndpointAddress, Authority), workers: usize) -> EndpointState {
        EndpointState {
            address: address.into(),
            authority,
            key,
            in_flight: InFlight::default(),
            latency: PeakEwma::default(),
            pools: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// Connections held by the pools of every worker: (idle HTTP/1.1, open HTTP/2).
    pub fn connections(&self) -> (usize, usize) {
        self.pools.iter().map(|pool| pool.connections()).fold((0, 0), |(h1, h2), (idle, open)| (h1 + idle, h2 + open))
    }

    /// The pool of the worker the caller runs on.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pools[workers::current() % self.pools.len()]
    }
}

impl Load for Endpoint {
    fn in_flight(&self) -> u64 {
        self.state.in_flight.get()
    }

    fn latency_ns(&self) -> f64 {
        self.state.latency.estimate_ns()
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.finish();
    }
}

// === impl EndpointRegistry ===

impl EndpointRegistry {
    /// A registry for an engine with `workers` worker threads.
    pub fn new(workers: usize) -> EndpointRegistry {
        EndpointRegistry { states: Mutex::default(), workers }
    }

    /// The worker threads its states have a pool for.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The endpoint `address` with `weight`, on the state some compiled cluster already holds
    /// for the address, or on a new one. `parse` reads an address that has no state, or says what
    /// is wrong with it. An address with a state was parsed when the state was made and is not
    /// read again: a reload of a large mesh finds most of its addresses here.
    ///
    /// `transport` tells apart the ways clusters secure their connections to the address (plain
    /// text: `None`); each way has its own state and pools.
    pub fn endpoint(&self, address: &str, transport: Option<&str>, weight: u32, parse: impl FnOnce(&str) -> Result<(EndpointAddress, Authority), String>) -> Result<Endpoint, String> {
        let states = &mut self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).by_key;
        let secured;
        let by = match transport {
            None => address,
            Some(transport) => {
                secured = format!("{address} {transport}");
                &secured
            }
        };
        let state = match states.get(by).and_then(Weak::upgrade) {
            Some(state) => state,
            None => {
                let state = Arc::new(EndpointState::new(address, parse(address)?, self.workers));
                states.insert(by.to_string(), Arc::downgrade(&state));
                state
            }
        };
        Ok(Endpoint { address: state.address.clone(), authority: state.authority.clone(), weight, state, health: None })
    }

    /// Forgets addresses no cluster lists any more.
    pub fn prune(&self) {
        let mut states = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        states.by_key.retain(|_, state| state.strong_count() > 0);
        states.after_prune = states.by_key.len();
    }

    /// Prunes once the registry has doubled since the last prune. A cluster's new endpoint list
    /// leaves entries for the addresses it dropped; pruning a mesh-sized registry after every
    /// list would cost more than the list, and this keeps the cost per new entry constant.
    pub fn sweep(&self) {
        let mut states = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if states.by_key.len() > 2 * states.after_prune.max(512) {
            states.by_key.retain(|_, state| state.strong_count() > 0);
            states.after_prune = states.by_key.len();
        }
    }
}

impl Default for EndpointRegistry {
    fn default() -> EndpointRegistry {
        EndpointRegistry::new(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(registry: &EndpointRegistry, address: &str) -> Endpoint {
        let parse = |address: &str| {
            let key = meshproxy_config::address::endpoint(address)?;
            Ok((key, address.parse::<Authority>().map_err(|e| e.to_string())?))
        };
        registry.endpoint(address, None, 1, parse).unwrap_or_else(|problem| panic!("{address}: {problem}"))
    }

    #[test]
    fn state_survives_while_an_endpoint_holds_it() {
        let registry = EndpointRegistry::default();
        let first = endpoint(&registry, "127.0.0.1:8081");
        first.state.in_flight.begin();
        let again = endpoint(&registry, "127.0.0.1:8081");
        assert!(Arc::ptr_eq(&first.state, &again.state));
        assert_eq!(again.state.in_flight.get(), 1);
        drop((first, again));
        registry.prune();
        assert_eq!(endpoint(&registry, "127.0.0.1:8081").state.in_flight.get(), 0);
    }

    #[test]
    fn sweep_prunes_once_the_registry_has_doubled_since_the_last_prune() {
        let registry = EndpointRegistry::default();
        let kept = endpoint(&registry, "127.0.0.1:1");
        registry.prune();
        let entries = |registry: &EndpointRegistry| registry.states.lock().map(|s| s.by_key.len()).unwrap_or_default();
        // Dropped at once: dead entries, as a replaced endpoint list leaves them.
        for port in 2..=1024 {
            endpoint(&registry, &format!("127.0.0.1:{port}"));
        }
        registry.sweep();
        assert_eq!(entries(&registry), 1024, "at most twice the floor of 512: kept");
        endpoint(&registry, "127.0.0.1:1025");
        registry.sweep();
        assert_eq!(entries(&registry), 1);
        assert!(Arc::ptr_eq(&endpoint(&registry, "127.0.0.1:1").state, &kept.state));
    }

    #[test]
    fn an_address_with_a_live_state_is_not_parsed_again() {
        let registry = EndpointRegistry::default();
        let first = endpoint(&registry, "orders:8080");
        let refuse = |_: &str| Err("not read".to_owned());
        let again = registry.endpoint("orders:8080", None, 2, refuse);
        assert!(again.is_ok_and(|e| Arc::ptr_eq(&e.state, &first.state) && e.weight == 2));
        assert!(registry.endpoint("other:8080", None, 1, refuse).is_err());
    }
}
