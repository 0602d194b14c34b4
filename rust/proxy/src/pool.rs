//! The connections of one endpoint: idle HTTP/1.1 keep-alive connections, one at a time per
//! request, and one multiplexed HTTP/2 connection shared by all requests. A pool belongs to the
//! endpoint's state, so it survives config swaps with the endpoint. Connections unused for their
//! cluster's `idle_timeout` are closed (`sweep`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::Body;
use crate::breakers::{Breakers, Held, Limit, Overflow};
use meshproxy_config::UpstreamProtocol;
use crate::executor::{spawn_boxed, BoxingExecutor};
use crate::sweep::{self, Looks, Sweep};
use meshproxy_tls::outbound::UpstreamTls;
use meshproxy_tls::refusal::Refused;

/// Idle HTTP/1.1 connections kept per endpoint and worker; more are closed when they finish.
/// Above the concurrency a worker sees (h2c clients multiplex hundreds of requests onto a few
/// connections, each needing its own upstream HTTP/1.1 connection): a lower cap closed and
/// reopened connections under steady load (256 churned 1 connection per 26 requests at 512
/// streams in flight).
const MAX_IDLE: usize = 1024;
/// A connection idle longer than this may be being closed by its upstream right now; see
/// `send_http1`.
const STALE_RISK: Duration = Duration::from_millis(50);
/// How often a request handed back unsent by closing HTTP/2 connections is tried in all.
const MAX_UNSENT_ATTEMPTS: usize = 4;

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Option<SharedHttp2>>,
    /// Whether a task closes this pool's connections once unused for their idle timeout.
    swept: std::sync::atomic::AtomicBool,
    /// Held while an HTTP/2 connection is being made, so concurrent requests share one.
    connecting: tokio::sync::Mutex<()>,
    /// Numbers HTTP/2 connections, so a failure retires the connection it happened on only.
    connections_made: AtomicU64,
}

/// The HTTP/2 connection requests share, and its number.
#[derive(Debug, Clone)]
struct SharedHttp2 {
    id: u64,
    sender: http2::SendRequest<Body>,
    /// Its cluster's `idle_timeout`.
    idle_timeout: Duration,
    /// Whether a request took it since the sweep last looked (see `sweep`).
    used: bool,
}

/// The HTTP/1.1 connection a response is being read from, until the response body ends.
#[derive(Debug)]
pub struct Lease {
    sender: Option<http1::SendRequest<Body>>,
    pool: Weak<Pool>,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
    /// Its cluster's `idle_timeout`: unused for this long, it is closed.
    timeout: Duration,
}

/// How to reach an endpoint: from its cluster, which may differ between clusters listing it.
#[derive(Debug, Clone, Copy)]
pub struct Dial<'a> {
    pub address: &'a str,
    pub protocol: UpstreamProtocol,
    /// Covers the TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
    /// A pooled connection unused for this long is closed.
    pub idle_timeout: Duration,
    pub tls: Option<&'a UpstreamTls>,
    /// The cluster's circuit breakers: a connection to make, and a request waiting for it,
    /// count against them.
    pub breakers: Option<&'a Arc<Breakers>>,
}

#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made; nothing was sent, and the request comes back to go
    /// elsewhere.
    Connect { cause: ConnectError, unsent: Box<Request<Body>> },
    /// The upstream refused the request without processing it (HTTP/2 REFUSED_STREAM, or a
    /// graceful GOAWAY that left the stream out), or its connection ended before sending it:
    /// safe to send again.
    Refused(hyper::Error),
    /// The exchange failed on an established connection.
    Exchange(hyper::Error),
    /// No response headers within the retry policy's per-try timeout (never from the pool).
    TimedOut(Duration),
    /// A new connection was needed, and the cluster's circuit breakers allow no more
    /// connections, or no more requests waiting for one.
    Overflow(Overflow),
}

// === impl Pool ===

