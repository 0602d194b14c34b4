//! Upgrades (WebSocket and the like): a request that asks to switch protocols is forwarded
//! with what it asks for, and once the upstream agrees the two connections become one tunnel
//! of bytes, both ways, until either side closes or it idles for the listener's
//! `idle_timeout`.
//!
//! An upgrade is asked for in two ways, and each hop speaks its own: HTTP/1.1 `Upgrade:
//! websocket` with `Connection: upgrade`, agreed with `101 Switching Protocols`; and over
//! HTTP/2, RFC 8441's extended CONNECT (`:method CONNECT`, `:protocol websocket`), agreed with
//! `200`. So the mTLS hop between sidecars (HTTP/2) carries an HTTP/1.1 client's WebSocket as
//! extended CONNECT, and the peer sidecar asks its app with HTTP/1.1 again. The other headers
//! (`sec-websocket-key`, `-accept`, `-protocol`...) travel end to end unchanged, as Envoy does;
//! a `sec-websocket-key` is made up only for an RFC 8441 client, which sends none, talking to
//! an HTTP/1.1 app, which needs one.
//!
//! Finding out whether a request asks is a look at bits the proxy computes anyway (`Present`)
//! and at its method: a plain request pays nothing else. Once agreed, the tunnel runs in a task
//! of its own (`Splice`), which owns the request's observation: the access log line, with the
//! bytes each way, is written when the tunnel ends, by itself or closed by its listener's drain.
//!
//! Under the cluster's circuit breakers an upgrade counts as a request (`max_requests`) and,
//! over HTTP/1.1, its connection of its own as a connection (`max_connections`), both for as
//! long as the tunnel is open; over HTTP/2 it is a stream of a pooled connection, which the
//! pool counts.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, UPGRADE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::Body;
use crate::breakers::{Held, Limit};
use crate::closing::Closing;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::headers::{remove_hop_by_hop, remove_present_hop_by_hop, Present};
use crate::idle::IdleTimeout;
use crate::observe::Observation;
use crate::observed::Upstream;
use crate::pool::{self, Connection, Dial};
use meshproxy_config::UpstreamProtocol;
use meshproxy_telemetry::stats::ListenerStats;
use meshproxy_telemetry::Reason;
use crate::route::Route;
use crate::snapshot::ListenerShared;

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");

/// What a request asks the proxy to tunnel.
#[derive(Debug)]
pub enum Tunnel {
    /// An upgrade to `protocol`: HTTP/1.1 `Upgrade`, or RFC 8441 extended CONNECT.
    Upgrade { protocol: HeaderValue, client: Version, downstream: OnUpgrade },
    /// `CONNECT host:port`: a TCP tunnel (see `connect`).
    Connect { client: Version, downstream: OnUpgrade },
}

/// A tunnel agreed on both sides, to be run once the response has gone to the client.
#[derive(Debug)]
pub struct Splice {
    downstream: OnUpgrade,
    upstream: Far,
    idle_timeout: Option<Duration>,
    /// A CONNECT tunnel, not an upgrade: counted apart.
    connect: bool,
    /// The place of the tunnel's upstream connection under the cluster's `max_connections`,
    /// for a connection of its own (CONNECT, HTTP/1.1 upgrade) to a cluster with breakers.
    /// Shared with the HTTP/1.1 connection's task, which holds it when the upgrade is refused.
    connection: Option<Arc<Held>>,
    /// The client's protocol: an HTTP/1.1 connection is handed over to the tunnel whole.
    client: Version,
}

/// The upstream side of a tunnel.
#[derive(Debug)]
pub enum Far {
    Upgraded(OnUpgrade),
    Tcp(tokio::net::TcpStream),
}

/// What a forwarded request comes back with: the response, what its body holds until it
/// ends, and for an agreed tunnel the tunnel to run.
pub type Forwarded = (Response<Body>, Option<Upstream>, Option<Box<Splice>>);

