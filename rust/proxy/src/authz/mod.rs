//! Authorization of inbound requests: each listener's policies, compiled once per config, and
//! the decision for one request.
//!
//! Deny rules win; once any enforced allow rule exists on a listener, a request that matches none
//! is denied; with neither, a request is allowed. A dry-run policy changes no decision: it counts
//! and logs the requests it would deny if it were enforced too.
//!
//! A plain-text peer has no identity. It never matches `identities` or `namespaces`; for their
//! negations the rule's action decides: an allow rule's `not_identities`/`not_namespaces` do not
//! hold for it (a missing identity grants nothing), a deny rule's do (a missing identity is not
//! excused). Istio lets both hold, which its advisory ISTIO-SECURITY-2021-004 warns about.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};
use http::Method;

use meshproxy_config::{self as config, AuthzAction};
use crate::route::HeaderCheck;
use meshproxy_config::Problem;
use meshproxy_config::spiffe::{self, SpiffeId};
pub use meshproxy_telemetry::authz::{AuthzCounters, PolicyCounters, RuleCounters};

/// A listener's policies, ready to decide. `Authorization::default()` has none.
#[derive(Debug, Default)]
pub struct Authorization {
    listener: Arc<str>,
    policies: Vec<Policy>,
    /// The first enforced policy with an allow rule: the one a default denial is charged to.
    /// `Some` means default deny is on.
    default_deny: Option<usize>,
    any_dry_run: bool,
}

/// What one request may see of itself: its peer's identity (from its mTLS certificate; `None`
/// for a plain-text peer), method, path without the query, and headers.
#[derive(Clone, Copy, Debug)]
pub struct AuthzRequest<'a> {
    pub peer: Option<&'a SpiffeId>,
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `rule` is the enforced deny rule that matched (the first in config order); `None` means
    /// no allow rule matched, and `policy` is then the listener's first enforced policy with an
    /// allow rule.
    Deny {
        policy: Arc<str>,
        rule: Option<Arc<str>>,
    },
}

#[derive(Debug)]
struct Policy {
    name: Arc<str>,
    dry_run: bool,
    has_allow: bool,
    rules: Vec<Rule>,
    counters: Arc<PolicyCounters>,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    action: AuthzAction,
    /// `None` for conditions not given: they hold for every request.
    methods: Option<Vec<Method>>,
    paths: Option<Vec<PathPattern>>,
    identities: Option<Vec<IdentityPattern>>,
    namespaces: Option<Vec<String>>,
    headers: Vec<(HeaderName, HeaderCheck)>,
    /// The negations: `None` (or no headers) for those not given.
    not_methods: Option<Vec<Method>>,
    not_paths: Option<Vec<PathPattern>>,
    not_identities: Option<Vec<IdentityPattern>>,
    not_namespaces: Option<Vec<String>>,
    not_headers: Vec<(HeaderName, HeaderCheck)>,
    counters: Arc<RuleCounters>,
}

#[derive(Debug)]
enum IdentityPattern {
    /// `*`: any authenticated peer.
    Any,
    Exact(SpiffeId),
    /// The part before the `*`.
    Prefix(String),
}

#[derive(Debug)]
enum PathPattern {
    Any,
    Exact(String),
    /// The part before the `*`: `/orders/*` matches `/orders/` and below, not `/orders`.
    Prefix(String),
}

/// The first rule of one policy, or of a set of policies, matching as each action.
#[derive(Clone, Copy, Default)]
struct Hits {
    deny: Option<(usize, usize)>,
    allow: Option<(usize, usize)>,
}

const IDENTITY_RULE: &str = "expected '*' (any authenticated peer), a SPIFFE ID such as \
                             'spiffe://mesh.local/ns/shop/sa/web', or a prefix ending in '*' such as \
                             'spiffe://mesh.local/ns/shop/*'";
const PATH_RULE: &str = "expected '*', an exact path such as '/orders', or a prefix ending in '*' such as '/orders/*'";

// === impl Authorization ===

