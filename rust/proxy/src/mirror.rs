//! Traffic mirroring: a share of a route's requests copied to a shadow cluster, fire and
//! forget. The copy runs as a task of its own: its answer is read and dropped, and its
//! slowness or failure never reaches the caller. Its `Host` (or `:authority`) is suffixed
//! `-shadow`, as Envoy does, so the shadow service can tell copies apart. A request body is
//! copied when its length is known and at most `MAX_MIRRORED_BODY`: it is then read whole
//! before forwarding (`buffered`); a longer one, or one of unknown length, streams upstream
//! once and the request is not copied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use meshproxy_config::{self as config, Problem, UpstreamProtocol};
use meshproxy_telemetry::rules::RuleStats;

use crate::body::Body;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::headers::absolute_uri;
use crate::pool::{copy_with, PoolError};

/// Copies in flight per route at most: beyond, a copy is dropped (and counted) rather than
/// queued, so that a shadow cluster that hangs holds a bounded number of tasks and connections.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 128;
/// The longest request body copied (64 KiB), read whole before the request is forwarded.
pub const MAX_MIRRORED_BODY: u64 = 64 * 1024;
/// How long a copy may take when its route has no timeout: a shadow cluster that hangs must not
/// hold tasks and connections for ever.
const TIMEOUT_WITHOUT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    percent: f64,
    in_flight: Arc<AtomicUsize>,
    stats: Arc<RuleStats>,
}

// === impl Mirror ===

impl Mirror {
    /// `at` is the route's path.
    pub fn compile(mirror: &config::Mirror, clusters: &HashMap<String, Arc<Cluster>>, stats: Arc<RuleStats>, at: &str, problems: &mut Vec<Problem>) -> Option<Mirror> {
        if !(0.0..=100.0).contains(&mirror.percent) {
            problems.push(Problem::new(format!("{at}.mirror.percent"), format!("{} is out of range; expected a number from 0 to 100", mirror.percent)));
            return None;
        }
        let Some(cluster) = clusters.get(&mirror.cluster) else {
            let mut defined: Vec<&str> = clusters.keys().map(String::as_str).collect();
            defined.sort_unstable();
            let defined = if defined.is_empty() { "none".to_string() } else { defined.join(", ") };
            problems.push(Problem::new(format!("{at}.mirror.cluster"), format!("unknown cluster '{}'; defined clusters: {defined}", mirror.cluster)));
            return None;
        };
        Some(Mirror { cluster: cluster.clone(), percent: mirror.percent, in_flight: Arc::default(), stats })
    }

    /// Whether this request is copied: it draws a copy, and has no body or one of a known
    /// length of at most `MAX_MIRRORED_BODY`.
    pub fn draws(&self, headers: &HeaderMap, bodyless: bool) -> bool {
        let small = || headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_some_and(|n| n <= MAX_MIRRORED_BODY);
        (self.percent >= 100.0 || (self.percent > 0.0 && rand::random::<f64>() * 100.0 < self.percent)) && (bodyless || small())
    }