// === impl Tunnel ===

impl Tunnel {
    /// The tunnel a request asks for, if any, with the client's side of it. A look at the
    /// method and at whether `Upgrade` was among the names scanned; anything more only for a
    /// request that passes that look. Boxed: a request that asks for none carries a pointer,
    /// not the tunnel's size.
    pub fn requested(parts: &mut Parts, present: Present) -> Option<Box<Tunnel>> {
        let asked = asked(parts, present)?;
        let downstream = parts.extensions.remove::<OnUpgrade>()?;
        Some(Box::new(match asked {
            Some(protocol) => {
                // An RFC 8441 request is routed and authorized as the GET it stands for (as
                // Envoy does): a policy allowing GET to a path allows its WebSocket over either
                // protocol, and over the hop between sidecars.
                parts.method = Method::GET;
                Tunnel::Upgrade { protocol, client: parts.version, downstream }
            }
            None => Tunnel::Connect { client: parts.version, downstream },
        }))
    }

    pub fn is_connect(&self) -> bool {
        matches!(self, Tunnel::Connect { .. })
    }
}

/// What a request asks for: an upgrade to a protocol (`Some`), or a CONNECT tunnel (`None`).
/// `h2c` is not tunnelled: an upgrade of the hop itself, it is dropped with `Upgrade`.
fn asked(parts: &Parts, present: Present) -> Option<Option<HeaderValue>> {
    if parts.method == Method::CONNECT {
        return Some(match parts.extensions.get::<hyper::ext::Protocol>() {
            Some(protocol) => Some(HeaderValue::from_str(protocol.as_str()).ok()?),
            None => None,
        });
    }
    if !present.upgrade() || parts.version != Version::HTTP_11 || !connection_has_upgrade(&parts.headers) {
        return None;
    }
    let protocol = parts.headers.get(UPGRADE)?;
    if protocol.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    Some(Some(protocol.clone()))
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Forwards an upgrade on `route` to its `cluster` within the route's timeout (for the
/// upstream's answer), and edits the answer's headers as the route says.
pub async fn forward(
    route: &Route,
    cluster: &Cluster,
    request: Request<Body>,
    tunnel: Box<Tunnel>,
    idle_timeout: Option<Duration>,
    observation: &mut Observation,
) -> Result<Forwarded, ProxyError> {
    let Tunnel::Upgrade { protocol, client, downstream } = *tunnel else {
        return Err(ProxyError::BadRequest("not an upgrade"));
    };
    let asked = ask(cluster, request, protocol, client, downstream, idle_timeout, observation);
    let (mut response, upstream, splice) = match route.timeout {
        Some(limit) => tokio::time::timeout(limit, asked).await.map_err(|_| {
            cluster.stats.timeouts_total.inc();
            ProxyError::Timeout { cluster: cluster.name.to_string(), after: limit }
        })??,
        None => asked.await?,
    };
    // Refused (no tunnel): the upstream's answer is passed on, its framing checked as any.
    if splice.is_none() {
        let present = Present::scan(response.headers());
        if present.other_transfer_coding(response.headers()) {
            return Err(cluster.refuse_transfer_coding(upstream.and_then(|upstream| upstream.lease)));
        }
        remove_present_hop_by_hop(response.headers_mut(), present);
    }
    response.extensions_mut().remove::<hyper::ext::ReasonPhrase>();
    route.response_headers.apply(response.headers_mut());
    Ok((response, upstream, splice))
}

/// Sends an upgrade request to an endpoint of the cluster, as the cluster's protocol asks for
/// it, and answers the client as its own protocol expects. An upstream that refuses (any
/// other answer) has its response passed on as it is; one that answers `101` without
/// switching to the protocol asked for is a broken upstream: 502, and no tunnel.
async fn ask(
    cluster: &Cluster,
    mut request: Request<Body>,
    protocol: HeaderValue,
    client: Version,
    downstream: OnUpgrade,
    idle_timeout: Option<Duration>,
    observation: &mut Observation,
) -> Result<Forwarded, ProxyError> {
    match cluster.protocol {
        // (No HTTP route sends to a tcp cluster: the compiler refuses it.)
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {
            let headers = request.headers_mut();
            headers.insert(UPGRADE, protocol.clone());
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") && !headers.contains_key(SEC_WEBSOCKET_KEY) {
                headers.insert(SEC_WEBSOCKET_KEY, websocket_key());
            }
        }
        UpstreamProtocol::Http2 => {
            *request.method_mut() = Method::CONNECT;
            let protocol = protocol.to_str().map_err(|_| ProxyError::BadRequest("the Upgrade protocol is not text"))?;
            request.extensions_mut().insert(hyper::ext::Protocol::from(protocol));
        }
    }
    let (mut response, upstream, connection) = send(cluster, request, observation).await?;
    let agreed = match cluster.protocol {
        UpstreamProtocol::Http1 if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let switched_to = response.headers().get(UPGRADE);
            if !switched_to.is_some_and(|to| to.as_bytes().eq_ignore_ascii_case(protocol.as_bytes())) {
                cluster.stats.upstream_failures_total.inc();
                return Err(ProxyError::UpstreamFailure {
                    cluster: cluster.name.to_string(),
                    endpoint: String::new(),
                    cause: format!("answered 101 without switching to the protocol asked for ({})", String::from_utf8_lossy(protocol.as_bytes())),
                });
            }
            true
        }
        UpstreamProtocol::Http2 => response.status().is_success(),
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => false,
    };
    if !agreed {
        return Ok((response.map(|body| Body::Streamed { body, received: None }), Some(upstream), None));
    }
    let far = hyper::upgrade::on(&mut response);
    let (parts, _) = response.into_parts();
    let answer = agreement(parts.headers, client, &protocol);
    cluster.stats.tunnels_total.inc();
    let splice = Splice { downstream, upstream: Far::Upgraded(far), idle_timeout, connect: false, connection, client };
    Ok((answer, Some(upstream), Some(Box::new(splice))))
}