impl Pool {
    /// Sends the request on a connection of the pool. An HTTP/1.1 response comes with the lease
    /// of its connection, to hand to the response body: the connection goes back to the pool when
    /// the body ends. Boxed, the lease adds a pointer to what every response carries (HTTP/2
    /// ones included) rather than its size, which costs more in moves than the box.
    pub async fn send(self: &Arc<Self>, dial: Dial<'_>, request: Request<Body>) -> Result<(Response<Incoming>, Option<Box<Lease>>), PoolError> {
        match dial.protocol {
            UpstreamProtocol::Http1 => self.send_http1(dial, request).await.map(|(response, lease)| (response, Some(lease))),
            UpstreamProtocol::Http2 => self.send_http2(dial, request).await.map(|response| (response, None)),
            // The compiler refuses HTTP routes to tcp clusters; nothing is sent should one come.
            UpstreamProtocol::Tcp => Err(Self::not_http(request)),
        }
    }

    /// Out of line and cold: what `send` does on every request stays small.
    #[cold]
    #[inline(never)]
    fn not_http(request: Request<Body>) -> PoolError {
        let cause = ConnectError::Socket(std::io::Error::other("a tcp cluster carries no HTTP requests"));
        PoolError::Connect { cause, unsent: Box::new(request) }
    }

