//! Authorization counters: per listener and policy, what was allowed, denied, and would have
//! been denied in dry run, and per rule how many requests met it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::counter::Counter;

/// Authorization counters by listener and policy name; they outlive config swaps, like the
/// listener counters of `Stats`. The lock is taken only when compiling and reporting.
#[derive(Debug, Default)]
pub struct AuthzCounters {
    listeners: Mutex<BTreeMap<String, BTreeMap<String, Arc<PolicyCounters>>>>,
}

#[derive(Debug, Default)]
pub struct PolicyCounters {
    /// Requests allowed by an allow rule of this (enforced) policy.
    pub allowed: Counter,
    /// Requests denied by a deny rule of this (enforced) policy, or for matching no allow rule
    /// when this is the listener's first enforced policy with allow rules.
    pub denied: Counter,
    /// Requests this dry-run policy would have denied, enforced together with the others.
    pub dry_run_denied: Counter,
    rules: Mutex<BTreeMap<String, Arc<RuleCounters>>>,
}

#[derive(Debug, Default)]
pub struct RuleCounters {
    /// Requests meeting every condition of the rule, whether or not the rule decided.
    pub matches: Counter,
}

// === impl AuthzCounters ===

impl AuthzCounters {
    pub fn policy(&self, listener: &str, policy: &str) -> Arc<PolicyCounters> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.entry(listener.to_string()).or_default().entry(policy.to_string()).or_default().clone()
    }

    /// Drops the counters of policies and rules no compiled config holds any more: every one a
    /// running listener enforces is held by its snapshot (they are made when it is compiled),
    /// so what is left only the map holds belongs to a listener, policy or rule a swap removed,
    /// with no request on the old config still deciding by it.
    pub fn prune(&self) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        for policies in listeners.values_mut() {
            policies.retain(|_, counters| Arc::strong_count(counters) > 1);
            for counters in policies.values() {
                counters.rules.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, rule| Arc::strong_count(rule) > 1);
            }
        }
        listeners.retain(|_, policies| !policies.is_empty());
    }

    /// `{listener: {policy: {allowed, denied, dry_run_denied, rules: {rule: {matches}}}}}`.
    pub fn json(&self) -> Value {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let by_listener = listeners.iter().map(|(listener, policies)| {
            let by_policy = policies.iter().map(|(name, p)| (name.clone(), p.json())).collect();
            (listener.clone(), Value::Object(by_policy))
        });
        Value::Object(by_listener.collect())
    }
}

impl PolicyCounters {
    pub fn rule(&self, name: &str) -> Arc<RuleCounters> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.entry(name.to_string()).or_default().clone()
    }

    fn json(&self) -> Value {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let rules: serde_json::Map<String, Value> =
            rules.iter().map(|(name, r)| (name.clone(), json!({ "matches": r.matches.get() }))).collect();
        json!({
            "allowed": self.allowed.get(),
            "denied": self.denied.get(),
            "dry_run_denied": self.dry_run_denied.get(),
            "rules": rules,
        })
    }
}
