//! Listeners: bind, accept, and serve each connection with the listener's protocol settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use meshproxy_config::{Limits, ListenerProtocol};
use meshproxy_telemetry::events;
use crate::closing::Closing;
use crate::executor::BoxingExecutor;
use crate::headers::{ClientAddress, PeerIdentity};
use crate::h2_preface::PrefaceWatch;
use crate::idle::IdleTimeout;
use meshproxy_tls::inbound::Accepted;
use meshproxy_tls::sessions;
use crate::original_dst;
use crate::proxy;
use crate::tcp;
pub use crate::snapshot::{HttpServer, ListenerId, ListenerShared, ListenerSnapshot, Snapshot};
use crate::workers::{self, WorkerHandles, Workers};

/// A bound, accepting listener as the engine tracks it.
#[derive(Debug)]
pub struct RunningListener {
    /// The address as configured (`127.0.0.1:0` stays so), to recognise it in the next config.
    pub configured: String,
    pub local_addr: SocketAddr,
    pub shared: Arc<ListenerShared>,
    /// The accept loop; the socket closes when it ends.
    accepting: Option<tokio::task::JoinHandle<()>>,
}

// === impl RunningListener ===

impl RunningListener {
    /// Binds the address; the socket accepts once [`RunningListener::spawn`] runs.
    pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    }

    /// Starts accepting on the current tokio runtime; connections go round-robin to the workers.
    pub fn spawn(
        configured: String,
        socket: std::net::TcpListener,
        shared: Arc<ListenerShared>,
        workers: Arc<WorkerHandles>,
    ) -> std::io::Result<RunningListener> {
        let local_addr = socket.local_addr()?;
        let listener = TcpListener::from_std(socket)?;
        let accepting = tokio::spawn(accept_loop(listener, shared.clone(), workers, shared.closing()));
        Ok(RunningListener { configured, local_addr, shared, accepting: Some(accepting) })
    }

    pub fn name(&self) -> Arc<str> {
        self.shared.current().map(|snapshot| snapshot.name.clone()).unwrap_or_default()
    }

    /// Stops accepting; open connections finish their requests and close (graceful shutdown).
    /// Opaque TCP connections and tunnels stay until its `ListenerShared::closer` closes them.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Stops accepting and returns once the socket is closed, so its address can be bound again
    /// at once. Call from outside the workers.
    pub fn close(mut self, workers: &Workers) {
        self.stop();
        if let Some(accepting) = self.accepting.take() {
            let _ = workers.block_on(accepting);
        }
    }
}

impl Drop for RunningListener {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ListenerShared>, workers: Arc<WorkerHandles>, mut stopped: Closing) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => hand_over(stream, peer, &shared, &workers, &stopped),
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            () = stopped.stopped() => return,
        }
    }
}

/// Gives an accepted connection to the next worker, which serves it to the end.
fn hand_over(stream: TcpStream, peer: SocketAddr, shared: &Arc<ListenerShared>, workers: &WorkerHandles, stopped: &Closing) {
    let (worker, handle) = workers.next();
    let (shared, stopped) = (shared.clone(), stopped.clone());
    if worker == workers::current() {
        tokio::spawn(serve_connection(stream, peer, shared, stopped));
        return;
    }
    // The socket moves to the other worker's event loop: deregistered here, registered there.
    if let Ok(stream) = stream.into_std() {
        handle.spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve_connection(stream, peer, shared, stopped).await;
            }
        });
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<ListenerShared>, stopped: Closing) {
    let _ = stream.set_nodelay(true);
    let Some(snapshot) = shared.current() else { return };
    let (server, tls, stats, idle_timeout) = (snapshot.server.clone(), snapshot.tls.clone(), snapshot.stats.clone(), snapshot.idle_timeout);
    let mut client = ClientAddress::new(peer.ip());
    if snapshot.original_destination {
        client.original_destination = original_dst::of(&stream);
    }
    // Kept only by listeners that may serve opaque TCP, whose connections run on it to the end.
    let opaque = (!matches!(snapshot.tcp, tcp::Mode::Http)).then_some(snapshot);
    let serving = Serving { server: &server, idle_timeout, client, shared, stopped };
    stats.connections_total.inc();
    stats.connections_active.inc();
    match tls.accept(stream).await {
        Ok(Accepted::Plain(stream)) => match opaque {
            None => serving.serve(stream, None).await,
            Some(listener) => {
                let downstream = tcp::Downstream {
                    listener: &listener,
                    client: peer,
                    peer: None,
                    destination: serving.client.original_destination,
                    engine_stats: &serving.shared.engine_stats,
                    closing: serving.stopped.clone(),
                };
                let dispatched = tcp::dispatch(stream, downstream).await;
                // HTTP connections read the running snapshot per request, as on any listener.
                drop(listener);
                if let tcp::Dispatch::Http(stream) = dispatched {
                    serving.serve(stream, None).await;
                }
            }
        },
        Ok(Accepted::Mutual(stream, identity)) => {
            serving.shared.engine_stats.tls.inbound.handshakes_total.inc();
            if sessions::resumed(stream.get_ref().1) {
                serving.shared.engine_stats.tls.inbound.resumed_total.inc();
            }
            match opaque.filter(|listener| listener.tcp.always().is_some()) {
                Some(listener) => {
                    if let Some(cluster) = listener.tcp.always() {
                        let closing = serving.stopped.clone();
                        let downstream = tcp::Downstream { listener: &listener, client: peer, peer: Some(identity), destination: None, engine_stats: &serving.shared.engine_stats, closing };
                        tcp::serve(stream, cluster, downstream).await;
                    }
                }
                None => serving.serve(stream, Some(PeerIdentity::new(identity))).await,
            }
        }
        Err(refused) => {
            let shared = serving.shared;
            shared.engine_stats.tls.inbound.refused(refused.reason);
            let name = shared.current().map(|snapshot| snapshot.name.clone()).unwrap_or_default();
            events::log(format!("listener '{name}' refused a connection from {peer}: {refused}"));
        }
    }
    stats.connections_active.dec();
}