    async fn send_http1(self: &Arc<Self>, dial: Dial<'_>, request: Request<Body>) -> Result<(Response<Incoming>, Box<Lease>), PoolError> {
        let request = match self.take_idle() {
            Some((mut sender, idle_for)) => {
                // An upstream may close a keep-alive connection just as the request goes out on
                // it, and then the request is lost with no response begun. Upstreams do that
                // after some idle time (seconds, typically), so a request that may be sent twice
                // keeps a copy when its connection sat idle for a while. Busy connections,
                // idle for microseconds, skip the copy.
                let spare = (idle_for > STALE_RISK && is_replayable(&request)).then(|| copy_bodyless(&request));
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, self.lease(sender, dial.idle_timeout))),
                    Err(mut unsent) => match (unsent.take_message(), spare) {
                        // Closed before it took the request: the request comes back unsent.
                        (Some(request), _) => request,
                        (None, Some(spare)) if unsent.error().is_incomplete_message() => spare,
                        (None, _) => return Err(PoolError::Exchange(unsent.into_error())),
                    },
                }
            }
            None => request,
        };
        let mut sender = {
            // Waiting for the connection, not for the response: given back once connected.
            let _waiting = hold(dial, Limit::PendingRequests).map_err(PoolError::Overflow)?;
            let connection = hold(dial, Limit::Connections).map_err(PoolError::Overflow)?;
            match Box::pin(connect_http1(dial, connection)).await {
                Ok(sender) => sender,
                Err(cause) => return Err(PoolError::Connect { cause, unsent: Box::new(request) }),
            }
        };
        let response = sender.send_request(request).await.map_err(PoolError::Exchange)?;
        Ok((response, self.lease(sender, dial.idle_timeout)))
    }

    async fn send_http2(self: &Arc<Self>, dial: Dial<'_>, mut request: Request<Body>) -> Result<Response<Incoming>, PoolError> {
        // A connection that is going away (GOAWAY, reset) hands back the requests it never
        // sent; those are safe to send again on a new connection.
        let mut attempt = 1;
        loop {
            let mut shared = match self.current_http2() {
                Some(shared) => shared,
                None => match Box::pin(self.connect_shared_http2(dial)).await {
                    Ok(shared) => shared,
                    Err(ConnectError::Overflow(overflow)) => return Err(PoolError::Overflow(overflow)),
                    Err(cause) => return Err(PoolError::Connect { cause, unsent: Box::new(request) }),
                },
            };
            match shared.sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut unsent) => {
                    // A connection that failed a request is going away (GOAWAY, reset, closed),
                    // or refused a stream: new requests go on a new one, while the streams
                    // still open on it finish. Only a broken request body is not its fault.
                    if !unsent.error().is_user() {
                        self.forget_http2(shared.id);
                    }
                    match unsent.take_message() {
                        Some(unsent_request) if attempt < MAX_UNSENT_ATTEMPTS => request = unsent_request,
                        _ => return Err(PoolError::from_http2(unsent.into_error())),
                    }
                }
            }
            attempt += 1;
        }
    }

    /// Connections held now: (idle HTTP/1.1 ones that could take a request, open HTTP/2 ones).
    /// Read when stats are scraped, never counted on the request path.
    pub fn connections(&self) -> (usize, usize) {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let ready = idle.iter().filter(|entry| entry.sender.is_ready()).count();
        drop(idle);
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        (ready, usize::from(shared.as_ref().is_some_and(|shared| !shared.sender.is_closed())))
    }

    /// Stops handing out the shared connection if it is still the one that failed.
    fn forget_http2(&self, failed: u64) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.as_ref().is_some_and(|current| current.id == failed) {
            *shared = None;
        }
    }

    /// The most recently used idle connection that can take a request, and how long it idled.
    fn take_idle(&self) -> Option<(http1::SendRequest<Body>, Duration)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            let idle_for = entry.since.elapsed();
            if idle_for < entry.timeout && entry.sender.is_ready() {
                return Some((entry.sender, idle_for));
            }
        }
        None
    }

    /// The lease holds the pool weakly: a pool whose endpoint left the config keeps nothing.
    fn lease(self: &Arc<Self>, sender: http1::SendRequest<Body>, idle_timeout: Duration) -> Box<Lease> {
        Box::new(Lease { sender: Some(sender), pool: Arc::downgrade(self), idle_timeout })
    }

    fn put_idle(self: &Arc<Self>, sender: http1::SendRequest<Body>, timeout: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: Instant::now(), timeout });
            // Under the lock: a sweep that finds the pool empty stops under it too.
            sweep::start(self);
        }
    }

    /// The shared HTTP/2 connection, noted as used.
    fn current_http2(&self) -> Option<SharedHttp2> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let current = shared.as_mut().filter(|shared| !shared.sender.is_closed())?;
        current.used = true;
        Some(current.clone())
    }

    async fn connect_shared_http2(self: &Arc<Self>, dial: Dial<'_>) -> Result<SharedHttp2, ConnectError> {
        let _waiting = hold(dial, Limit::PendingRequests).map_err(ConnectError::Overflow)?;
        let _one_at_a_time = self.connecting.lock().await;
        // Someone else may have connected while this request waited for the lock.
        if let Some(shared) = self.current_http2() {
            return Ok(shared);
        }
        let connection = hold(dial, Limit::Connections).map_err(ConnectError::Overflow)?;
        let sender = connect_http2(dial, connection).await?;
        let id = self.connections_made.fetch_add(1, Relaxed);
        let shared = SharedHttp2 { id, sender, idle_timeout: dial.idle_timeout, used: true };
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
        sweep::start(self);
        Ok(shared)
    }
}

impl Sweep for Pool {
    fn swept(&self) -> &std::sync::atomic::AtomicBool {
        &self.swept
    }

    fn look(&self, http2: &mut Looks) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        // Locked in this order only here; elsewhere one at a time.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        // Dropping an idle HTTP/1.1 connection's sender closes it.
        idle.retain(|entry| entry.since.elapsed() < entry.timeout && !entry.sender.is_closed());
        let mut next = idle.iter().map(|entry| now + entry.timeout.saturating_sub(entry.since.elapsed())).min();
        match shared.as_mut().filter(|current| !current.sender.is_closed()) {
            None => {
                *shared = None;
                http2.reset();
            }
            Some(current) => match http2.look(now, std::mem::take(&mut current.used), current.idle_timeout) {
                // New streams go on a new connection; this one closes once its streams end.
                (true, _) => *shared = None,
                (false, due) => next = next.into_iter().chain(due).min(),
            },
        }
        if next.is_none() {
            self.swept.store(false, Relaxed);
        }
        next
    }
}

