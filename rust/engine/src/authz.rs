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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use regex::Regex;
use serde_json::{json, Value};

use crate::config::{self, AuthzAction};
use crate::route::HeaderCheck;
use crate::snapshot::Problem;
use crate::spiffe::{self, SpiffeId};
use crate::stats::Counter;

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
        crate::events::log(format!(
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

fn compile_rule(
    rule: &config::AuthzRule,
    trust_domain: Option<&str>,
    at: &str,
    counters: &PolicyCounters,
    problems: &mut Vec<Problem>,
) -> Rule {
    let identity = |pattern: &str| identity_pattern(pattern, trust_domain);
    let namespace = |ns: &str| namespace_problem(ns).map_or_else(|| Ok(ns.to_string()), Err);
    let method = |name: &str| {
        Method::from_bytes(name.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("'{name}' is not a valid HTTP method; expected a token such as GET or POST"))
    };
    Rule {
        name: rule.name.as_str().into(),
        action: rule.action,
        // In the order of the config keys, which is the order problems are reported in.
        identities: compile_list(&rule.identities, at, "identities", problems, identity),
        namespaces: compile_list(&rule.namespaces, at, "namespaces", problems, namespace),
        paths: compile_list(&rule.paths, at, "paths", problems, path_pattern),
        methods: compile_list(&rule.methods.as_ref().map(config::Methods::to_vec), at, "methods", problems, method),
        headers: compile_headers(&rule.headers, at, "headers", problems),
        not_identities: compile_list(&rule.not_identities, at, "not_identities", problems, identity),
        not_namespaces: compile_list(&rule.not_namespaces, at, "not_namespaces", problems, namespace),
        not_paths: compile_list(&rule.not_paths, at, "not_paths", problems, path_pattern),
        not_methods: compile_list(&rule.not_methods.as_ref().map(config::Methods::to_vec), at, "not_methods", problems, method),
        not_headers: compile_headers(&rule.not_headers, at, "not_headers", problems),
        counters: counters.rule(&rule.name),
    }
}

/// A list condition: each entry compiled at `{at}.{key}[k]`; an empty list (which nothing
/// could match, or, negated, nothing could fail) is a problem, as in the Python schema.
fn compile_list<T>(
    entries: &Option<Vec<String>>,
    at: &str,
    key: &str,
    problems: &mut Vec<Problem>,
    compile: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let entries = entries.as_ref()?;
    if entries.is_empty() {
        problem(problems, format!("{at}.{key}"), format!("give at least one entry, or leave out '{key}' to match any"));
    }
    let mut compiled = Vec::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        match compile(entry) {
            Ok(entry) => compiled.push(entry),
            Err(message) => problem(problems, format!("{at}.{key}[{k}]"), message),
        }
    }
    Some(compiled)
}

fn identity_pattern(pattern: &str, trust_domain: Option<&str>) -> Result<IdentityPattern, String> {
    if pattern == "*" {
        return Ok(IdentityPattern::Any);
    }
    let invalid = |problem: &str| format!("'{pattern}' is not a valid identity pattern: {problem}; {IDENTITY_RULE}");
    let prefix = pattern.strip_suffix('*');
    if prefix.unwrap_or(pattern).contains('*') {
        return Err(invalid("'*' may appear only once, at the end"));
    }
    let (compiled, domain) = match prefix {
        Some(prefix) => {
            let domain = spiffe::check_prefix(prefix).map_err(|e| invalid(e.problem()))?;
            (IdentityPattern::Prefix(prefix.to_string()), domain)
        }
        None => {
            let id = SpiffeId::parse(pattern).map_err(|e| invalid(e.problem()))?;
            let domain = id.trust_domain().to_string();
            return match trust_domain {
                Some(want) if want != domain => Err(other_domain(pattern, &domain, want)),
                _ => Ok(IdentityPattern::Exact(id)),
            };
        }
    };
    match trust_domain {
        Some(want) if want != domain => Err(other_domain(pattern, domain, want)),
        _ => Ok(compiled),
    }
}

fn other_domain(pattern: &str, domain: &str, want: &str) -> String {
    format!(
        "'{pattern}' is in trust domain '{domain}', but peers can only have IDs in this sidecar's \
         trust domain '{want}' (identity.trust_domain), e.g. 'spiffe://{want}/ns/default/sa/web'"
    )
}

/// A namespace is one path segment of a SPIFFE ID.
fn namespace_problem(ns: &str) -> Option<String> {
    let valid = "a namespace is one SPIFFE ID path segment: letters, digits, '.', '-' and '_'";
    let bad_char = ns.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    match (ns, bad_char) {
        ("" | "." | "..", _) => Some(format!("'{ns}' is not a valid namespace; {valid}")),
        (_, Some(c)) => Some(format!("'{ns}' is not a valid namespace: it contains {c:?}; {valid}")),
        _ => None,
    }
}

fn path_pattern(pattern: &str) -> Result<PathPattern, String> {
    if pattern == "*" {
        return Ok(PathPattern::Any);
    }
    let invalid = |problem: &str| format!("'{pattern}' is not a valid path pattern: {problem}; {PATH_RULE}");
    if !pattern.starts_with('/') {
        return Err(invalid("it must start with '/'"));
    }
    if pattern.contains('?') {
        return Err(invalid("the query is not part of the path"));
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => Ok(PathPattern::Prefix(prefix.to_string())),
        None if !pattern.contains('*') => Ok(PathPattern::Exact(pattern.to_string())),
        _ => Err(invalid("'*' may appear only once, at the end")),
    }
}

/// The meaning of route header matches (`snapshot::compile_match`): exact, present or absent,
/// or a regex the whole value must match.
fn compile_headers(
    headers: &BTreeMap<String, config::HeaderMatch>,
    rule_at: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(HeaderName, HeaderCheck)> {
    let mut compiled = Vec::with_capacity(headers.len());
    for (name, rule) in headers {
        let at = format!("{rule_at}.{key}.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            problem(problems, at, format!("'{name}' is not a valid header name"));
            continue;
        };
        let rule = rule.rule();
        let check = match (rule.exact, rule.present, rule.regex) {
            (Some(value), None, None) => match HeaderValue::from_str(&value) {
                Ok(value) => HeaderCheck::Exact(value),
                Err(_) => {
                    problem(problems, format!("{at}.exact"), "not a valid header value");
                    continue;
                }
            },
            (None, Some(present), None) => HeaderCheck::Present(present),
            (None, None, Some(re)) => match Regex::new(&format!("^(?:{re})$")) {
                Ok(re) => HeaderCheck::Regex(re),
                Err(e) => {
                    problem(problems, format!("{at}.regex"), regex_problem(&e));
                    continue;
                }
            },
            _ => {
                problem(problems, at, "give exactly one of exact, present, regex");
                continue;
            }
        };
        compiled.push((header, check));
    }
    compiled
}

/// One line; the regex crate's own message draws a diagram under the anchored pattern.
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    let reason = text.lines().find_map(|line| line.trim().strip_prefix("error: ")).unwrap_or(text.trim());
    format!("not a valid regular expression: {reason}")
}

fn problem(problems: &mut Vec<Problem>, path: String, message: impl Into<String>) {
    problems.push(Problem { path, message: message.into() });
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHOP_WEB: &str = "spiffe://mesh.local/ns/shop/sa/web";

    fn policies(doc: serde_json::Value) -> Vec<config::AuthzPolicy> {
        serde_json::from_value(doc).unwrap()
    }

    fn compiled(doc: serde_json::Value) -> (Authorization, AuthzCounters) {
        let counters = AuthzCounters::default();
        let mut problems = Vec::new();
        let authz = Authorization::compile(
            &policies(doc),
            Some("mesh.local"),
            "inbound",
            "listeners[0]",
            &counters,
            &mut problems,
        );
        assert_eq!(problems, vec![]);
        (authz, counters)
    }

    #[derive(Clone, Debug)]
    struct Probe {
        peer: Option<SpiffeId>,
        method: Method,
        path: String,
        headers: HeaderMap,
    }

    fn probe(peer: Option<&str>, method: &str, path: &str) -> Probe {
        Probe {
            peer: peer.map(|p| SpiffeId::parse(p).unwrap()),
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.to_string(),
            headers: HeaderMap::new(),
        }
    }

    impl Probe {
        fn header(mut self, name: &'static str, value: &'static str) -> Probe {
            self.headers.append(name, HeaderValue::from_static(value));
            self
        }

        fn request(&self) -> AuthzRequest<'_> {
            AuthzRequest { peer: self.peer.as_ref(), method: &self.method, path: &self.path, headers: &self.headers }
        }
    }

    fn allowed(authz: &Authorization, probe: &Probe) -> bool {
        authz.decide(&probe.request()) == Decision::Allow
    }

    fn deny(policy: &str, rule: Option<&str>) -> Decision {
        Decision::Deny { policy: policy.into(), rule: rule.map(Into::into) }
    }

    fn counter(counters: &AuthzCounters, pointer: &str) -> u64 {
        counters
            .json()
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {pointer} in {}", counters.json()))
    }

    #[test]
    fn no_policies_allow_everything_and_say_so() {
        let (authz, _) = compiled(serde_json::json!([]));
        assert!(authz.is_empty());
        assert!(allowed(&authz, &probe(None, "DELETE", "/admin")));
        assert!(Authorization::default().is_empty());
    }

    #[test]
    fn a_deny_rule_wins_over_a_matching_allow_rule() {
        let (authz, counters) = compiled(serde_json::json!([
            {"name": "open", "rules": [{"name": "all", "action": "allow"}]},
            {"name": "guard", "rules": [{"name": "admin", "action": "deny", "paths": ["/admin/*"]}]},
        ]));
        assert_eq!(authz.decide(&probe(Some(SHOP_WEB), "GET", "/admin/users").request()), deny("guard", Some("admin")));
        assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/orders")));
        assert_eq!(counter(&counters, "/inbound/guard/denied"), 1);
        assert_eq!(counter(&counters, "/inbound/open/allowed"), 1);
        assert_eq!(counter(&counters, "/inbound/open/rules/all/matches"), 2);
        assert_eq!(counter(&counters, "/inbound/guard/rules/admin/matches"), 1);
    }

    #[test]
    fn once_an_allow_rule_exists_requests_matching_none_are_denied() {
        let (authz, counters) = compiled(serde_json::json!([
            {"name": "deny-only", "rules": [{"name": "no-delete", "action": "deny", "methods": ["delete"]}]},
            {"name": "reads", "rules": [{"name": "get", "action": "allow", "methods": ["GET"]}]},
        ]));
        assert!(allowed(&authz, &probe(None, "GET", "/")));
        assert_eq!(authz.decide(&probe(None, "POST", "/").request()), deny("reads", None));
        assert_eq!(authz.decide(&probe(None, "DELETE", "/").request()), deny("deny-only", Some("no-delete")));
        assert_eq!(counter(&counters, "/inbound/reads/denied"), 1);
        assert_eq!(counter(&counters, "/inbound/deny-only/denied"), 1);
    }

    #[test]
    fn deny_rules_alone_allow_the_rest() {
        let (authz, counters) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "deny", "paths": ["/admin"]}]},
        ]));
        assert!(!authz.is_empty());
        assert!(allowed(&authz, &probe(None, "GET", "/admin/x")));
        assert!(!allowed(&authz, &probe(None, "GET", "/admin")));
        assert_eq!(counter(&counters, "/inbound/p/allowed"), 0, "allowed counts allows by a rule only");
    }

    #[test]
    fn a_dry_run_policy_counts_what_it_would_deny_without_denying() {
        let (authz, counters) = compiled(serde_json::json!([
            {"name": "open", "rules": [{"name": "all", "action": "allow"}]},
            {"name": "trial", "dry_run": true, "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]},
        ]));
        assert!(allowed(&authz, &probe(None, "GET", "/admin/x")));
        assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/admin/y")));
        assert!(allowed(&authz, &probe(None, "GET", "/other")));
        assert_eq!(counter(&counters, "/inbound/trial/dry_run_denied"), 2);
        assert_eq!(counter(&counters, "/inbound/trial/denied"), 0);
        assert_eq!(counter(&counters, "/inbound/trial/rules/no-admin/matches"), 2);
        assert_eq!(counter(&counters, "/inbound/open/allowed"), 3);
    }

    #[test]
    fn a_dry_run_allow_policy_would_turn_on_default_deny() {
        let (authz, counters) = compiled(serde_json::json!([
            {"name": "trial", "dry_run": true, "rules": [{"name": "shop", "action": "allow", "namespaces": ["shop"]}]},
        ]));
        assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/")));
        assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/ns/other/sa/x"), "GET", "/")));
        assert!(allowed(&authz, &probe(None, "GET", "/")));
        assert_eq!(counter(&counters, "/inbound/trial/dry_run_denied"), 2);
    }

    #[test]
    fn a_dry_run_policy_does_not_count_what_is_denied_anyway() {
        let (authz, counters) = compiled(serde_json::json!([
            {"name": "guard", "rules": [{"name": "all", "action": "deny"}]},
            {"name": "trial", "dry_run": true, "rules": [{"name": "all", "action": "deny"}]},
        ]));
        assert_eq!(authz.decide(&probe(None, "GET", "/").request()), deny("guard", Some("all")));
        assert_eq!(counter(&counters, "/inbound/trial/dry_run_denied"), 0);
        assert_eq!(counter(&counters, "/inbound/trial/rules/all/matches"), 1);
    }

    #[test]
    fn identity_and_namespace_rules_never_match_a_plain_text_peer() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [
                {"name": "no-bad", "action": "deny", "identities": ["*"], "paths": ["/secret"]},
                {"name": "any-peer", "action": "allow", "identities": ["*"]},
                {"name": "shop", "action": "allow", "namespaces": ["shop"]},
            ]},
        ]));
        assert!(!allowed(&authz, &probe(None, "GET", "/")), "no allow rule matches a plain-text peer");
        assert!(
            allowed(&authz, &probe(Some("spiffe://mesh.local/anything"), "GET", "/")),
            "'*' is any authenticated peer"
        );
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/secret")));

        let (deny_only, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "shop", "action": "deny", "namespaces": ["shop"]}]},
        ]));
        assert!(allowed(&deny_only, &probe(None, "GET", "/")), "a deny rule on identity does not match plain text");
        assert!(!allowed(&deny_only, &probe(Some(SHOP_WEB), "GET", "/")));
    }

    #[test]
    fn identities_match_exactly_or_by_prefix() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "identities": [
                "spiffe://mesh.local/ns/shop/*", "spiffe://mesh.local/ns/ops/sa/admin",
            ]}]},
        ]));
        assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/")));
        assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/ns/ops/sa/admin"), "GET", "/")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/ops/sa/admin2"), "GET", "/")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/shopx/sa/web"), "GET", "/")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/shop"), "GET", "/")));
    }

    #[test]
    fn namespaces_match_the_segment_after_ns() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "namespaces": ["shop", "ops"]}]},
        ]));
        assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/")));
        assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/ns/ops/sa/x"), "GET", "/")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/dev/sa/shop"), "GET", "/")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/shop/ns"), "GET", "/")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local"), "GET", "/")));
    }

    #[test]
    fn paths_match_exactly_or_by_prefix() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "paths": ["/health", "/orders/*", "/v1*"]}]},
        ]));
        for (path, want) in [
            ("/health", true),
            ("/health/x", false),
            ("/healthz", false),
            ("/orders/", true),
            ("/orders/1/items", true),
            ("/orders", false),
            ("/v1", true),
            ("/v12/x", true),
            ("/", false),
        ] {
            assert_eq!(allowed(&authz, &probe(None, "GET", path)), want, "{path}");
        }
        let (any, _) =
            compiled(serde_json::json!([{"name": "p", "rules": [{"name": "r", "action": "allow", "paths": ["*"]}]}]));
        assert!(allowed(&any, &probe(None, "GET", "/anything")));
    }

    #[test]
    fn methods_match_any_listed_in_any_case() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "methods": ["get", "HEAD", "PURGE"]}]},
        ]));
        for (method, want) in [("GET", true), ("HEAD", true), ("PURGE", true), ("POST", false), ("get", false)] {
            assert_eq!(allowed(&authz, &probe(None, method, "/")), want, "{method}");
        }
    }

    #[test]
    fn headers_match_as_route_header_matches_do() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "headers": {
                "X-Tenant": "acme", "x-debug": {"present": false}, "x-version": {"regex": "v[12]"},
            }}]},
        ]));
        let base = || probe(None, "GET", "/").header("x-tenant", "acme").header("x-version", "v2");
        assert!(allowed(&authz, &base()));
        assert!(!allowed(&authz, &base().header("x-debug", "1")), "present: false");
        assert!(
            !allowed(&authz, &probe(None, "GET", "/").header("x-tenant", "acme").header("x-version", "v22")),
            "regex is anchored"
        );
        assert!(!allowed(&authz, &probe(None, "GET", "/").header("x-tenant", "acme2").header("x-version", "v1")));
    }

    #[test]
    fn every_condition_of_a_rule_must_hold() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow",
                "namespaces": ["shop"], "paths": ["/orders/*"], "methods": ["POST"], "headers": {"x-a": "1"}}]},
        ]));
        let ok = || probe(Some(SHOP_WEB), "POST", "/orders/1").header("x-a", "1");
        assert!(allowed(&authz, &ok()));
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "POST", "/orders/1")));
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/orders/1").header("x-a", "1")));
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "POST", "/cart").header("x-a", "1")));
        assert!(!allowed(&authz, &probe(None, "POST", "/orders/1").header("x-a", "1")));
    }

    #[test]
    fn a_negation_holds_when_no_entry_of_its_list_matches() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow",
                "not_identities": ["spiffe://mesh.local/ns/shop/sa/bad"], "not_namespaces": ["dev"],
                "not_paths": ["/admin/*", "/debug"], "not_methods": ["delete"], "not_headers": {"x-env": "prod", "x-debug": {"present": true}}}]},
        ]));
        let ok = || probe(Some(SHOP_WEB), "GET", "/orders");
        assert!(allowed(&authz, &ok()));
        assert!(allowed(&authz, &ok().header("x-env", "test")), "another value of a negated exact match");
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/shop/sa/bad"), "GET", "/orders")));
        assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/dev/sa/web"), "GET", "/orders")));
        assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/no-namespace"), "GET", "/orders")), "no namespace is not 'dev'");
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/admin/users")));
        assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/admin")), "'/admin/*' does not cover '/admin'");
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/debug")));
        assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "DELETE", "/orders")));
        assert!(!allowed(&authz, &ok().header("x-env", "prod")));
        assert!(!allowed(&authz, &ok().header("x-debug", "")));
    }

    #[test]
    fn an_identity_negation_grants_plain_text_nothing_and_excuses_it_nothing() {
        // allow: not_namespaces would let anyone outside 'dev' in; a peer without an identity
        // is not 'outside dev', it is unknown.
        let (allow, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "not_namespaces": ["dev"]}]},
        ]));
        assert!(allowed(&allow, &probe(Some(SHOP_WEB), "GET", "/")));
        assert!(!allowed(&allow, &probe(None, "GET", "/")));
        let (allow_ids, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "not_identities": [SHOP_WEB]}]},
        ]));
        assert!(!allowed(&allow_ids, &probe(None, "GET", "/")));
        assert!(allowed(&allow_ids, &probe(Some("spiffe://mesh.local/ns/ops/sa/x"), "GET", "/")));

        // deny: 'everyone but frontend' includes plain text.
        let (deny_rule, counters) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "only-frontend", "action": "deny", "not_namespaces": ["frontend"]}]},
        ]));
        assert_eq!(deny_rule.decide(&probe(None, "GET", "/").request()), deny("p", Some("only-frontend")));
        assert!(!allowed(&deny_rule, &probe(Some(SHOP_WEB), "GET", "/")));
        assert!(allowed(&deny_rule, &probe(Some("spiffe://mesh.local/ns/frontend/sa/web"), "GET", "/")));
        assert_eq!(counter(&counters, "/inbound/p/denied"), 2);
        let (deny_ids, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "deny", "not_identities": ["spiffe://mesh.local/ns/frontend/*"]}]},
        ]));
        assert!(!allowed(&deny_ids, &probe(None, "GET", "/")));
    }

    #[test]
    fn a_negated_path_or_method_says_nothing_about_identity() {
        let (authz, _) = compiled(serde_json::json!([
            {"name": "p", "rules": [{"name": "r", "action": "allow", "not_paths": ["/admin/*"], "not_methods": ["POST"]}]},
        ]));
        assert!(allowed(&authz, &probe(None, "GET", "/orders")));
        assert!(!allowed(&authz, &probe(None, "GET", "/admin/x")));
        assert!(!allowed(&authz, &probe(None, "POST", "/orders")));
    }

    #[test]
    fn counters_outlive_a_recompile() {
        let counters = AuthzCounters::default();
        let doc = serde_json::json!([{"name": "p", "rules": [{"name": "r", "action": "deny"}]}]);
        for _ in 0..2 {
            let authz =
                Authorization::compile(&policies(doc.clone()), None, "in", "listeners[0]", &counters, &mut Vec::new());
            authz.decide(&probe(None, "GET", "/").request());
        }
        assert_eq!(
            counters.json(),
            serde_json::json!({"in": {"p": {"allowed": 0, "denied": 2, "dry_run_denied": 0, "rules": {"r": {"matches": 2}}}}})
        );
    }

    #[test]
    fn each_mistake_is_reported_at_its_field_path() {
        let doc = serde_json::json!([
            {"name": "p", "rules": [
                {"name": "r", "action": "allow", "identities": [
                    "*", "spiffe://mesh.local/ns/a/*", "spiffe://other.org/ns/a/sa/b", "spiffe://Mesh.local/x",
                    "spiffe://mesh.local/*/sa/x", "spiffe://mesh.local*", "spiffe://other.org/*", "web",
                ]},
                {"name": "r", "action": "deny", "paths": ["orders", "/a/*/b", "/ok/*"], "methods": ["GET", "BAD METHOD"]},
                {"name": "s", "action": "deny", "namespaces": ["shop", "a/b", ""], "identities": []},
                {"name": "t", "action": "deny", "headers": {"bad name": "x", "x-re": {"regex": "(unclosed"}, "x-two": {"exact": "a", "present": true}}},
                {"name": "u", "action": "allow", "not_identities": ["spiffe://other.org/*"], "not_namespaces": ["a/b"],
                    "not_paths": [], "not_methods": ["BAD METHOD"], "not_headers": {"x-re": {"regex": "(unclosed"}}},
            ]},
            {"name": "p", "rules": []},
        ]);
        let mut problems = Vec::new();
        Authorization::compile(
            &policies(doc),
            Some("mesh.local"),
            "in",
            "listeners[3]",
            &AuthzCounters::default(),
            &mut problems,
        );
        let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let at = "listeners[3].authorization";
        let expect = [
            format!("{at}[0].rules[0].identities[2]: 'spiffe://other.org/ns/a/sa/b' is in trust domain 'other.org', but peers can only have IDs in this sidecar's trust domain 'mesh.local'"),
            format!("{at}[0].rules[0].identities[3]: 'spiffe://Mesh.local/x' is not a valid identity pattern: the trust domain 'Mesh.local' contains 'M'"),
            format!("{at}[0].rules[0].identities[4]: 'spiffe://mesh.local/*/sa/x' is not a valid identity pattern: '*' may appear only once, at the end"),
            format!("{at}[0].rules[0].identities[5]: 'spiffe://mesh.local*' is not a valid identity pattern: a prefix must name the whole trust domain and a '/'"),
            format!("{at}[0].rules[0].identities[6]: 'spiffe://other.org/*' is in trust domain 'other.org'"),
            format!("{at}[0].rules[0].identities[7]: 'web' is not a valid identity pattern: it must start with 'spiffe://'"),
            format!("{at}[0].rules[1].name: duplicate rule name 'r'; already used by rules[0]"),
            format!("{at}[0].rules[1].paths[0]: 'orders' is not a valid path pattern: it must start with '/'"),
            format!("{at}[0].rules[1].paths[1]: '/a/*/b' is not a valid path pattern: '*' may appear only once, at the end"),
            format!("{at}[0].rules[1].methods[1]: 'BAD METHOD' is not a valid HTTP method"),
            format!("{at}[0].rules[2].identities: give at least one entry, or leave out 'identities' to match any"),
            format!("{at}[0].rules[2].namespaces[1]: 'a/b' is not a valid namespace: it contains '/'"),
            format!("{at}[0].rules[2].namespaces[2]: '' is not a valid namespace"),
            format!("{at}[0].rules[3].headers.bad name: 'bad name' is not a valid header name"),
            format!("{at}[0].rules[3].headers.x-re.regex: not a valid regular expression"),
            format!("{at}[0].rules[3].headers.x-two: give exactly one of exact, present, regex"),
            format!("{at}[0].rules[4].not_identities[0]: 'spiffe://other.org/*' is in trust domain 'other.org'"),
            format!("{at}[0].rules[4].not_namespaces[0]: 'a/b' is not a valid namespace: it contains '/'"),
            format!("{at}[0].rules[4].not_paths: give at least one entry, or leave out 'not_paths' to match any"),
            format!("{at}[0].rules[4].not_methods[0]: 'BAD METHOD' is not a valid HTTP method"),
            format!("{at}[0].rules[4].not_headers.x-re.regex: not a valid regular expression"),
            format!("{at}[1].name: duplicate policy name 'p'; already used by authorization[0]"),
            format!("{at}[1].rules: a policy needs at least one rule"),
        ];
        assert_eq!(got.len(), expect.len(), "{got:#?}");
        for (got, want) in got.iter().zip(&expect) {
            assert!(got.starts_with(want.as_str()), "\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn without_a_trust_domain_any_valid_domain_is_accepted() {
        let doc = serde_json::json!([{"name": "p", "rules": [{"name": "r", "action": "allow", "identities": ["spiffe://other.org/x", "spiffe://b.org/*"]}]}]);
        let mut problems = Vec::new();
        Authorization::compile(&policies(doc), None, "in", "listeners[0]", &AuthzCounters::default(), &mut problems);
        assert_eq!(problems, vec![]);
    }

    // === decide, against a reference written as plain loops over the config ===

    /// What `decide` returns, restated from the config: enforced policies in order.
    fn reference_decision(policies: &[&config::AuthzPolicy], request: &Probe) -> Decision {
        for policy in policies {
            for rule in &policy.rules {
                if rule.action == AuthzAction::Deny && reference_matches(rule, request) {
                    return deny(&policy.name, Some(&rule.name));
                }
            }
        }
        let mut first_with_allow = None;
        for policy in policies {
            for rule in &policy.rules {
                if rule.action == AuthzAction::Allow {
                    first_with_allow.get_or_insert(policy.name.as_str());
                    if reference_matches(rule, request) {
                        return Decision::Allow;
                    }
                }
            }
        }
        first_with_allow.map_or(Decision::Allow, |policy| deny(policy, None))
    }

    fn reference_matches(rule: &config::AuthzRule, request: &Probe) -> bool {
        let peer = request.peer.as_ref().map(SpiffeId::as_str);
        let any = |list: &Option<Vec<String>>, test: &dyn Fn(&str) -> bool| {
            list.as_ref().is_none_or(|l| l.iter().any(|e| test(e)))
        };
        let none = |list: &Option<Vec<String>>, test: &dyn Fn(&str) -> bool| {
            list.as_ref().is_none_or(|l| !l.iter().any(|e| test(e)))
        };
        let identity_is = |pattern: &str, peer: &str| match pattern.strip_suffix('*') {
            Some("") => true,
            Some(prefix) => peer.starts_with(prefix),
            None => peer == pattern,
        };
        let namespace_is = |ns: &str, peer: &str| {
            let segments: Vec<&str> = peer.splitn(4, '/').nth(3).unwrap_or("").split('/').collect();
            segments.len() >= 2 && segments[0] == "ns" && segments[1] == ns
        };
        let path_is = |p: &str| match p.strip_suffix('*') {
            Some(prefix) => request.path.starts_with(prefix),
            None => request.path == p,
        };
        let method_is = |m: &str| m.eq_ignore_ascii_case(request.method.as_str());
        let header_holds = |name: &String, m: &config::HeaderMatch| {
            let values: Vec<&str> =
                request.headers.get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
            let rule = m.rule();
            match (rule.exact, rule.present) {
                (Some(want), _) => values.contains(&want.as_str()),
                (_, Some(present)) => values.is_empty() != present,
                _ => false,
            }
        };
        let positive = match peer {
            None => rule.identities.is_none() && rule.namespaces.is_none(),
            Some(peer) => {
                any(&rule.identities, &|p| identity_is(p, peer)) && any(&rule.namespaces, &|ns| namespace_is(ns, peer))
            }
        } && any(&rule.paths, &path_is)
            && any(&rule.methods.as_ref().map(config::Methods::to_vec), &method_is)
            && rule.headers.iter().all(|(name, m)| header_holds(name, m));
        // A plain-text peer: an identity negation holds in a deny rule only.
        let negated = match peer {
            None => rule.action == AuthzAction::Deny || (rule.not_identities.is_none() && rule.not_namespaces.is_none()),
            Some(peer) => {
                none(&rule.not_identities, &|p| identity_is(p, peer))
                    && none(&rule.not_namespaces, &|ns| namespace_is(ns, peer))
            }
        } && none(&rule.not_paths, &path_is)
            && none(&rule.not_methods.as_ref().map(config::Methods::to_vec), &method_is)
            && rule.not_headers.iter().all(|(name, m)| !header_holds(name, m));
        positive && negated
    }

    /// The conditions of a rule, positive or negated, drawn from the same entries.
    fn conditions_strategy() -> impl Strategy<Value = Conditions> {
        let list = |options: Vec<&'static str>| {
            prop::option::of(prop::collection::vec(prop::sample::select(options), 1..3))
                .prop_map(|l| l.map(|l| l.into_iter().map(String::from).collect::<Vec<_>>()))
        };
        let identities = list(vec![
            "*",
            SHOP_WEB,
            "spiffe://mesh.local/ns/shop/*",
            "spiffe://mesh.local/ns/ops/sa/admin",
            "spiffe://mesh.local/ns/o*",
        ]);
        let namespaces = list(vec!["shop", "ops", "dev"]);
        let paths = list(vec!["*", "/", "/a", "/a/*", "/a*", "/b"]);
        let methods = list(vec!["GET", "post", "DELETE"]);
        let headers = prop::collection::btree_map(
            prop::sample::select(vec!["x-a", "x-b"]).prop_map(String::from),
            prop::sample::select(vec![
                config::HeaderMatch::Exact("1".into()),
                config::HeaderMatch::Rule(config::HeaderRule { present: Some(true), ..Default::default() }),
                config::HeaderMatch::Rule(config::HeaderRule { present: Some(false), ..Default::default() }),
            ]),
            0..2,
        );
        (identities, namespaces, paths, methods, headers)
    }

    type Conditions = (
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<String>>,
        BTreeMap<String, config::HeaderMatch>,
    );

    fn rule_strategy() -> impl Strategy<Value = config::AuthzRule> {
        let action = prop::sample::select(vec![AuthzAction::Allow, AuthzAction::Deny]);
        // Negations are left out half of the time, so that positive-only rules stay common.
        let negated = prop::option::weighted(0.5, conditions_strategy());
        (action, conditions_strategy(), negated).prop_map(|(action, (identities, namespaces, paths, methods, headers), negated)| {
            let (not_identities, not_namespaces, not_paths, not_methods, not_headers) = negated.unwrap_or_default();
            config::AuthzRule {
                name: String::new(),
                action,
                identities,
                namespaces,
                paths,
                methods: methods.map(config::Methods::Many),
                headers,
                not_identities,
                not_namespaces,
                not_paths,
                not_methods: not_methods.map(config::Methods::Many),
                not_headers,
            }
        })
    }

    fn policies_strategy() -> impl Strategy<Value = Vec<config::AuthzPolicy>> {
        let policy = (any::<bool>(), prop::collection::vec(rule_strategy(), 1..4));
        prop::collection::vec(policy, 0..4).prop_map(|policies| {
            policies
                .into_iter()
                .enumerate()
                .map(|(i, (dry_run, rules))| config::AuthzPolicy {
                    name: format!("p{i}"),
                    dry_run,
                    rules: rules
                        .into_iter()
                        .enumerate()
                        .map(|(j, rule)| config::AuthzRule { name: format!("r{j}"), ..rule })
                        .collect(),
                })
                .collect()
        })
    }

    fn probe_strategy() -> impl Strategy<Value = Probe> {
        let peer = prop::option::of(prop::sample::select(vec![
            SHOP_WEB,
            "spiffe://mesh.local/ns/ops/sa/admin",
            "spiffe://mesh.local/ns/ops",
            "spiffe://mesh.local/ns/dev/sa/x",
            "spiffe://mesh.local",
        ]));
        let method = prop::sample::select(vec!["GET", "POST", "DELETE", "PUT"]);
        let path = prop::sample::select(vec!["/", "/a", "/a/", "/a/x", "/ab", "/b", "/c"]);
        let headers = prop::collection::vec(
            (prop::sample::select(vec!["x-a", "x-b"]), prop::sample::select(vec!["1", "2"])),
            0..3,
        );
        (peer, method, path, headers).prop_map(|(peer, method, path, headers)| {
            let mut probe = probe(peer, method, path);
            for (name, value) in headers {
                probe = probe.header(name, value);
            }
            probe
        })
    }

    proptest! {
        #[test]
        fn decide_agrees_with_the_reference(config in policies_strategy(), probes in prop::collection::vec(probe_strategy(), 1..6)) {
            let counters = AuthzCounters::default();
            let mut problems = Vec::new();
            let authz = Authorization::compile(&config, Some("mesh.local"), "in", "listeners[0]", &counters, &mut problems);
            prop_assert_eq!(problems, vec![]);
            let enforced: Vec<&config::AuthzPolicy> = config.iter().filter(|p| !p.dry_run).collect();
            let mut expected = AuthzCounters::default();
            for probe in &probes {
                let want = reference_decision(&enforced, probe);
                prop_assert_eq!(authz.decide(&probe.request()), want.clone());
                // The expected counters, from the reference.
                let charge = |policy: &str| expected.policy("in", policy);
                match &want {
                    Decision::Deny { policy, .. } => charge(policy).denied.inc(),
                    Decision::Allow => {
                        let by_rule = enforced.iter().find(|p| p.rules.iter().any(|r| r.action == AuthzAction::Allow && reference_matches(r, probe)));
                        if let Some(policy) = by_rule {
                            charge(&policy.name).allowed.inc();
                        }
                        for trial in config.iter().filter(|p| p.dry_run) {
                            let with: Vec<&config::AuthzPolicy> = config.iter().filter(|p| !p.dry_run || p.name == trial.name).collect();
                            if reference_decision(&with, probe) != Decision::Allow {
                                charge(&trial.name).dry_run_denied.inc();
                            }
                        }
                    }
                }
                for policy in &config {
                    for rule in policy.rules.iter().filter(|r| reference_matches(r, probe)) {
                        charge(&policy.name).rule(&rule.name).matches.inc();
                    }
                }
            }
            // Register every rule, so that the two registries list the same names.
            for policy in &config {
                for rule in &policy.rules {
                    expected.policy("in", &policy.name).rule(&rule.name);
                }
            }
            if config.is_empty() {
                expected = AuthzCounters::default();
            }
            prop_assert_eq!(counters.json(), expected.json());
        }
    }
}
