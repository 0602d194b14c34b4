//! Route tables compiled: matches, actions (clusters, or answers: redirects and direct responses),
//! request rules, header edits; routes that did not change are kept as they run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::Method;
use meshproxy_balance::WeightedSampler;

use meshproxy_proxy::cluster::Cluster;
use meshproxy_config::{self as config, capture, Problem};
use meshproxy_proxy::retry::Retry;
use meshproxy_proxy::header_match::{anchored, compile_headers, regex_problem};
use meshproxy_proxy::direct::{Answer, Answered, DirectResponse, Redirect};
use meshproxy_proxy::rules::RouteRules;
use meshproxy_proxy::timeouts::StreamTimeouts;
use meshproxy_telemetry::rules::{RuleKey, RuleRegistry};
use meshproxy_proxy::route::{Action, HeaderEdits, HostMatch, PathMatch, PrefixRewrite, Route, RouteMatch, RouteTable, Target};

use super::hashing::compile_hash_key;
use super::Below;

/// The routes of the listener named `listener`. `running` is the table the listener runs now,
/// if it has the same name and direction: a route given exactly as there, sending to clusters
/// kept whole, is kept as it runs (with the stats its targets found) instead of compiled again.
pub(super) fn compile_routes(
    listener: &str,
    configs: &[config::Route],
    clusters: &HashMap<String, Arc<Cluster>>,
    running: Option<&RouteTable>,
    rule_stats: &RuleRegistry,
    listener_at: &str,
    problems: &mut Vec<Problem>,
) -> RouteTable {
    let mut routes = Vec::with_capacity(configs.len());
    let mut names = HashSet::with_capacity(configs.len());
    let mut kept = KeptRoutes { running: running.map_or(&[][..], |table| &table.routes), by_name: None };
    for (j, route) in configs.iter().enumerate() {
        let at = || format!("{listener_at}.routes[{j}]");
        if let Some(name) = &route.name {
            if !names.insert(name.as_str()) {
                problems.push(Problem::new(format!("{}.name", at()), format!("duplicate route name '{name}'")));
            }
        }
        let name: Arc<str> = match (&route.name, kept.find(j, route, clusters)) {
            (_, Some(running)) => {
                routes.push(running);
                continue;
            }
            (Some(name), None) => name.as_str().into(),
            (None, None) => format!("{listener}/{j}").into(),
        };
        let at = at();
        let matcher = compile_match(&route.match_, &at, problems);
        let action = compile_action(route, clusters, &at, problems);
        let prefix_rewrite = match (&route.prefix_rewrite, &route.match_.path_prefix) {
            (None, _) => None,
            (Some(replacement), Some(prefix)) if replacement.starts_with('/') => {
                Some(PrefixRewrite { prefix: prefix.clone(), replacement: replacement.clone() })
            }
            (Some(_), Some(_)) => {
                problems.push(Problem::new(format!("{at}.prefix_rewrite"), "must start with '/'"));
                None
            }
            (Some(_), None) => {
                problems.push(Problem::new(format!("{at}.prefix_rewrite"), "needs match.path_prefix: it replaces that prefix"));
                None
            }
        };
        let rule_key = || RuleKey { listener: listener.into(), route: name.clone() };
        let rules = RouteRules::compile(route, clusters, rule_key, rule_stats, &at, problems);
        let request_headers = compile_edits(&route.request_headers, &at, "request_headers", problems);
        let response_headers = compile_edits(&route.response_headers, &at, "response_headers", problems);
        let hash_key = compile_hash_key(route, action.as_ref(), &at, problems);
        if route.timeout_covers == config::TimeoutCovers::Response && route.timeout.0 == 0 {
            problems.push(Problem::new(format!("{at}.timeout_covers"), "timeout_covers: response needs a timeout greater than 0 (0 means none)"));
        }
        let (Some(action), Some(matcher)) = (action, matcher) else { continue };
        routes.push(Arc::new(Route {
            name,
            matcher,
            action,
            prefix_rewrite,
            rules,
            request_headers,
            response_headers,
            timeout: route.timeout.nonzero(),
            stream_timeouts: StreamTimeouts::new(route),
            hash_key,
            retry: route.retry.as_ref().map(|policy| Box::new(Retry::new(policy))),
            compiled_from: route.clone(),
        }));
    }
    RouteTable::new(routes)
}

/// The routes a listener runs, looked up for the ones a reload gives again.
struct KeptRoutes<'a> {
    running: &'a [Arc<Route>],
    /// By stats name, made when a route is not found at its own index (routes were added,
    /// removed or moved): most reloads never need it.
    by_name: Option<HashMap<&'a str, &'a Arc<Route>>>,
}

impl KeptRoutes<'_> {
    /// The running route that `route`, the `index`th of the new table, would compile to: the
    /// same stats name (an unnamed route's names its index), the same config, and targets
    /// that are the clusters the new config has.
    fn find(&mut self, index: usize, route: &config::Route, clusters: &HashMap<String, Arc<Cluster>>) -> Option<Arc<Route>> {
        if self.running.is_empty() {
            return None;
        }
        let at_index = self.running.get(index).filter(|r| r.compiled_from.name == route.name);
        let found = match (at_index, &route.name) {
            (Some(running), _) => running,
            // An unnamed route's stats name is its index: it cannot be kept anywhere else.
            (None, None) => return None,
            (None, Some(name)) => {
                let running = self.running;
                let by_name = self.by_name.get_or_insert_with(|| {
                    running.iter().filter(|r| r.compiled_from.name.is_some()).map(|r| (&*r.name, r)).collect()
                });
                by_name.get(name.as_str())?
            }
        };
        let same = |cluster: &Arc<Cluster>| clusters.get(&*cluster.name).is_some_and(|c| Arc::ptr_eq(c, cluster));
        let same_clusters = found.targets().iter().all(|t| same(&t.cluster)) && found.rules.mirror.as_ref().is_none_or(|m| same(&m.cluster));
        (same_clusters && found.compiled_from == *route).then(|| Arc::clone(found))
    }
}

