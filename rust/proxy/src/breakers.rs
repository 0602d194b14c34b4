//! A cluster's circuit breakers (Envoy's): limits on the connections it opens, the requests
//! waiting for one, the requests in flight and the retries in progress. Over a limit, a request
//! is answered 503 `overflow` at once (a retry is not made): a slow dependency cannot pile up
//! work in the proxy. A cluster without `circuit_breakers` has none and pays nothing.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use meshproxy_config::CircuitBreakers;

/// The limits and how much of each is taken now.
#[derive(Debug)]
pub struct Breakers {
    limits: CircuitBreakers,
    taken: [AtomicU32; 4],
}

/// Which limit a `Held` share counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

/// One unit of a limit, given back when dropped.
#[derive(Debug)]
pub struct Held {
    breakers: Arc<Breakers>,
    limit: Limit,
}

/// A limit was reached: what is refused, and its maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow {
    pub limit: Limit,
    pub max: u32,
}

// === impl Breakers ===

impl Breakers {
    pub fn new(limits: CircuitBreakers) -> Breakers {
        Breakers { limits, taken: Default::default() }
    }

    /// One unit of `limit`, or the overflow when all are taken.
    pub fn take(self: &Arc<Self>, limit: Limit) -> Result<Held, Overflow> {
        let max = self.max(limit);
        let taken = &self.taken[limit as usize];
        // Added first and taken back when over: concurrent takers never pass the limit together.
        if taken.fetch_add(1, Relaxed) >= max {
            taken.fetch_sub(1, Relaxed);
            return Err(Overflow { limit, max });
        }
        Ok(Held { breakers: Arc::clone(self), limit })
    }

    /// How much of `limit` is taken now.
    pub fn taken(&self, limit: Limit) -> u32 {
        self.taken[limit as usize].load(Relaxed)
    }

    fn max(&self, limit: Limit) -> u32 {
        match limit {
            Limit::Connections => self.limits.max_connections,
            Limit::PendingRequests => self.limits.max_pending_requests,
            Limit::Requests => self.limits.max_requests,
            Limit::Retries => self.limits.max_retries,
        }
    }
}

// === impl Limit ===

impl Limit {
    /// As the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::PendingRequests => "max_pending_requests",
            Limit::Requests => "max_requests",
            Limit::Retries => "max_retries",
        }
    }
}

// === impl Held ===

impl Drop for Held {
    fn drop(&mut self) {
        self.breakers.taken[self.limit as usize].fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_refuses_beyond_its_maximum_and_frees_what_is_dropped() {
        let limits = CircuitBreakers { max_connections: 1, max_pending_requests: 1, max_requests: 2, max_retries: 0 };
        let breakers = Arc::new(Breakers::new(limits));
        let first = breakers.take(Limit::Requests);
        let second = breakers.take(Limit::Requests);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(breakers.take(Limit::Requests).err(), Some(Overflow { limit: Limit::Requests, max: 2 }));
        assert_eq!(breakers.taken(Limit::Requests), 2, "a refused take leaves nothing taken");
        drop(first);
        assert!(breakers.take(Limit::Requests).is_ok());
        assert!(breakers.take(Limit::Retries).is_err(), "max_retries 0: no retry");
        assert!(breakers.take(Limit::Connections).is_ok(), "limits are separate");
    }
}
