//! A listener's TCP mode, as its snapshot holds it (see `tcp`).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;

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
}