/// The client's answer to an agreed upgrade: the upstream's headers, and `101` with
/// `Upgrade` for an HTTP/1.1 client or `200` for an RFC 8441 one.
fn agreement(mut headers: HeaderMap, client: Version, protocol: &HeaderValue) -> Response<Body> {
    remove_hop_by_hop(&mut headers);
    headers.remove(CONTENT_LENGTH);
    let mut answer = Response::new(Body::Empty);
    if client == Version::HTTP_11 {
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        headers.insert(UPGRADE, protocol.clone());
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    *answer.headers_mut() = headers;
    answer
}

/// One try on one endpoint: upgrades are not retried, their requests having no body to send
/// again but opening a session an upstream may have begun. An HTTP/1.1 upgrade gets a new
/// connection of its own (it leaves the pool's reuse once switched), which comes back with its
/// place under the breakers; an HTTP/2 one is a stream of the pooled connection.
async fn send(
    cluster: &Cluster,
    mut request: Request<Body>,
    observation: &mut Observation,
) -> Result<(Response<hyper::body::Incoming>, Upstream, Option<Arc<Held>>), ProxyError> {
    let admitted = cluster.hold(Limit::Requests)?;
    let mut connection = None;
    let members = cluster.members();
    let endpoint = members.pick_for(None, None).ok_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() })?;
    observation.note_upstream(&endpoint.address);
    cluster.address_to(&mut request, endpoint)?;
    cluster.stats.upstream_requests_total.inc();
    let in_flight = endpoint.start();
    let dial = cluster.dial(endpoint);
    let failed = |cause: String| ProxyError::UpstreamFailure { cluster: cluster.name.to_string(), endpoint: endpoint.address.to_string(), cause };
    let response = match cluster.protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {
            connection = cluster.hold(Limit::Connections)?.map(Arc::new);
            let mut sender = connect_upgradable(dial, connection.clone()).await.map_err(|cause| {
                cluster.stats.connect_failures_total.inc();
                ProxyError::ConnectFailure { cluster: cluster.name.to_string(), endpoint: endpoint.address.to_string(), cause }
            })?;
            sender.send_request(request).await.map_err(|e| {
                cluster.stats.upstream_failures_total.inc();
                failed(e.to_string())
            })?
        }
        UpstreamProtocol::Http2 => match endpoint.state.pool().send(dial, request).await {
            Ok((response, _)) => response,
            Err(pool::PoolError::Connect { cause, .. }) => {
                cluster.stats.connect_failures_total.inc();
                return Err(ProxyError::ConnectFailure { cluster: cluster.name.to_string(), endpoint: endpoint.address.to_string(), cause: cause.to_string() });
            }
            Err(pool::PoolError::Overflow(overflow)) => return Err(cluster.overflow(overflow)),
            Err(other) => {
                cluster.stats.upstream_failures_total.inc();
                return Err(failed(format!("{other:?}")));
            }
        },
    };
    cluster.stats.responses.count(response.status());
    Ok((response, Upstream { in_flight: Some(in_flight), lease: None, admitted, timer: None }, connection))
}

