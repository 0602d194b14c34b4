//! The endpoints of a cluster (or of one original destination) and the balancer built for
//! exactly those: what a request picks its endpoint from (see `cluster`).

use meshproxy_balance::{Balancer, Policy};

use crate::endpoint::Endpoint;
use crate::health::PANIC_THRESHOLD_PERCENT;

/// How many more draws a pick that must avoid one endpoint makes before it takes any other.
const DRAWS_AROUND_A_FAILURE: usize = 4;

/// A cluster's endpoints, in config order, and the balancer built for exactly those.
#[derive(Debug)]
pub struct Members {
    pub endpoints: Vec<Endpoint>,
    pub balancer: Balancer,
}

// === impl Members ===

impl Members {
    pub fn new(policy: Policy, endpoints: Vec<Endpoint>) -> Members {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Members::weighted(policy, endpoints, &weights)
    }

    /// Members whose balancer leaves out the endpoints that are unhealthy or ejected, unless
    /// fewer than the panic threshold's share are available: then it picks among all of them.
    pub fn by_health(policy: Policy, endpoints: Vec<Endpoint>) -> Members {
        let available: Vec<bool> = endpoints.iter().map(|e| e.health.as_ref().is_none_or(|h| h.available())).collect();
        let count = available.iter().filter(|up| **up).count();
        if count == endpoints.len() || count * 100 < endpoints.len() * PANIC_THRESHOLD_PERCENT {
            return Members::new(policy, endpoints);
        }
        let weights: Vec<u32> = endpoints.iter().zip(&available).map(|(e, up)| if *up { e.weight } else { 0 }).collect();
        Members::weighted(policy, endpoints, &weights)
    }

    /// Members whose balancer picks by `weights` (one per endpoint) rather than the configured
    /// ones: health checks give an unhealthy endpoint weight 0 (a hashing policy's table then
    /// leaves it out, and only its keys move).
    pub fn weighted(policy: Policy, endpoints: Vec<Endpoint>, weights: &[u32]) -> Members {
        let balancer = if policy.is_hashing() {
            let names: Vec<&str> = endpoints.iter().map(|e| &*e.address).collect();
            Balancer::with_names(policy, weights, &names)
        } else {
            Balancer::new(policy, weights)
        };
        Members { balancer, endpoints }
    }

    /// Picks as `pick_avoiding` does; a request with a hash key (`hash`) to a hashing cluster
    /// goes to the endpoint its key lands on, or on from there past `avoid`. Always inlined (as
    /// `pick_avoiding`'s first draw): each try calls it once.
    #[inline(always)]
    pub fn pick_for(&self, hash: Option<u64>, avoid: Option<&str>) -> Option<&Endpoint> {
        match hash {
            Some(hash) if self.balancer.policy().is_hashing() => {
                let index = self.balancer.pick_hashed(hash, |i| avoid.is_some_and(|avoid| *self.endpoints[i].address == *avoid))?;
                self.endpoints.get(index)
            }
            _ => self.pick_avoiding(avoid),
        }
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
    #[inline(always)]
    pub fn pick_avoiding(&self, avoid: Option<&str>) -> Option<&Endpoint> {
        let first = self.pick()?;
        let Some(avoid) = avoid else { return Some(first) };
        if *first.address != *avoid {
            return Some(first);
        }
        self.pick_around(first, avoid)
    }

    /// A retry's draw when the first landed on the endpoint it avoids.
    #[cold]
    fn pick_around<'m>(&'m self, first: &'m Endpoint, avoid: &str) -> Option<&'m Endpoint> {
        (0..DRAWS_AROUND_A_FAILURE)
            .find_map(|_| self.pick().filter(|e| *e.address != *avoid))
            .or_else(|| self.endpoints.iter().find(|e| e.weight > 0 && *e.address != *avoid && e.health.as_ref().is_none_or(|h| h.available())))
            .or(Some(first))
    }
}
