//! What a listener does besides HTTP (`tcp::Mode`): a `tcp` listener's one route and its
//! cluster, an `auto` listener's `tcp_fallback`; and the combinations that cannot work, refused
//! with the field they sit at: an HTTP route to a `tcp` cluster (but a CONNECT route, whose
//! tunnel is opaque TCP), a TCP listener's authorization rule on HTTP fields, an HTTP health
//! check of a `tcp` cluster.

use std::collections::HashMap;
use std::sync::Arc;

use meshproxy_config::{self as config, capture, ListenerProtocol, Problem, UpstreamProtocol};
use meshproxy_proxy::cluster::Cluster;
use meshproxy_proxy::tcp::{Mode, TcpRoute};

/// How a capture listener's TCP routes are written, for the messages that refuse others.
const TCP_ROUTES: &str = "a TCP route of a capture listener has only match.original_destination and a tcp cluster: {match: {original_destination: [...]}, cluster: NAME}";

/// The listener's TCP mode, once its settings are found consistent.
pub(super) fn compile_tcp(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Mode {
    let opaque = listener.protocol == ListenerProtocol::Tcp || listener.tcp_fallback.is_some();
    if opaque {
        check_authorization(listener, at, problems);
    }
    if listener.original_destination {
        let (routes, default) = by_destination(listener, clusters, at, problems);
        let tcp_listener = listener.protocol == ListenerProtocol::Tcp;
        if tcp_listener && listener.routes.is_empty() {
            problems.push(Problem::new(format!("{at}.routes"), "a tcp listener needs a route: routes: [{cluster: NAME}]"));
        }
        if tcp_listener && listener.tcp_fallback.is_some() {
            problems.push(Problem::new(format!("{at}.tcp_fallback"), "a tcp listener sends every connection to its route's cluster; tcp_fallback is for auto listeners"));
        }
        if routes.is_empty() {
            // No route by destination: as without it (a tcp listener's one route, or detection).
            return if tcp_listener { default.map_or(Mode::Http, Mode::Always) } else { by_protocol(listener, clusters, at, problems) };
        }
        if listener.tls != config::ListenerTls::Disable {
            problems.push(Problem::new(format!("{at}.tls"), "routes by original destination take the app's plain-text connections (a capture listener's); set tls: disable"));
        }
        let then = if tcp_listener { default.map(Mode::Always) } else { Some(by_protocol(listener, clusters, at, problems)) };
        return Mode::Destinations { routes: routes.into(), then: then.map(Box::new) };
    }
    by_protocol(listener, clusters, at, problems)
}

/// The mode of a listener's protocol, once TCP routes (if any) have been looked at.
fn by_protocol(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Mode {
    match listener.protocol {
        ListenerProtocol::Tcp => {
            if listener.tcp_fallback.is_some() {
                problems.push(Problem::new(format!("{at}.tcp_fallback"), "a tcp listener sends every connection to its route's cluster; tcp_fallback is for auto listeners"));
            }
            tcp_route(listener, clusters, at, problems).map_or(Mode::Http, Mode::Always)
        }
        ListenerProtocol::Auto => detect(listener, clusters, at, problems),
        ListenerProtocol::Http1 | ListenerProtocol::Http2 => {
            check_http_routes(listener, clusters, at, problems);
            if listener.tcp_fallback.is_some() {
                problems.push(Problem::new(format!("{at}.tcp_fallback"), "needs protocol: auto, which tells HTTP from other traffic by the first bytes"));
            }
            Mode::Http
        }
    }
}

/// An `auto` listener's HTTP routes, and its `tcp_fallback` for what is not HTTP.
fn detect(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Mode {
    check_http_routes(listener, clusters, at, problems);
    let Some(name) = &listener.tcp_fallback else { return Mode::HttpOnly };
    if listener.detect_timeout.0 == 0 {
        problems.push(Problem::new(format!("{at}.detect_timeout"), "must be more than 0: a client silent this long goes to tcp_fallback"));
    }
    match tcp_cluster(name, clusters, &format!("{at}.tcp_fallback"), problems) {
        Some(fallback) => Mode::Detect { fallback, timeout: listener.detect_timeout.duration() },
        None => Mode::HttpOnly,
    }
}

/// How many of a listener's routes, from the first, route HTTP requests: all but an `auto`
/// capture listener's TCP routes, which follow them.
pub(super) fn http_route_count(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>) -> usize {
    match listener.protocol {
        ListenerProtocol::Tcp => 0,
        _ if !listener.original_destination => listener.routes.len(),
        _ => listener.routes.iter().position(|route| is_tcp_route(route, clusters)).unwrap_or(listener.routes.len()),
    }
}

/// A route of an `auto` capture listener to a `tcp` cluster: a TCP route (a CONNECT route is
/// an HTTP one, whatever its cluster).
fn is_tcp_route(route: &config::Route, clusters: &HashMap<String, Arc<Cluster>>) -> bool {
    !route.match_.connect
        && route.cluster.as_deref().and_then(|name| clusters.get(name)).is_some_and(|c| c.protocol == UpstreamProtocol::Tcp)
}

/// A capture listener's TCP routes, in order, and a `tcp` listener's last route without a
/// match (every other connection's cluster). On an `auto` listener they follow its HTTP routes.
fn by_destination(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> (Vec<TcpRoute>, Option<Arc<Cluster>>) {
    let tcp_listener = listener.protocol == ListenerProtocol::Tcp;
    let first = http_route_count(listener, clusters);
    let (mut routes, mut default) = (Vec::new(), None);
    for (j, route) in listener.routes.iter().enumerate().skip(first) {
        let at = format!("{at}.routes[{j}]");
        if !tcp_listener && !is_tcp_route(route, clusters) {
            problems.push(Problem::new(at, "an HTTP route comes before the TCP routes (those to tcp clusters) of an auto capture listener"));
            continue;
        }
        let only_destination = config::RouteMatch { original_destination: None, ..route.match_.clone() } == config::RouteMatch::default();
        for (_, field) in http_only(route).iter().filter(|(given, _)| *given) {
            problems.push(Problem::new(format!("{at}.{field}"), format!("a TCP connection carries no HTTP request; {TCP_ROUTES}")));
        }
        if !only_destination {
            problems.push(Problem::new(format!("{at}.match"), format!("a TCP connection carries no HTTP request; {TCP_ROUTES}")));
        }
        let Some(name) = &route.cluster else {
            problems.push(Problem::new(format!("{at}.cluster"), TCP_ROUTES));
            continue;
        };
        let cluster = tcp_cluster(name, clusters, &format!("{at}.cluster"), problems);
        match &route.match_.original_destination {
            None if tcp_listener && j + 1 == listener.routes.len() => default = cluster,
            None if tcp_listener => problems.push(Problem::new(format!("{at}.match"), "a route without match.original_destination takes every connection: only the last route may have none")),
            None => problems.push(Problem::new(format!("{at}.match.original_destination"), format!("required: an auto listener's TCP route is chosen by where the connection was going, before any bytes are read; {TCP_ROUTES}"))),
            Some(entries) => {
                let destinations = entries.iter().filter_map(|entry| capture::destination(entry).ok()).collect();
                if let Some(cluster) = cluster {
                    routes.push(TcpRoute { destinations, cluster });
                }
            }
        }
    }
    (routes, default)
}

/// The fields of a route that only an HTTP request can use.
fn http_only(route: &config::Route) -> [(bool, &'static str); 13] {
    [
        (route.split.is_some(), "split"),
        (route.redirect.is_some(), "redirect"),
        (route.direct_response.is_some(), "direct_response"),
        (route.prefix_rewrite.is_some(), "prefix_rewrite"),
        (route.regex_rewrite.is_some(), "regex_rewrite"),
        (route.host_rewrite.is_some(), "host_rewrite"),
        (route.rate_limit.is_some(), "rate_limit"),
        (route.fault.is_some(), "fault"),
        (route.mirror.is_some(), "mirror"),
        (route.request_headers != config::HeaderEdits::default(), "request_headers"),
        (route.response_headers != config::HeaderEdits::default(), "response_headers"),
        (!route.hash_policy.is_empty(), "hash_policy"),
        (route.retry.is_some(), "retry"),
    ]
}

/// A `tcp` cluster's health is checked by connecting (`tcp`), not by HTTP or gRPC requests.
pub(super) fn check_cluster(cluster: &config::Cluster, at: &str, problems: &mut Vec<Problem>) {
    let Some(check) = cluster.health_check.as_ref().filter(|_| cluster.protocol == UpstreamProtocol::Tcp) else { return };
    for (given, field) in [(check.http.is_some(), "http"), (check.grpc.is_some(), "grpc")] {
        if given {
            problems.push(Problem::new(format!("{at}.health_check.{field}"), "a tcp cluster carries no HTTP: check it with health_check.tcp"));
        }
    }
}

/// The cluster of a `tcp` listener's one route, which has nothing but `cluster`.
fn tcp_route(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Option<Arc<Cluster>> {
    const ONE_ROUTE: &str = "a tcp listener has exactly one route, with only a cluster: routes: [{cluster: NAME}]";
    let [route] = listener.routes.as_slice() else {
        problems.push(Problem::new(format!("{at}.routes"), ONE_ROUTE));
        return None;
    };
    let at = format!("{at}.routes[0]");
    let mut fields = vec![(route.match_ != config::RouteMatch::default(), "match")];
    fields.extend(http_only(route));
    for (_, field) in fields.iter().filter(|(given, _)| *given) {
        problems.push(Problem::new(format!("{at}.{field}"), format!("a tcp listener's connections carry no HTTP request; {ONE_ROUTE}")));
    }
    let Some(name) = &route.cluster else {
        problems.push(Problem::new(format!("{at}.cluster"), ONE_ROUTE));
        return None;
    };
    tcp_cluster(name, clusters, &format!("{at}.cluster"), problems)
}

/// The cluster `name`, which must exist and carry opaque TCP.
fn tcp_cluster(name: &str, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) -> Option<Arc<Cluster>> {
    match clusters.get(name) {
        None => {
            problems.push(Problem::new(at, format!("unknown cluster '{name}'")));
            None
        }
        Some(cluster) if cluster.protocol != UpstreamProtocol::Tcp => {
            problems.push(Problem::new(at, format!("cluster '{name}' is not a tcp cluster; opaque TCP goes to a cluster with protocol: tcp")));
            None
        }
        Some(cluster) => Some(cluster.clone()),
    }
}

/// An HTTP listener's routes send requests, which a `tcp` cluster cannot take; a CONNECT
/// route's tunnel, opaque TCP, can.
fn check_http_routes(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) {
    let is_tcp = |name: &str| clusters.get(name).is_some_and(|c| c.protocol == UpstreamProtocol::Tcp);
    let routes = listener.routes.iter().enumerate().take(http_route_count(listener, clusters));
    for (j, route) in routes.filter(|(_, route)| !route.match_.connect) {
        let named = route.cluster.iter().map(|name| (name, "cluster".to_string()));
        let split = route.split.iter().flatten().enumerate().map(|(k, w)| (&w.cluster, format!("split[{k}].cluster")));
        let mirror = route.mirror.iter().map(|m| (&m.cluster, "mirror.cluster".to_string()));
        for (name, field) in named.chain(split).chain(mirror).filter(|(name, _)| is_tcp(name)) {
            problems.push(Problem::new(
                format!("{at}.routes[{j}].{field}"),
                format!("cluster '{name}' carries opaque TCP (protocol: tcp); HTTP routes send to http1 or http2 clusters"),
            ));
        }
    }
}

/// A connection carried as opaque TCP has a peer identity and nothing else to authorize by.
fn check_authorization(listener: &config::Listener, at: &str, problems: &mut Vec<Problem>) {
    for (i, policy) in listener.authorization.iter().enumerate() {
        for (j, rule) in policy.rules.iter().enumerate() {
            let http_fields = [
                (rule.paths.is_some(), "paths"),
                (rule.methods.is_some(), "methods"),
                (!rule.headers.is_empty(), "headers"),
                (rule.not_paths.is_some(), "not_paths"),
                (rule.not_methods.is_some(), "not_methods"),
                (!rule.not_headers.is_empty(), "not_headers"),
            ];
            for (_, field) in http_fields.iter().filter(|(given, _)| *given) {
                problems.push(Problem::new(
                    format!("{at}.authorization[{i}].rules[{j}].{field}"),
                    "this listener carries opaque TCP connections, which have no HTTP fields; authorize them by identities or namespaces",
                ));
            }
        }
    }
}