/// A new HTTP/1.1 connection that hands its bytes over once the upstream switches protocols.
/// Its task holds `held` while it serves the exchange (a refused upgrade's response).
async fn connect_upgradable(dial: Dial<'_>, held: Option<Arc<Held>>) -> Result<hyper::client::conn::http1::SendRequest<Body>, String> {
    async fn handshake<S>(stream: S, held: Option<Arc<Held>>) -> Result<hyper::client::conn::http1::SendRequest<Body>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _held = held;
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }
    match pool::dial(dial).await.map_err(|e| e.to_string())? {
        Connection::Plain(stream) => handshake(stream, held).await,
        Connection::Tls(stream) => handshake(stream, held).await,
    }
}

/// A `sec-websocket-key` (RFC 6455 §4.1): 16 random bytes, base64.
fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: [u8; 16] = rand::random();
    let mut text = Vec::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            text.push(if i <= chunk.len() { ALPHABET[sextet as usize] } else { b'=' });
        }
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

// === impl Splice ===

impl Splice {
    pub fn connect(
        downstream: OnUpgrade,
        client: Version,
        stream: tokio::net::TcpStream,
        idle_timeout: Option<Duration>,
        connection: Option<Arc<Held>>,
    ) -> Splice {
        Splice { downstream, upstream: Far::Tcp(stream), idle_timeout, connect: true, connection, client }
    }

    /// Runs the tunnel in a task of its own, once the client has had its answer, until it
    /// ends or the listener's drain closes it. The observation (and what the upstream's
    /// response held, and the tunnel's places under the cluster's breakers) is finished when
    /// the tunnel ends.
    pub fn run(self, observation: Observation, upstream: Option<Upstream>, listener: &ListenerShared, stats: &Arc<ListenerStats>) {
        if self.connect {
            stats.connects_total.inc();
        } else {
            stats.upgrades_total.inc();
        }
        let (mut closing, engine_stats) = (listener.closing(), listener.engine_stats.clone());
        // An HTTP/1.1 connection handed over to its tunnel is still open: counted so until the
        // tunnel ends (a drain waits for it). Counted before hyper lets go of the connection,
        // so never zero meanwhile. An HTTP/2 tunnel is a stream of a connection counted anyway.
        let still_open = (self.client == Version::HTTP_11).then(|| StillOpen::new(stats));
        tokio::spawn(async move {
            let mut observation = observation;
            let (_connection, _still_open) = (self.connection, still_open);
            // The client went away before its answer was written: nothing to tunnel.
            let Ok(near) = self.downstream.await else { return };
            let near = Counted::new(TokioIo::new(near));
            let (counted, drained) = match self.upstream {
                Far::Tcp(far) => pump(near, far, self.idle_timeout, &mut closing).await,
                Far::Upgraded(far) => match far.await {
                    Ok(far) => pump(near, TokioIo::new(far), self.idle_timeout, &mut closing).await,
                    Err(_) => (near, false),
                },
            };
            if drained {
                engine_stats.count_error(Reason::Drained);
                observation.error = Some(Reason::Drained);
            }
            observation.count_request_bytes().fetch_add(counted.read, std::sync::atomic::Ordering::Relaxed);
            observation.sent(usize::try_from(counted.written).unwrap_or(usize::MAX));
            drop(upstream);
        });
    }
}