    /// Sends a copy of `request` (as shaped for the route's cluster; its body, if any, read
    /// whole) to the shadow cluster; returns at once. The route's `timeout` bounds the copy's
    /// exchange too.
    pub fn send_copy(&self, request: &Request<Body>, timeout: Option<Duration>) {
        let timeout = timeout.unwrap_or(TIMEOUT_WITHOUT_ROUTE_TIMEOUT);
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_MIRRORS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.stats.mirrors_dropped_total.inc();
            return;
        }
        let Some(copy) = shadow_copy(request, &self.cluster) else {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.stats.mirror_failures_total.inc();
            return;
        };
        self.stats.mirrors_total.inc();
        let (cluster, in_flight, stats) = (self.cluster.clone(), self.in_flight.clone(), self.stats.clone());
        tokio::spawn(async move {
            if tokio::time::timeout(timeout, exchange(&cluster, copy)).await.ok().flatten().is_none() {
                stats.mirror_failures_total.inc();
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The request body read whole (what `draws` let through: at most `MAX_MIRRORED_BODY`), its
/// bytes counted as a streamed body's are.
pub async fn buffered(body: Incoming, received: Option<Arc<AtomicU64>>) -> Result<Body, ProxyError> {
    let unreadable = || ProxyError::BadRequest("the request body could not be read from the client");
    let limited = Limited::new(body, usize::try_from(MAX_MIRRORED_BODY).unwrap_or(usize::MAX));
    let bytes = limited.collect().await.map_err(|_| unreadable())?.to_bytes();
    if let Some(received) = received {
        received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    Ok(Body::Full(Some(bytes)))
}

/// The copy, shaped for the shadow cluster's protocol, its authority suffixed `-shadow`.
fn shadow_copy(request: &Request<Body>, cluster: &Cluster) -> Option<Request<Body>> {
    // A body read whole for the mirror is copied; a streamed one is not (`draws` let none through).
    let mut copy = copy_with(request, request.body().replay().unwrap_or(Body::Empty));
    let authority = request.uri().authority().cloned().or_else(|| request.headers().get(HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok()));
    let authority = authority.and_then(|a| Authority::try_from(shadow_host(a.as_str())).ok());
    let path_and_query = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    copy.headers_mut().remove(HOST);
    match (cluster.protocol, authority) {
        (UpstreamProtocol::Http1, authority) => {
            *copy.version_mut() = Version::HTTP_11;
            *copy.uri_mut() = Uri::from(path_and_query);
            if let Some(authority) = authority {
                copy.headers_mut().insert(HOST, HeaderValue::from_str(authority.as_str()).ok()?);
            }
        }
        (UpstreamProtocol::Http2, authority) => {
            *copy.version_mut() = Version::HTTP_2;
            *copy.uri_mut() = match authority {
                Some(authority) => absolute_uri(cluster.scheme(), authority, path_and_query).ok()?,
                None => Uri::from(path_and_query),
            };
        }
        // The compiler refuses a mirror to a tcp cluster.
        (UpstreamProtocol::Tcp, _) => return None,
    }
    Some(copy)
}

/// `orders:8080` is `orders-shadow:8080`; an IP literal stays as it is.
fn shadow_host(authority: &str) -> String {
    let (host, port) = authority.rsplit_once(':').map_or((authority, None), |(host, port)| (host, Some(port)));
    if authority.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() || host.is_empty() {
        return authority.to_string();
    }
    match port {
        Some(port) => format!("{host}-shadow:{port}"),
        None => format!("{host}-shadow"),
    }
}

/// Sends the copy to an endpoint of the shadow cluster and reads its answer to the end;
/// `None` when anything fails.
async fn exchange(cluster: &Cluster, mut copy: Request<Body>) -> Option<()> {
    let members = cluster.members();
    let endpoint = members.pick_avoiding(None)?;
    cluster.address_to(&mut copy, endpoint).ok()?;
    cluster.stats.upstream_requests_total.inc();
    let _in_flight = endpoint.start();
    let (response, lease) = match endpoint.state.pool().send(cluster.dial(endpoint), copy).await {
        Ok(answered) => answered,
        Err(PoolError::Connect { .. }) => {
            cluster.stats.connect_failures_total.inc();
            return None;
        }
        Err(_) => {
            cluster.stats.upstream_failures_total.inc();
            return None;
        }
    };
    cluster.stats.responses.count(response.status());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.ok()?;
    }
    // Read to its end: the connection goes back to the pool.
    drop(lease);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn the_shadow_host_is_suffixed_before_the_port() {
        assert_eq!(shadow_host("orders"), "orders-shadow");
        assert_eq!(shadow_host("orders.mesh:8080"), "orders.mesh-shadow:8080");
        assert_eq!(shadow_host("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(shadow_host("[::1]:80"), "[::1]:80");
    }
}
