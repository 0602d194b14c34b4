//! What the data path serves with: a listener's compiled routes, TLS, authorization and
//! counters, swapped whole on every config change. A request keeps the snapshot it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::server::conn::auto;
use meshproxy_config::Direction;
use meshproxy_telemetry::stats::{ListenerStats, Stats};
use meshproxy_telemetry::traffic::TrafficStats;
use meshproxy_telemetry::Telemetry;
use meshproxy_tls::inbound::InboundTls;

use crate::authz::Authorization;
use crate::executor::BoxingExecutor;
use crate::route::RouteTable;

/// What a listener serves with; swapped whole on every config change. A request keeps the
/// snapshot it started with.
#[derive(Debug)]
pub struct ListenerSnapshot {
    pub name: Arc<str>,
    pub direction: Direction,
    pub routes: RouteTable,
    pub server: Arc<auto::Builder<BoxingExecutor>>,
    pub tls: Arc<InboundTls>,
    pub authz: Authorization,
    pub stats: Arc<ListenerStats>,
    /// Where requests answered without a route (no route, denied, malformed) are counted.
    pub unrouted: Arc<TrafficStats>,
    /// The access log and tracing of the config this snapshot belongs to.
    pub telemetry: Arc<Telemetry>,
}

/// Shared by the accept loop and every connection of one bound socket.
#[derive(Debug)]
pub struct ListenerShared {
    pub snapshot: ArcSwap<ListenerSnapshot>,
    pub engine_stats: Arc<Stats>,
}