/// An HTTP/1.1 client connection counted as open while its tunnel runs.
#[derive(Debug)]
struct StillOpen(Arc<ListenerStats>);

impl StillOpen {
    fn new(stats: &Arc<ListenerStats>) -> StillOpen {
        stats.connections_active.inc();
        StillOpen(stats.clone())
    }
}

impl Drop for StillOpen {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

/// Copies both ways until both sides have closed, one fails, (with a timeout) no byte moved for
/// that long, or the listener's drain closes the tunnel (then `true`); returns the client's
/// side with its counts.
async fn pump<N, F>(near: Counted<N>, mut far: F, idle_timeout: Option<Duration>, closing: &mut Closing) -> (Counted<N>, bool)
where
    N: AsyncRead + AsyncWrite + Unpin,
    F: AsyncRead + AsyncWrite + Unpin,
{
    macro_rules! copy {
        ($near:expr) => {
            tokio::select! {
                _ = tokio::io::copy_bidirectional($near, &mut far) => false,
                () = closing.closed() => true,
            }
        };
    }
    match idle_timeout {
        Some(timeout) => {
            let mut near = IdleTimeout::new(near, timeout);
            let drained = copy!(&mut near);
            (near.into_inner(), drained)
        }
        None => {
            let mut near = near;
            let drained = copy!(&mut near);
            (near, drained)
        }
    }
}

/// The client's side of a tunnel, counting the bytes read from it and written to it.
struct Counted<I> {
    io: I,
    read: u64,
    written: u64,
}

impl<I> Counted<I> {
    fn new(io: I) -> Counted<I> {
        Counted { io, read: 0, written: 0 }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        this.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            this.written += n as u64;
        }
        polled
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_websocket_key_is_16_bytes_in_base64() {
        let key = websocket_key();
        assert_eq!(key.len(), 24);
        assert!(key.as_bytes().ends_with(b"=="));
        assert_ne!(key, websocket_key());
    }

    #[test]
    fn an_upgrade_is_asked_with_upgrade_and_connection_or_extended_connect() {
        let asks = |request: Request<()>| {
            let (parts, ()) = request.into_parts();
            asked(&parts, Present::scan(&parts.headers))
        };
        let ws = asks(Request::get("/chat").header(UPGRADE, "websocket").header(CONNECTION, "keep-alive, Upgrade").body(()).unwrap_or_default());
        assert_eq!(ws, Some(Some(HeaderValue::from_static("websocket"))));
        assert_eq!(asks(Request::get("/chat").header(UPGRADE, "websocket").body(()).unwrap_or_default()), None, "without Connection: upgrade");
        assert_eq!(asks(Request::get("/").header(UPGRADE, "h2c").header(CONNECTION, "upgrade").body(()).unwrap_or_default()), None);
        assert_eq!(asks(Request::connect("example.com:443").body(()).unwrap_or_default()), Some(None));
        let mut extended = Request::connect("https://example.com/chat").version(Version::HTTP_2).body(()).unwrap_or_default();
        extended.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(asks(extended), Some(Some(HeaderValue::from_static("websocket"))));
        assert_eq!(asks(Request::get("/").body(()).unwrap_or_default()), None);
    }
}
