//! What the data path serves with: the running config, one value ([`Snapshot`]: every
//! listener's routes, TLS, authorization and counters, the clusters, the busy-polling window,
//! what the stats count under), swapped whole by the engine on every config change. A request
//! keeps the listener snapshot it started with. Two things change between config changes and
//! keep cells of their own: a cluster's members (discovery) and the credentials (rotation).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::server::conn::auto;
use meshproxy_config::{self as config, Direction};
use meshproxy_telemetry::live::Live;
use meshproxy_telemetry::stats::{ListenerStats, Stats};
use meshproxy_telemetry::traffic::TrafficStats;
use meshproxy_telemetry::Telemetry;
use meshproxy_tls::inbound::InboundTls;

use crate::authz::Authorization;
use crate::closing::{Closer, Closing};
use crate::cluster::Cluster;
use crate::executor::BoxingExecutor;
use crate::rate_limit::RateLimiter;
use crate::route::RouteTable;

/// The running config; see the module's documentation.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    /// Each bound listener's, under the id it was bound with.
    pub listeners: Vec<(ListenerId, Arc<ListenerSnapshot>)>,
    /// In config order: what the admin API reports, and what discovery updates.
    pub clusters: Vec<Arc<Cluster>>,
    pub busy_poll: Duration,
    /// The config's identity section: where rotation reads the files again.
    pub identity: Option<config::Identity>,
    /// What the config counts under: the stats of anything else are dropped once nothing
    /// holds them.
    pub live: Live,
}

/// A bound socket's number, for its life: how its connections find their listener's snapshot.
pub type ListenerId = u64;

/// What one listener serves with.
#[derive(Debug)]
pub struct ListenerSnapshot {
    pub name: Arc<str>,
    pub direction: Direction,
    pub routes: RouteTable,
    pub server: Arc<HttpServer>,
    pub tls: Arc<InboundTls>,
    /// A connection that moves no byte for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Read each connection's destination before a capture redirected it (`original_dst`).
    pub original_destination: bool,
    pub authz: Authorization,
    /// Taken from before routing; kept, tokens and all, by a reload that gives it again.
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub stats: Arc<ListenerStats>,
    /// Where requests answered without a route (no route, denied, malformed) are counted.
    pub unrouted: Arc<TrafficStats>,
    /// The access log and tracing of the config this snapshot belongs to.
    pub telemetry: Arc<Telemetry>,
    /// Opaque TCP: always (`tcp` listeners), by the first bytes (`auto`), or never.
    pub tcp: crate::tcp::mode::Mode,
}

/// The HTTP server of a listener. hyper-util's `auto` server serves upgrades only after reading
/// the protocol from the connection's first bytes (its `http1_only` does nothing then), so an
/// HTTP/1.1 listener has hyper's own HTTP/1.1 server, which serves upgrades too; HTTP/2's
/// extended CONNECT needs nothing of the connection.
#[derive(Debug)]
pub enum HttpServer {
    Auto(auto::Builder<BoxingExecutor>),
    Http1(hyper::server::conn::http1::Builder),
    Http2(auto::Builder<BoxingExecutor>),
}

/// Shared by the accept loop and every connection of one bound socket.
#[derive(Debug)]
pub struct ListenerShared {
    pub id: ListenerId,
    /// The engine's running snapshot.
    running: Arc<ArcSwap<Snapshot>>,
    /// What its connections serve with while the running snapshot does not have it: from its
    /// binding until the snapshot that has it is swapped in, and once it has left the running
    /// config (removed, or closed by a drain), what it served with last. Empty otherwise, so
    /// that it holds on to no config that was swapped out.
    outside: Mutex<Option<Arc<ListenerSnapshot>>>,
    pub engine_stats: Arc<Stats>,
    /// Stops the listener: its accept loop, then what its connections and tunnels still have.
    /// Apart, so that what closes them at the end of a drain holds no config.
    closer: Arc<Closer>,
}

// === impl Snapshot ===

impl Snapshot {
    pub fn listener(&self, id: ListenerId) -> Option<&Arc<ListenerSnapshot>> {
        self.listeners.iter().find(|(bound, _)| *bound == id).map(|(_, snapshot)| snapshot)
    }
}

// === impl ListenerShared ===

impl ListenerShared {
    pub fn new(id: ListenerId, running: Arc<ArcSwap<Snapshot>>, bound_with: Arc<ListenerSnapshot>, engine_stats: Arc<Stats>) -> ListenerShared {
        ListenerShared { id, running, outside: Mutex::new(Some(bound_with)), engine_stats, closer: Arc::default() }
    }

    /// What the accept loop, a connection or a tunnel waits on to stop (`closing`).
    pub fn closing(&self) -> Closing {
        self.closer.subscribe()
    }

    /// Stops accepting; open connections finish their requests and close (graceful shutdown).
    pub fn stop(&self) {
        self.closer.stop();
    }

    /// What closes the listener's opaque TCP connections and tunnels, and cuts the HTTP
    /// requests still in progress (`Closer::close`): the end of its drain, once its socket no
    /// longer accepts.
    pub fn closer(&self) -> Arc<Closer> {
        self.closer.clone()
    }

    /// What this listener serves with now; `None` only for a listener the engine never put in
    /// its running snapshot nor retired, which it does not do.
    pub fn current(&self) -> Option<Arc<ListenerSnapshot>> {
        // A guard, not a clone of the whole snapshot: only the listener's part is kept.
        if let Some(snapshot) = self.running.load().listener(self.id) {
            return Some(snapshot.clone());
        }
        self.outside().clone()
    }

    /// The running snapshot has it now.
    pub fn entered(&self) {
        self.outside().take();
    }

    /// Leaves the running config: from now on its connections finish on what it serves with
    /// now. Call before the snapshot without it is swapped in.
    pub fn retire(&self) {
        let current = self.current();
        *self.outside() = current;
    }

    fn outside(&self) -> MutexGuard<'_, Option<Arc<ListenerSnapshot>>> {
        self.outside.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