impl Authorization {
    /// Compiles the policies of the listener named `listener`, at field path `at`
    /// (`listeners[0]`). Peers' IDs lie in `trust_domain` when the sidecar has an identity;
    /// patterns naming another domain could never match, so they are problems. Compiles what is
    /// valid even when there are problems; a caller that finds any must not run the result.
    pub fn compile(
        policies: &[config::AuthzPolicy],
        trust_domain: Option<&str>,
        listener: &str,
        at: &str,
        counters: &AuthzCounters,
        problems: &mut Vec<Problem>,
    ) -> Authorization {
        let mut compiled = Vec::with_capacity(policies.len());
        let mut first_of_name: HashMap<&str, usize> = HashMap::with_capacity(policies.len());
        for (i, policy) in policies.iter().enumerate() {
            let policy_at = format!("{at}.authorization[{i}]");
            if let Some(&first) = first_of_name.get(policy.name.as_str()) {
                problem(
                    problems,
                    format!("{policy_at}.name"),
                    format!("duplicate policy name '{}'; already used by authorization[{first}]", policy.name),
                );
            } else {
                first_of_name.insert(&policy.name, i);
            }
            if policy.rules.is_empty() {
                problem(problems, format!("{policy_at}.rules"), "a policy needs at least one rule");
            }
            let policy_counters = counters.policy(listener, &policy.name);
            let mut rules = Vec::with_capacity(policy.rules.len());
            let mut first_rule_of_name: HashMap<&str, usize> = HashMap::with_capacity(policy.rules.len());
            for (j, rule) in policy.rules.iter().enumerate() {
                let rule_at = format!("{policy_at}.rules[{j}]");
                if let Some(&first) = first_rule_of_name.get(rule.name.as_str()) {
                    problem(
                        problems,
                        format!("{rule_at}.name"),
                        format!("duplicate rule name '{}'; already used by rules[{first}]", rule.name),
                    );
                } else {
                    first_rule_of_name.insert(&rule.name, j);
                }
                rules.push(compile_rule(rule, trust_domain, &rule_at, &policy_counters, problems));
            }
            compiled.push(Policy {
                name: policy.name.as_str().into(),
                dry_run: policy.dry_run,
                has_allow: rules.iter().any(|r| r.action == AuthzAction::Allow),
                rules,
                counters: policy_counters,
            });
        }
        Authorization {
            listener: listener.into(),
            default_deny: compiled.iter().position(|p| !p.dry_run && p.has_allow),
            any_dry_run: compiled.iter().any(|p| p.dry_run),
            policies: compiled,
        }
    }

    /// No policies: the proxy may skip authorization altogether.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides one request and counts it. Allocates only to log what a dry-run policy would deny.
    pub fn decide(&self, request: &AuthzRequest<'_>) -> Decision {
        let mut enforced = Hits::default();
        for (i, policy) in self.policies.iter().enumerate().filter(|(_, p)| !p.dry_run) {
            enforced.merge(policy.hits(i, request));
        }
        let decision = self.conclude(enforced, self.default_deny);
        match (&decision, enforced.allow) {
            (Decision::Allow, Some((i, _))) => self.policies[i].counters.allowed.inc(),
            (Decision::Allow, None) => {}
            (Decision::Deny { .. }, _) => {
                let charged = enforced.deny.map(|(i, _)| i).or(self.default_deny);
                if let Some(i) = charged {
                    self.policies[i].counters.denied.inc();
                }
            }
        }
        if self.any_dry_run {
            self.try_dry_runs(enforced, &decision, request);
        }
        decision
    }

    /// For each dry-run policy: the decision had it been enforced too. Counted and logged when
    /// it would deny what was allowed.
    fn try_dry_runs(&self, enforced: Hits, decision: &Decision, request: &AuthzRequest<'_>) {
        for (i, policy) in self.policies.iter().enumerate().filter(|(_, p)| p.dry_run) {
            // Tried even when the request is denied anyway: its rules count their matches.
            let mut with = enforced;
            with.merge(policy.hits(i, request));
            if *decision != Decision::Allow {
                continue;
            }
            let default_deny = self.default_deny.or(policy.has_allow.then_some(i));
            if let Decision::Deny { rule, .. } = self.conclude(with, default_deny) {
                policy.counters.dry_run_denied.inc();
                self.log_dry_run(policy, rule.as_deref(), request);
            }
        }
    }

