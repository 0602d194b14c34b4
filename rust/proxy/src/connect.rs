//! CONNECT tunnels, for clients told `HTTPS_PROXY=http://<listener>`: `CONNECT host:port`
//! matched by a route with `match: {connect: true}` (and `host`, `ports` to say which
//! destinations are allowed) opens a TCP connection, and the client's bytes (usually its own
//! TLS) flow through it as they are. Where to: an endpoint of the route's cluster; or, when
//! that cluster has `original_destination: true`, the `host:port` the CONNECT names itself (an
//! IP address, or a name resolved within the cluster's `connect_timeout`), as Envoy's dynamic
//! forward proxy. A CONNECT no route matches is answered 403 `connect_denied`: a proxy that
//! tunnels anywhere it is asked is an open relay. As Envoy's `connect_matcher` with
//! `upgrade_configs: CONNECT`.
//!
//! A tunnel counts under the cluster's circuit breakers as a request (`max_requests`) and a
//! connection (`max_connections`), for as long as it is open.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Response, StatusCode};

use crate::body::Body;
use crate::breakers::Limit;
use crate::cluster::Cluster;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::members::Members;
use crate::observe::Observation;
use crate::observed::Upstream;
use crate::pool::{self, Connection, Dial};
use crate::upgrade::{Forwarded, Splice, Tunnel};

/// A name's addresses tried in turn, this many at most (`localhost`: `::1` and `127.0.0.1`).
const ADDRESSES_TRIED: usize = 3;

/// Opens the tunnel's TCP connection (plain: the client's own TLS goes through it), within the
/// cluster's connect timeout, and answers the client `200`. `authority` is the CONNECT's.
pub async fn open(
    cluster: &Cluster,
    tunnel: Box<Tunnel>,
    authority: Option<&Authority>,
    idle_timeout: Option<Duration>,
    observation: &mut Observation,
) -> Result<Forwarded, ProxyError> {
    let Tunnel::Connect { client, downstream } = *tunnel else {
        return Err(ProxyError::BadRequest("not a CONNECT"));
    };
    let admitted = cluster.hold(Limit::Requests)?;
    let connection = cluster.hold(Limit::Connections)?;
    let candidates: Vec<Arc<Members>> = match &cluster.passthrough {
        None => vec![cluster.members()],
        Some(passthrough) => {
            let addresses = requested(authority, cluster.connect_timeout).await?;
            addresses.into_iter().take(ADDRESSES_TRIED).map(|address| passthrough.members(Some(address))).collect()
        }
    };
    let mut failed = None;
    for members in &candidates {
        let endpoint = members.pick_for(None, None).ok_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() })?;
        let in_flight = endpoint.start();
        match connect(cluster, endpoint, observation).await {
            Ok(stream) => {
                cluster.stats.tunnels_total.inc();
                let mut answer = Response::new(Body::Empty);
                *answer.status_mut() = StatusCode::OK;
                let upstream = Upstream { in_flight: Some(in_flight), lease: None, admitted, timer: None };
                let splice = Splice::connect(downstream, client, stream, idle_timeout, connection.map(Arc::new));
                return Ok((answer, Some(upstream), Some(Box::new(splice))));
            }
            Err(error) => failed = Some(error),
        }
    }
    Err(failed.unwrap_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() }))
}

/// A plain TCP connection to `endpoint`, the cluster's TLS settings left out.
async fn connect(cluster: &Cluster, endpoint: &Endpoint, observation: &mut Observation) -> Result<tokio::net::TcpStream, ProxyError> {
    observation.note_upstream(&endpoint.address);
    cluster.stats.upstream_requests_total.inc();
    let dial = Dial { tls: None, ..cluster.dial(endpoint) };
    match pool::dial(dial).await {
        Ok(Connection::Plain(stream)) => Ok(stream),
        // Not made: a dial without TLS settings makes a plain connection.
        Ok(Connection::Tls(_)) => Err(ProxyError::BadRequest("a CONNECT tunnel is plain TCP")),
        Err(cause) => {
            cluster.stats.connect_failures_total.inc();
            Err(ProxyError::ConnectFailure { cluster: cluster.name.to_string(), endpoint: endpoint.address.to_string(), cause: cause.to_string() })
        }
    }
}

/// The addresses of the `host:port` a CONNECT names: an IP address as it is, a name as the
/// system's resolver answers within `timeout`.
async fn requested(authority: Option<&Authority>, timeout: Duration) -> Result<Vec<SocketAddr>, ProxyError> {
    // RFC 9110 §9.3.6: the target is host:port; port 0 reaches nothing.
    let (Some(authority), Some(port)) = (authority, authority.and_then(Authority::port_u16).filter(|port| *port != 0)) else {
        return Err(ProxyError::BadRequest("a CONNECT names host:port (port 1-65535)"));
    };
    let host = authority.host();
    // `[::1]` in an authority; the brackets are not part of the address.
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let failed = |cause: String| ProxyError::DnsFailure { host: host.to_string(), cause };
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(failed(format!("no answer within {}ms (the cluster's connect_timeout)", timeout.as_millis()))),
        Ok(Err(cause)) => Err(failed(cause.to_string())),
        Ok(Ok(found)) => {
            let addresses: Vec<SocketAddr> = found.collect();
            if addresses.is_empty() {
                return Err(failed("no address".to_string()));
            }
            Ok(addresses)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn addresses(authority: &str) -> Result<Vec<SocketAddr>, ProxyError> {
        let parsed = authority.parse::<Authority>().ok();
        requested(parsed.as_ref(), Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn an_address_is_taken_as_it_is_and_a_name_is_resolved() {
        let four = addresses("127.0.0.1:8443").await.map_err(|e| e.to_string());
        assert_eq!(four, Ok(vec![SocketAddr::from(([127, 0, 0, 1], 8443))]));
        let six = addresses("[::1]:443").await.map_err(|e| e.to_string());
        assert_eq!(six, Ok(vec!["[::1]:443".parse().unwrap_or_else(|e| panic!("{e}"))]));
        let named = addresses("localhost:8443").await.unwrap_or_default();
        assert!(!named.is_empty() && named.iter().all(|a| a.ip().is_loopback() && a.port() == 8443), "{named:?}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_or_no_port_is_refused() {
        let unknown = addresses("no-such-host.invalid:443").await;
        assert!(matches!(unknown, Err(ProxyError::DnsFailure { .. })), "{unknown:?}");
        assert!(matches!(addresses("example.com").await, Err(ProxyError::BadRequest(_))));
        assert!(matches!(addresses("example.com:0").await, Err(ProxyError::BadRequest(_))));
    }
}