/// What serving one accepted connection needs, whatever secures it.
struct Serving<'a> {
    server: &'a HttpServer,
    idle_timeout: Option<Duration>,
    client: ClientAddress,
    shared: Arc<ListenerShared>,
    stopped: Closing,
}

impl Serving<'_> {
    /// Serves HTTP on the connection until it closes, it idles for the listener's
    /// `idle_timeout`, or the listener stops (then gracefully: requests in progress finish,
    /// until the listener closes what it still has).
    async fn serve<I>(self, io: I, peer: Option<PeerIdentity>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Serving { server, idle_timeout, client, shared, stopped } = self;
        match idle_timeout {
            Some(timeout) => serve_http(server, IdleTimeout::new(io, timeout), client, peer, shared, stopped).await,
            None => serve_http(server, io, client, peer, shared, stopped).await,
        }
    }
}

async fn serve_http<I>(
    server: &HttpServer,
    io: I,
    client: ClientAddress,
    peer: Option<PeerIdentity>,
    shared: Arc<ListenerShared>,
    mut stopped: Closing,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| proxy::handle(shared.clone(), client.clone(), peer.clone(), request));
    // The first SETTINGS of an HTTP/2 client are watched for the one error h2 misnames (`h2_preface`).
    let io = TokioIo::new(PrefaceWatch::new(io));
    // With upgrades (HTTP/1.1): an upgrade or CONNECT hands the connection's bytes to its tunnel.
    macro_rules! until_stopped {
        ($connection:expr) => {{
            let connection = $connection;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped.stopped() => {
                    connection.as_mut().graceful_shutdown();
                    // Requests still in progress when the drain ends are cut.
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = stopped.closed() => {}
                    }
                }
            }
        }};
    }
    match server {
        HttpServer::Auto(auto) => until_stopped!(auto.serve_connection_with_upgrades(io, service)),
        HttpServer::Http1(http1) => until_stopped!(http1.serve_connection(io, service).with_upgrades()),
        HttpServer::Http2(auto) => until_stopped!(auto.serve_connection(io, service)),
    }
}

/// The HTTP/1.1 settings, on hyper's server or on the `auto` one's HTTP/1.1 side (two types
/// with the same methods).
macro_rules! http1_settings {
    ($builder:expr, $limits:expr) => {
        $builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            // One buffer, one write per response head and small body (see the pool's HTTP/1.1 client).
            .writev(false)
            // hyper refuses a head larger than its read buffer with 431; 8 KiB is its floor.
            .max_buf_size(($limits.max_header_bytes as usize).max(8192))
            .header_read_timeout(std::time::Duration::from_secs(30))
    };
}

/// The HTTP server settings of a listener: its protocols and the limits that protect it.
pub fn server_builder(protocol: ListenerProtocol, limits: &Limits) -> HttpServer {
    let mut builder = auto::Builder::new(BoxingExecutor);
    http1_settings!(builder.http1(), limits);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes)
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Rapid-reset defence (CVE-2023-44487): streams reset before the proxy saw them.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        // RFC 8441: WebSocket over HTTP/2 (extended CONNECT), from clients and peer sidecars.
        .enable_connect_protocol();
    match protocol {
        ListenerProtocol::Auto => HttpServer::Auto(builder),
        ListenerProtocol::Http1 => {
            let mut http1 = http1::Builder::new();
            http1_settings!(http1, limits);
            HttpServer::Http1(http1)
        }
        ListenerProtocol::Http2 => HttpServer::Http2(builder.http2_only()),
        // Never serves HTTP (see `tcp`).
        ListenerProtocol::Tcp => HttpServer::Auto(builder),
    }
}
