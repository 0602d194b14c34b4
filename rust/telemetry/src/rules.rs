//! What the request rules of routes and listeners did (`route_rules` in the config): requests
//! rate limited, faults injected, copies mirrored. Made at compile time only for a route or
//! listener that has a rule, held by what it compiled to, so a route without rules counts
//! nothing here; kept by name across config swaps while some compiled route holds them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::counter::Counter;

/// Whose rules these counts are: a route of a listener, or (route `""`) the listener's own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub listener: Arc<str>,
    pub route: Arc<str>,
}

#[derive(Debug, Default)]
pub struct RuleStats {
    /// Requests answered 429 by the rate limit.
    pub rate_limited_total: Counter,
    /// Requests answered by an injected abort.
    pub fault_aborts_total: Counter,
    /// Requests held by an injected delay.
    pub fault_delays_total: Counter,
    /// Copies sent to the mirror's shadow cluster.
    pub mirrors_total: Counter,
    /// Copies whose exchange failed or outlasted the route's timeout (the caller never sees it).
    pub mirror_failures_total: Counter,
    /// Copies not sent: too many in flight already.
    pub mirrors_dropped_total: Counter,
}

#[derive(Debug, Default)]
pub struct RuleRegistry {
    stats: Mutex<BTreeMap<RuleKey, Arc<RuleStats>>>,
}

// === impl RuleRegistry ===

impl RuleRegistry {
    /// The stats of `key`, made on first use.
    pub fn stats(&self, key: RuleKey) -> Arc<RuleStats> {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.entry(key).or_default().clone()
    }

    /// Drops the stats no compiled route or listener holds any more. Under the registry's lock
    /// an entry only the registry holds cannot be taken meanwhile.
    pub fn prune(&self) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.retain(|_, held| Arc::strong_count(held) > 1);
    }

    /// `[{listener, route, rate_limited_total, fault_aborts_total, fault_delays_total, mirrors_total,
    /// mirror_failures_total, mirrors_dropped_total}]`, in key order.
    pub fn json(&self) -> Value {
        let all: Vec<(RuleKey, Arc<RuleStats>)> =
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Value::Array(
            all.iter()
                .map(|(key, s)| {
                    json!({
                        "listener": &*key.listener,
                        "route": &*key.route,
                        "rate_limited_total": s.rate_limited_total.get(),
                        "fault_aborts_total": s.fault_aborts_total.get(),
                        "fault_delays_total": s.fault_delays_total.get(),
                        "mirrors_total": s.mirrors_total.get(),
                        "mirror_failures_total": s.mirror_failures_total.get(),
                        "mirrors_dropped_total": s.mirrors_dropped_total.get(),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_outlive_a_swap_only_while_held() {
        let registry = RuleRegistry::default();
        let key = RuleKey { listener: "out".into(), route: "r".into() };
        let held = registry.stats(key.clone());
        held.rate_limited_total.inc();
        registry.prune();
        assert!(Arc::ptr_eq(&held, &registry.stats(key.clone())));
        drop(held);
        registry.prune();
        assert_eq!(registry.stats(key).rate_limited_total.get(), 0);
    }
}