fn compile_action(route: &config::Route, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Option<Action> {
    let known = |name: &str, path: &dyn Fn() -> String, problems: &mut Vec<Problem>| match clusters.get(name) {
        Some(cluster) => Some(Target::new(cluster.clone())),
        None => {
            let mut defined: Vec<&str> = clusters.keys().map(String::as_str).collect();
            defined.sort_unstable();
            let defined = if defined.is_empty() { "none".to_string() } else { defined.join(", ") };
            problems.push(Problem::new(path(), format!("unknown cluster '{name}'; defined clusters: {defined}")));
            None
        }
    };
    let given: Vec<&str> = [
        ("cluster", route.cluster.is_some()),
        ("split", route.split.is_some()),
        ("redirect", route.redirect.is_some()),
        ("direct_response", route.direct_response.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if given.len() != 1 {
        let found = if given.is_empty() { "none is set".to_string() } else { format!("found {}", given.join(", ")) };
        problems.push(Problem::new(at.to_string(), format!("a route needs exactly one of cluster, split, redirect, direct_response; {found}")));
        return None;
    }
    if let Some(redirect) = &route.redirect {
        return Redirect::compile(redirect, &format!("{at}.redirect"), problems).map(|r| Action::Answer(Answered::new(Answer::Redirect(r))));
    }
    if let Some(direct) = &route.direct_response {
        return DirectResponse::compile(direct, &format!("{at}.direct_response"), problems).map(|d| Action::Answer(Answered::new(Answer::Direct(d))));
    }
    match (&route.cluster, &route.split) {
        (Some(name), _) => known(name, &|| format!("{at}.cluster"), problems).map(Action::Cluster),
        (None, Some(split)) => {
            let mut targets = Vec::new();
            let mut weights = Vec::new();
            for (k, entry) in split.iter().enumerate() {
                targets.push(known(&entry.cluster, &|| format!("{at}.split[{k}].cluster"), problems));
                weights.push(entry.weight);
            }
            if weights.iter().map(|&w| u64::from(w)).sum::<u64>() == 0 {
                problems.push(Problem::new(format!("{at}.split"), "the weights sum to 0; at least one must be positive"));
                return None;
            }
            let targets: Option<Vec<_>> = targets.into_iter().collect();
            targets.map(|targets| Action::Split { targets, sampler: WeightedSampler::new(&weights) })
        }
        (None, None) => None,
    }
}

/// `route_at` is the route's path; paths below it are formatted only for a problem.
fn compile_match(m: &config::RouteMatch, route_at: &str, problems: &mut Vec<Problem>) -> Option<RouteMatch> {
    let before = problems.len();
    let at = Below(route_at, "match");
    let path = match (&m.path, &m.path_prefix, &m.path_regex) {
        (None, None, None) => PathMatch::Any,
        (Some(p), None, None) => PathMatch::Exact(p.clone()),
        (None, Some(p), None) => PathMatch::Prefix(p.clone()),
        (None, None, Some(re)) => match anchored(re) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                problems.push(Problem::new(format!("{at}.path_regex"), regex_problem(&e)));
                PathMatch::Any
            }
        },
        _ => {
            problems.push(Problem::new(at.to_string(), "give at most one of path, path_prefix, path_regex"));
            PathMatch::Any
        }
    };
    for (key, value) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
            problems.push(Problem::new(format!("{at}.{key}"), "must start with '/'"));
        }
    }
    // The path is formatted only for a match that has header rules.
    let headers = if m.headers.is_empty() { Vec::new() } else { compile_headers(&m.headers, &at.to_string(), "headers", problems) };
    let methods = m.method.as_ref().map(|methods| {
        methods
            .to_vec()
            .iter()
            .filter_map(|name| match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    problems.push(Problem::new(format!("{at}.method"), format!("'{name}' is not a valid HTTP method")));
                    None
                }
            })
            .collect()
    });
    let host = m.host.as_deref().map_or(HostMatch::Any, HostMatch::parse);
    let destination = m.original_destination.as_ref().map(|entries| {
        let parsed = entries.iter().enumerate().filter_map(|(i, entry)| match capture::destination(entry) {
            Ok(entry) => Some(entry),
            Err(problem) => {
                problems.push(Problem::new(format!("{at}.original_destination[{i}]"), format!("'{entry}' {problem}")));
                None
            }
        });
        parsed.collect()
    });
    (problems.len() == before).then_some(RouteMatch { host, path, headers, methods, connect: m.connect, ports: m.ports.clone(), destination })
}

fn compile_edits(edits: &config::HeaderEdits, route_at: &str, key: &str, problems: &mut Vec<Problem>) -> HeaderEdits {
    let mut compiled = HeaderEdits::default();
    let at = Below(route_at, key);
    for (name, value) in &edits.add {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => compiled.add.push((name, value)),
            (Err(_), _) => problems.push(Problem::new(format!("{at}.add.{name}"), format!("'{name}' is not a valid header name"))),
            (_, Err(_)) => problems.push(Problem::new(format!("{at}.add.{name}"), "not a valid header value")),
        }
    }
    for (k, name) in edits.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => compiled.remove.push(name),
            Err(_) => problems.push(Problem::new(format!("{at}.remove[{k}]"), format!("'{name}' is not a valid header name"))),
        }
    }
    compiled
}


