//! Timeouts of a route's streams and a cluster's connections beyond the route's `timeout`:
//! what that timeout covers (`timeout_covers`), a stream's `idle_timeout`, and how long a
//! cluster keeps an unused upstream connection (`Cluster::idle_timeout`).

use serde::{Deserialize, Serialize};

use crate::duration::Millis;

/// What a route's `timeout` covers. Envoy's route timeout always covers the whole response;
/// meshproxy's covers the wait for the response head unless the route says `response`, so a
/// long download or a stream is not cut by a timeout meant for a slow upstream.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutCovers {
    /// From sending the request upstream to the response head (retries included).
    #[default]
    Headers,
    /// From sending the request upstream to the response body's last byte (Envoy's meaning).
    Response,
}

/// A route's `idle_timeout` unless given: none.
pub(crate) fn never() -> Millis {
    Millis(0)
}

/// A cluster's upstream connection unused for this long is closed (Envoy's
/// `common_http_protocol_options.idle_timeout`): upstreams commonly drop keep-alive connections
/// after a minute or so, and a request sent on one they dropped fails.
pub(crate) fn default_cluster_idle_timeout() -> Millis {
    Millis(60_000)
}

/// The defaults of this module's keys, for `documents::defaults`.
pub(crate) fn defaults() -> [(&'static str, serde_json::Value); 3] {
    [
        ("route.idle_timeout_ms", serde_json::json!(never().0)),
        ("route.timeout_covers", serde_json::json!(TimeoutCovers::default())),
        ("cluster.idle_timeout_ms", serde_json::json!(default_cluster_idle_timeout().0)),
    ]
}