    fn conclude(&self, hits: Hits, default_deny: Option<usize>) -> Decision {
        if let Some((i, j)) = hits.deny {
            let policy = &self.policies[i];
            return Decision::Deny { policy: policy.name.clone(), rule: Some(policy.rules[j].name.clone()) };
        }
        match (hits.allow, default_deny) {
            (None, Some(i)) => Decision::Deny { policy: self.policies[i].name.clone(), rule: None },
            _ => Decision::Allow,
        }
    }

    fn log_dry_run(&self, policy: &Policy, rule: Option<&str>, request: &AuthzRequest<'_>) {
        const MAX_PATH: usize = 256;
        let path = match request.path.char_indices().nth(MAX_PATH) {
            Some((cut, _)) => format!("{}...", &request.path[..cut]),
            None => request.path.to_string(),
        };
        let why = match rule {
            Some(rule) => format!("rule '{rule}'"),
            None => "(no allow rule matches)".to_string(),
        };
        let from = match request.peer {
            Some(peer) => peer.to_string(),
            None => "a plain-text peer".to_string(),
        };
        meshproxy_telemetry::events::log(format!(
            "authz dry-run: listener '{}' policy '{}' {why} would deny {} {path} from {from}",
            self.listener, policy.name, request.method
        ));
    }
}

// === impl Hits ===

impl Hits {
    /// Keeps the earlier hit of each action; `self` holds policies before `other`'s.
    fn merge(&mut self, other: Hits) {
        self.deny = self.deny.or(other.deny);
        self.allow = self.allow.or(other.allow);
    }
}

// === impl Policy ===

impl Policy {
    /// Tries every rule, so that each rule's `matches` counts every request it matches.
    fn hits(&self, index: usize, request: &AuthzRequest<'_>) -> Hits {
        let mut hits = Hits::default();
        for (j, rule) in self.rules.iter().enumerate() {
            if !rule.matches(request) {
                continue;
            }
            rule.counters.matches.inc();
            let slot = match rule.action {
                AuthzAction::Deny => &mut hits.deny,
                AuthzAction::Allow => &mut hits.allow,
            };
            slot.get_or_insert((index, j));
        }
        hits
    }
}

// === impl Rule ===

impl Rule {
    fn matches(&self, request: &AuthzRequest<'_>) -> bool {
        self.holds(request) && self.holds_negated(request)
    }

    /// The positive conditions. Cheapest first; header regexes last.
    fn holds(&self, request: &AuthzRequest<'_>) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(request.method))
            && self.paths.as_ref().is_none_or(|ps| ps.iter().any(|p| p.matches(request.path)))
            && self
                .identities
                .as_ref()
                .is_none_or(|ids| request.peer.is_some_and(|peer| ids.iter().any(|id| id.matches(peer))))
            && self.namespaces.as_ref().is_none_or(|nss| {
                request.peer.and_then(SpiffeId::namespace).is_some_and(|ns| nss.iter().any(|n| n == ns))
            })
            && self.headers.iter().all(|(name, check)| check.matches(request.headers, name))
    }

    /// The negations: none of a list's entries may match.
    fn holds_negated(&self, request: &AuthzRequest<'_>) -> bool {
        // What an identity negation says of a plain-text peer (see the module comment).
        let plain_text = self.action == AuthzAction::Deny;
        self.not_methods.as_ref().is_none_or(|ms| !ms.contains(request.method))
            && self.not_paths.as_ref().is_none_or(|ps| !ps.iter().any(|p| p.matches(request.path)))
            && self
                .not_identities
                .as_ref()
                .is_none_or(|ids| request.peer.map_or(plain_text, |peer| !ids.iter().any(|id| id.matches(peer))))
            && self.not_namespaces.as_ref().is_none_or(|nss| {
                request.peer.map_or(plain_text, |peer| peer.namespace().is_none_or(|ns| !nss.iter().any(|n| n == ns)))
            })
            && self.not_headers.iter().all(|(name, check)| !check.matches(request.headers, name))
    }
}

impl IdentityPattern {
    fn matches(&self, peer: &SpiffeId) -> bool {
        match self {
            IdentityPattern::Any => true,
            IdentityPattern::Exact(id) => id == peer,
            IdentityPattern::Prefix(prefix) => peer.as_str().starts_with(prefix.as_str()),
        }
    }
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Any => true,
            PathPattern::Exact(want) => path == want,
            PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

mod compile;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use compile::{compile_rule, problem};
