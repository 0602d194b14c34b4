//! CONNECT routes (`match: {connect: true}`) and their clusters. A CONNECT tunnel is opaque
//! TCP, so it may go to a `tcp` cluster as well as to an HTTP one (whose TLS it leaves out).
//! To a cluster with `original_destination: true` it goes to the `host:port` the client names:
//! the route's `host` or `ports` must then say which are allowed, or the proxy would tunnel
//! anywhere it is asked (an open relay).

use std::collections::HashMap;
use std::sync::Arc;

use meshproxy_config::{self as config, Problem};
use meshproxy_proxy::cluster::Cluster;

/// A CONNECT route to a passthrough cluster that allows every destination is refused.
pub(super) fn check_connect_routes(listener: &config::Listener, clusters: &HashMap<String, Arc<Cluster>>, at: &str, problems: &mut Vec<Problem>) {
    let passthrough = |name: &str| clusters.get(name).is_some_and(|cluster| cluster.passthrough.is_some());
    for (j, route) in listener.routes.iter().enumerate().filter(|(_, route)| route.match_.connect) {
        if route.match_.host.is_some() || route.match_.ports.is_some() {
            continue;
        }
        let mut named = route.cluster.iter().chain(route.split.iter().flatten().map(|target| &target.cluster));
        if let Some(name) = named.find(|name| passthrough(name)) {
            problems.push(Problem::new(
                format!("{at}.routes[{j}].match"),
                format!(
                    "cluster '{name}' has original_destination: true, so a CONNECT goes to the host:port it names; \
                     give host or ports to say which are allowed (without, any destination would be: an open relay)"
                ),
            ));
        }
    }
}
