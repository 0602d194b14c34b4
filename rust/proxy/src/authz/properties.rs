//! `decide` against a reference restated from the config as plain loops, on generated policies
//! and requests.

use super::tests::*;
use super::*;
use std::collections::BTreeMap;
use proptest::prelude::*;

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