// === impl Lease ===

impl Lease {
    /// The connection is not to take another request (its upstream broke the protocol): it
    /// closes once hyper has let go of the response.
    pub fn discard(&mut self) {
        drop(self.sender.take());
    }
}

impl Drop for Lease {
    /// The response body has ended (or was dropped): the connection takes its next request once
    /// hyper has finished with this response, which at the body's end it usually has. Then it
    /// goes straight back to the pool; otherwise a task waits for it. (hyper closes a connection
    /// whose response was dropped unread, which ends the wait.)
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if !sender.is_ready() {
                reuse_when_ready(sender, std::mem::take(&mut self.pool), self.idle_timeout);
            } else if let Some(pool) = self.pool.upgrade() {
                pool.put_idle(sender, self.idle_timeout);
            }
        }
    }
}

/// An HTTP/1.1 connection takes its next request once the current response has been read to
/// the end; it goes back to the pool then, or is dropped (closing it) if it broke. A body may
/// be dropped outside the runtime (as the engine stops): then the connection just closes.
fn reuse_when_ready(mut sender: http1::SendRequest<Body>, pool: Weak<Pool>, idle_timeout: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        if sender.ready().await.is_ok() {
            if let Some(pool) = pool.upgrade() {
                pool.put_idle(sender, idle_timeout);
            }
        }
    });
}

// === impl PoolError ===

impl PoolError {
    fn from_http2(error: hyper::Error) -> PoolError {
        let refused = never_sent(&error)
            || std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<h2::Error>())
            .is_some_and(|h2| {
                h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
            });
        if refused {
            PoolError::Refused(error)
        } else {
            PoolError::Exchange(error)
        }
    }
}

/// Whether hyper dropped the request before writing any of it: the connection ended while the
/// request still waited in its queue. hyper reports that as a "dispatch task is gone" user error
/// and has no predicate for it; its message is all there is to tell it from other user errors.
fn never_sent(error: &hyper::Error) -> bool {
    error.is_canceled() || (error.is_user() && error.to_string().starts_with("dispatch task is gone"))
}

/// Whether the request may be sent a second time should the first attempt be lost: no body
/// (nothing streamed that could not be replayed) and an idempotent method (RFC 9110 §9.2.2).
pub fn is_replayable(request: &Request<Body>) -> bool {
    use hyper::Method;
    http_body::Body::is_end_stream(request.body())
        && matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// A copy of a request without a body, to send again.
pub fn copy_bodyless(request: &Request<Body>) -> Request<Body> {
    copy_with(request, Body::Empty)
}

/// A copy of a request's head with `body`.
pub fn copy_with(request: &Request<Body>, body: Body) -> Request<Body> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Runs a connection's task; a circuit breaker's place it holds is given back when it ends.
fn spawn_connection<F>(connection: F, held: Option<Held>)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match held {
        None => spawn_boxed(connection),
        Some(held) => spawn_boxed(async move {
            let ended = connection.await;
            drop(held);
            ended
        }),
    }
}

/// Why no connection could be made: the socket failed, the TLS handshake was refused, or the
/// HTTP handshake failed.
#[derive(Debug)]
pub enum ConnectError {
    Socket(std::io::Error),
    Tls(Refused),
    Handshake(hyper::Error),
    /// The cluster's circuit breakers allow no new connection now (reported as an overflow).
    Overflow(Overflow),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Socket(cause) => cause.fmt(f),
            ConnectError::Tls(refused) => write!(f, "TLS handshake refused: {refused}"),
            ConnectError::Handshake(cause) => cause.fmt(f),
            ConnectError::Overflow(overflow) => write!(f, "over the circuit breakers' {}", overflow.limit.name()),
        }
    }
}

