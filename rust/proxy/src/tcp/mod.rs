//! Opaque TCP: a connection of a `tcp` listener (or one an `auto` listener's `detect` gave to
//! its `tcp_fallback`) is authorized by its peer's identity, admitted by the listener's
//! `rate_limit` (a token per connection) when it has one, given an endpoint of the cluster
//! by its balancer (connecting again elsewhere when a connect fails), and its bytes are copied
//! both ways until both sides have closed (`relay`), or its listener's drain closes it. One
//! access log line per connection.

mod detect;
pub mod mode;
mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Method, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use meshproxy_config::spiffe::SpiffeId;
use meshproxy_telemetry::stats::Stats;
use meshproxy_telemetry::{Reason, Record};

use crate::authz::{AuthzRequest, Decision};
use crate::breakers::Limit;
use crate::closing::Closing;
use crate::cluster::Cluster;
use crate::outlier;
use crate::pool::{self, Connection};
use crate::snapshot::ListenerSnapshot;
pub use detect::{classify, Seen};
pub use mode::{Mode, TcpRoute};
use relay::Relayed;

/// A connect that fails is tried again on another endpoint, this many times in all at most.
const CONNECT_ATTEMPTS: usize = 3;

/// What a connection turned out to be.
pub enum Dispatch {
    Http(TcpStream),
    /// Served as opaque TCP, or closed.
    Done,
}

/// One downstream connection to serve as opaque TCP.
pub struct Downstream<'a> {
    pub listener: &'a ListenerSnapshot,
    pub client: SocketAddr,
    pub peer: Option<SpiffeId>,
    /// Where the connection was going, on a capture listener (`original_destination: true`):
    /// what TCP routes match on and a passthrough cluster connects to.
    pub destination: Option<SocketAddr>,
    pub engine_stats: &'a Stats,
    /// Closes the connection once its listener's drain has lasted the drain timeout.
    pub closing: Closing,
}

/// How a connection ended, for its counters and access log line.
struct Ending {
    upstream: Option<Arc<str>>,
    relayed: Relayed,
    reason: Option<Reason>,
}

/// Reads the first bytes of a plain-text connection as its listener's mode asks: HTTP goes on
/// to hyper, the rest is served here.
pub async fn dispatch(stream: TcpStream, connection: Downstream<'_>) -> Dispatch {
    let mode = match connection.listener.tcp.by_destination(connection.destination) {
        Ok(cluster) => {
            serve(stream, cluster, connection).await;
            return Dispatch::Done;
        }
        Err(Some(mode)) => mode,
        Err(None) => return Dispatch::Done,
    };
    match mode {
        Mode::Http => Dispatch::Http(stream),
        Mode::HttpOnly => match tokio::time::timeout(detect::SILENT_CLIENT, stream.readable()).await {
            Ok(Ok(())) => Dispatch::Http(stream),
            _ => Dispatch::Done,
        },
        Mode::Always(cluster) => {
            serve(stream, cluster, connection).await;
            Dispatch::Done
        }
        Mode::Detect { fallback, timeout } => match detect::first_bytes(&stream, *timeout).await {
            Seen::Http | Seen::NeedMore => Dispatch::Http(stream),
            Seen::Tls | Seen::Other | Seen::Silent => {
                serve(stream, fallback, connection).await;
                Dispatch::Done
            }
            Seen::Closed => Dispatch::Done,
        },
        // `by_destination` never gives it.
        Mode::Destinations { .. } => Dispatch::Done,
    }
}

