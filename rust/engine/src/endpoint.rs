//! Endpoints and the load state that outlives config swaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use meshproxy_balance::{InFlight, Load, PeakEwma};

use crate::pool::Pool;
use crate::workers;

/// One upstream address of a cluster, as compiled from the config.
#[derive(Debug)]
pub struct Endpoint {
    pub address: Arc<str>,
    pub authority: Authority,
    pub weight: u32,
    pub state: Arc<EndpointState>,
}

/// What the balancer learns about an address, and its connections. Shared by every cluster that
/// lists the address and kept across config swaps for as long as some cluster still lists it.
#[derive(Debug)]
pub struct EndpointState {
    pub in_flight: InFlight,
    pub latency: PeakEwma,
    /// One pool per worker: a connection is driven by the worker that opened it, so requests
    /// use their own worker's connections and never hop threads.
    pools: Box<[Arc<Pool>]>,
}

/// One request in flight on an endpoint; ends when dropped (response finished or abandoned).
#[derive(Debug)]
pub struct InFlightRequest(Arc<EndpointState>);

/// Finds the state of an address that survived a swap. Used only while compiling a config.
#[derive(Debug)]
pub struct EndpointRegistry {
    states: Mutex<HashMap<String, Weak<EndpointState>>>,
    workers: usize,
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
}

// === impl EndpointState ===

impl EndpointState {
    fn new(workers: usize) -> EndpointState {
        EndpointState {
            in_flight: InFlight::default(),
            latency: PeakEwma::default(),
            pools: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
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

    pub fn state(&self, address: &str) -> Arc<EndpointState> {
        let mut states = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(state) = states.get(address).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(EndpointState::new(self.workers));
        states.insert(address.to_string(), Arc::downgrade(&state));
        state
    }

    /// Forgets addresses no cluster lists any more.
    pub fn prune(&self) {
        let mut states = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        states.retain(|_, state| state.strong_count() > 0);
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

    #[test]
    fn state_survives_while_an_endpoint_holds_it() {
        let registry = EndpointRegistry::default();
        let first = registry.state("127.0.0.1:8081");
        first.in_flight.begin();
        let again = registry.state("127.0.0.1:8081");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.in_flight.get(), 1);
        drop((first, again));
        registry.prune();
        assert_eq!(registry.state("127.0.0.1:8081").in_flight.get(), 0);
    }
}