/// A connected socket, secured as the cluster asks; within the connect timeout.
pub(crate) async fn dial(dial: Dial<'_>) -> Result<Connection, ConnectError> {
    let connect = async {
        let stream = dial_tcp(dial).await?;
        match dial.tls {
            None => Ok(Connection::Plain(stream)),
            Some(tls) => tls.connect(stream, dial.address).await.map(|s| Connection::Tls(Box::new(s))).map_err(ConnectError::Tls),
        }
    };
    tokio::time::timeout(dial.connect_timeout, connect).await.map_err(|_| {
        let after = dial.connect_timeout.as_millis();
        ConnectError::Socket(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("timed out after {after}ms")))
    })?
}

/// An upstream connection's byte stream.
pub(crate) enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

async fn dial_tcp(dial: Dial<'_>) -> Result<TcpStream, ConnectError> {
    // An IP address connects at once; only a name needs the resolver (a blocking call that
    // tokio runs on a helper thread).
    let connect = async {
        match dial.address.parse::<std::net::SocketAddr>() {
            Ok(address) => TcpStream::connect(address).await,
            Err(_) => TcpStream::connect(dial.address).await,
        }
    };
    let stream = connect.await.map_err(ConnectError::Socket)?;
    stream.set_nodelay(true).map_err(ConnectError::Socket)?;
    Ok(stream)
}

/// One place of `limit` among the cluster's circuit breakers, if it has breakers. A request that
/// needs a new connection waits for it as a pending request; the connection holds its place
/// as long as it lives.
fn hold(dial: Dial<'_>, limit: Limit) -> Result<Option<Held>, Overflow> {
    dial.breakers.map(|breakers| breakers.take(limit)).transpose()
}

pub(crate) async fn connect_http1(target: Dial<'_>, held: Option<Held>) -> Result<http1::SendRequest<Body>, ConnectError> {
    match dial(target).await? {
        Connection::Plain(stream) => handshake_http1(stream, held).await,
        Connection::Tls(stream) => handshake_http1(stream, held).await,
    }
}

async fn handshake_http1<S>(stream: S, held: Option<Held>) -> Result<http1::SendRequest<Body>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        // Head and body copied into one buffer and written with one plain write: for the
        // small messages most requests are, cheaper than the kernel's iovec path.
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    spawn_connection(connection, held);
    Ok(sender)
}

/// The HTTP/2 flow-control windows of upstream connections: see `handshake_http2`.
const UPSTREAM_STREAM_WINDOW: u32 = 1 << 20;
const UPSTREAM_CONNECTION_WINDOW: u32 = 4 << 20;

pub(crate) async fn connect_http2(target: Dial<'_>, held: Option<Held>) -> Result<http2::SendRequest<Body>, ConnectError> {
    match dial(target).await? {
        Connection::Plain(stream) => handshake_http2(stream, held).await,
        Connection::Tls(stream) => handshake_http2(stream, held).await,
    }
}

async fn handshake_http2<S>(stream: S, held: Option<Held>) -> Result<http2::SendRequest<Body>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let (sender, connection) = http2::Builder::new(BoxingExecutor)
        .timer(TokioTimer::new())
        // Fixed windows, not hyper's adaptive ones (which start at 64 KiB): h2 (0.4.20) closes
        // a connection with GOAWAY(ENHANCE_YOUR_CALM, too_many_data_frames) once the small
        // DATA frames it holds unread cost more than half the connection window (at 256 bytes
        // of overhead each). Every gRPC response is one: a message in a DATA frame, then
        // trailers; with a 64 KiB window, ~140 responses arriving before the proxy reads them
        // (a few hundred calls in flight) broke the connection. 4 MiB bounds what one upstream
        // connection may hold unread, 1 MiB one stream (hyper's own fixed defaults: 5 and 2 MiB).
        .initial_stream_window_size(UPSTREAM_STREAM_WINDOW)
        .initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW)
        .keep_alive_interval(Duration::from_secs(30))
        .handshake(io)
        .await
        .map_err(ConnectError::Handshake)?;
    spawn_connection(connection, held);
    Ok(sender)
}
