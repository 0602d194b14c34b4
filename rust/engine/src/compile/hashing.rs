//! A route's `hash_policy` compiled into its hash key, and checked against the clusters it
//! sends to: a hashing cluster (`lb: ring_hash` or `maglev`) needs a key, and a key is only
//! read by one.

use http::header::HeaderName;
use meshproxy_config::{self as config, Problem};
use meshproxy_proxy::hash_key::{HashKey, KeySource};
use meshproxy_proxy::route::Action;

/// The route's hash key, or `None` when it has no `hash_policy` (or one with problems).
pub(super) fn compile_hash_key(route: &config::Route, action: Option<&Action>, at: &str, problems: &mut Vec<Problem>) -> Option<HashKey> {
    let targets = action.map_or(&[][..], Action::targets);
    let hashing = targets.iter().find(|t| t.cluster.policy().is_hashing());
    if route.hash_policy.is_empty() {
        if let Some(target) = hashing {
            problems.push(Problem::new(
                format!("{at}.hash_policy"),
                format!(
                    "cluster '{}' balances by {}, which needs a hash key; give hash_policy, e.g. [{{header: x-user}}], [{{cookie: session}}] or [{{source_ip: true}}]",
                    target.cluster.name,
                    target.cluster.policy()
                ),
            ));
        }
        return None;
    }
    if matches!(action, Some(Action::Answer(_))) {
        problems.push(Problem::new(format!("{at}.hash_policy"), "applies to routes that send to a cluster; this one answers itself"));
        return None;
    }
    if let (None, Some(target)) = (hashing, targets.first()) {
        problems.push(Problem::new(
            format!("{at}.hash_policy"),
            format!("applies to clusters with lb ring_hash or maglev; cluster '{}' has lb {}", target.cluster.name, target.cluster.policy()),
        ));
        return None;
    }
    let before = problems.len();
    let sources: Vec<KeySource> =
        route.hash_policy.iter().enumerate().filter_map(|(k, policy)| compile_source(policy, &format!("{at}.hash_policy[{k}]"), problems)).collect();
    (problems.len() == before).then(|| HashKey::new(sources))
}

fn compile_source(policy: &config::HashPolicy, at: &str, problems: &mut Vec<Problem>) -> Option<KeySource> {
    let config::HashPolicy { header, cookie, source_ip } = policy;
    match (header, cookie, source_ip) {
        (Some(name), None, None) => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(KeySource::Header(name)),
            Err(_) => {
                problems.push(Problem::new(format!("{at}.header"), format!("'{name}' is not a valid header name")));
                None
            }
        },
        (None, Some(name), None) if is_cookie_name(name) => Some(KeySource::Cookie(name.clone())),
        (None, Some(name), None) => {
            problems.push(Problem::new(format!("{at}.cookie"), format!("'{name}' is not a valid cookie name (RFC 6265: a token)")));
            None
        }
        (None, None, Some(true)) => Some(KeySource::SourceIp),
        (None, None, Some(false)) => {
            problems.push(Problem::new(format!("{at}.source_ip"), "must be true when given; leave the entry out to not hash by the client's IP"));
            None
        }
        _ => {
            problems.push(Problem::new(at.to_string(), "give exactly one of header, cookie, source_ip"));
            None
        }
    }
}

/// RFC 6265 §4.1.1: a cookie name is an RFC 2616 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
