//! A listener's TCP mode, as its snapshot holds it (see `tcp`).

use std::sync::Arc;
use std::time::Duration;

use meshproxy_config::capture::DestinationMatch;

use crate::cluster::Cluster;

/// A TCP route of a capture listener (`original_destination: true`): connections that were
/// going to one of `destinations` go to `cluster` as opaque TCP, before any detection.
#[derive(Debug, Clone)]
pub struct TcpRoute {
    pub destinations: Vec<DestinationMatch>,
    pub cluster: Arc<Cluster>,
}

/// What a listener does with the plain-text connections it accepts, besides HTTP.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// `http1` and `http2` listeners: hyper reads the first bytes.
    #[default]
    Http,
    /// `auto` without `tcp_fallback`: HTTP only; a client silent for `SILENT_CLIENT` is closed.
    HttpOnly,
    /// `auto` with `tcp_fallback`: HTTP, or opaque bytes to the cluster, by the first bytes.
    Detect { fallback: Arc<Cluster>, timeout: Duration },
    /// `tcp` listeners: every connection to the cluster of its route.
    Always(Arc<Cluster>),
    /// A capture listener with TCP routes: a connection whose original destination one of them
    /// matches (the first that does) is opaque TCP to its cluster at once, whatever it sends
    /// (server-first clients included); the others are served as `then` says (never this), or
    /// closed without it (a `tcp` capture listener whose last route has a match).
    Destinations { routes: Box<[TcpRoute]>, then: Option<Box<Mode>> },
}

// === impl Mode ===

impl Mode {
    /// The cluster every connection goes to (`tcp` listeners), if so.
    pub fn always(&self) -> Option<&Arc<Cluster>> {
        match self {
            Mode::Always(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// The cluster of the first TCP route matching `destination`, and else the mode to serve
    /// the connection by.
    pub fn by_destination(&self, destination: Option<std::net::SocketAddr>) -> Result<&Arc<Cluster>, Option<&Mode>> {
        let Mode::Destinations { routes, then } = self else { return Err(Some(self)) };
        let found = destination.and_then(|to| routes.iter().find(|route| route.destinations.iter().any(|entry| entry.matches(to))));
        found.map(|route| &route.cluster).ok_or(then.as_deref())
    }
}