/// Serves one connection as opaque TCP to `cluster`, to the end.
pub async fn serve<I>(io: I, cluster: &Arc<Cluster>, mut connection: Downstream<'_>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (started, since) = (Instant::now(), SystemTime::now());
    let ending = proxy(io, cluster, &mut connection).await;
    let Downstream { listener, client, peer, engine_stats, .. } = connection;
    let Relayed { received, sent, .. } = ending.relayed;
    listener.stats.tcp_bytes_received_total.add(received);
    listener.stats.tcp_bytes_sent_total.add(sent);
    cluster.stats.tcp_bytes_sent_total.add(ending.relayed.upstream_sent);
    cluster.stats.tcp_bytes_received_total.add(ending.relayed.upstream_received);
    if let Some(reason) = ending.reason {
        engine_stats.count_error(reason);
    }
    let wanted = listener.telemetry.wants_record(None);
    if wanted.any() {
        let record = Record {
            start: since,
            duration: started.elapsed(),
            listener: listener.name.clone(),
            direction: listener.direction,
            protocol: Version::HTTP_11,
            method: Method::CONNECT,
            target: Uri::default(),
            host: None,
            status: 0,
            route: None,
            cluster: Some(cluster.name.clone()),
            upstream_address: ending.upstream,
            bytes_in: received,
            bytes_out: sent,
            request_id: None,
            trace_id: None,
            span_id: None,
            client_address: client.ip(),
            peer_identity: peer,
            error: ending.reason,
            grpc_status: None,
            tcp: true,
        };
        listener.telemetry.finish(record, None, wanted);
    }
}

async fn proxy<I>(io: I, cluster: &Arc<Cluster>, connection: &mut Downstream<'_>) -> Ending
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Downstream { listener, peer, destination, closing, .. } = connection;
    let refused = |reason| Ending { upstream: None, relayed: Relayed::default(), reason: Some(reason) };
    if !listener.authz.is_empty() {
        // A TCP listener's rules name identities only (the compiler refuses the rest).
        let headers = HeaderMap::new();
        let request = AuthzRequest { peer: peer.as_ref(), method: &Method::CONNECT, path: "", headers: &headers };
        if let Decision::Deny { .. } = listener.authz.decide(&request) {
            return refused(Reason::Denied);
        }
    }
    // A listener's rate_limit: a token per connection, taken after authorization as a request
    // takes one; with none left the connection is closed before any upstream is dialled.
    if let Some(limit) = &listener.rate_limit {
        if limit.admit().is_err() {
            return refused(Reason::RateLimited);
        }
    }
    // Held for the connection's life: `max_connections` counts opaque connections too.
    let _held = match cluster.breakers.as_ref().map(|breakers| breakers.take(Limit::Connections)).transpose() {
        Ok(held) => held,
        Err(overflow) => {
            cluster.overflow(overflow);
            return refused(Reason::Overflow);
        }
    };
    // A passthrough cluster (`original_destination: true`) connects where the client was going.
    let members = match &cluster.passthrough {
        None => cluster.members(),
        Some(passthrough) => passthrough.members(*destination),
    };
    let mut avoid: Option<Arc<str>> = None;
    for _ in 0..CONNECT_ATTEMPTS.min(members.endpoints.len().max(1)) {
        let Some(endpoint) = members.pick_avoiding(avoid.as_deref()) else { return refused(Reason::NoHealthyEndpoint) };
        let _in_flight = endpoint.start();
        let connecting = Instant::now();
        match pool::dial(cluster.dial(endpoint)).await {
            Ok(upstream) => {
                endpoint.observe_latency(connecting.elapsed());
                outlier::connection(cluster, endpoint, true);
                cluster.stats.tcp_connections_total.inc();
                let timeout = listener.idle_timeout;
                let relayed = match upstream {
                    Connection::Plain(stream) => relay::relay(io, stream, timeout, closing).await,
                    Connection::Tls(stream) => relay::relay(io, stream, timeout, closing).await,
                };
                let reason = relayed.ended;
                return Ending { upstream: Some(endpoint.address.clone()), relayed, reason };
            }
            Err(_) => {
                cluster.stats.connect_failures_total.inc();
                outlier::connection(cluster, endpoint, false);
                avoid = Some(endpoint.address.clone());
            }
        }
    }
    Ending { upstream: avoid, relayed: Relayed::default(), reason: Some(Reason::ConnectFailure) }
}
