//! Upstream clients and their connection pools: HTTP/1.1 keep-alive or multiplexed HTTP/2,
//! pooled per endpoint (hyper-util keys its pool by the endpoint's authority).
//!
//! Clients are cached by (protocol, connect timeout), so a config swap reuses the client and
//! therefore the pooled connections of every endpoint that survives it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::UpstreamProtocol;

pub type UpstreamClient = Client<HttpConnector, Body>;

#[derive(Debug, Default)]
pub struct UpstreamClients {
    clients: Mutex<HashMap<(UpstreamProtocol, Duration), UpstreamClient>>,
}

// === impl UpstreamClients ===

impl UpstreamClients {
    pub fn get(&self, protocol: UpstreamProtocol, connect_timeout: Duration) -> UpstreamClient {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        clients.entry((protocol, connect_timeout)).or_insert_with(|| build(protocol, connect_timeout)).clone()
    }
}

fn build(protocol: UpstreamProtocol, connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout((!connect_timeout.is_zero()).then_some(connect_timeout));
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .retry_canceled_requests(true)
        .set_host(false);
    if protocol == UpstreamProtocol::Http2 {
        builder.http2_only(true).http2_adaptive_window(true);
    }
    builder.build(connector)
}
