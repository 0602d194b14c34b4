//! The active check of one endpoint, on a connection of its own made as the cluster makes its
//! connections (plain text or TLS), closed after each check: a check sees what a new request
//! would (a killed endpoint refuses, a hung one times out), and never takes a pooled connection
//! from requests.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::uri::Scheme;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use meshproxy_config::{self as config, UpstreamProtocol};
use meshproxy_telemetry::events;
use meshproxy_tls::outbound::UpstreamTls;
use rand::Rng;

use super::host::HostHealth;
use super::{grpc, ClusterHealth};
use crate::body::Body;
use crate::cluster::Cluster;
use crate::pool::{self, Dial};

/// The `user-agent` of checks, so upstreams can tell them from traffic (Envoy sends `Envoy/HC`).
const USER_AGENT_VALUE: &str = "meshproxy/hc";
/// The largest gRPC health answer read; a real one is a few bytes.
const MAX_GRPC_ANSWER: usize = 4096;

/// How to reach the endpoint: as the cluster does.
#[derive(Debug)]
pub(super) struct Target {
    pub address: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub tls: Option<UpstreamTls>,
}

/// Checks the endpoint now and every interval (plus jitter) after the last check ended, until
/// aborted by the supervisor.
pub(super) async fn run(target: Target, host: Arc<HostHealth>, health: Arc<ClusterHealth>, cluster: Weak<Cluster>) {
    let Some(settings) = health.check.clone() else { return };
    let mut first = true;
    loop {
        let result = match tokio::time::timeout(settings.timeout.duration(), probe(&settings, &target, &health.name)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}ms", settings.timeout.0)),
        };
        if result.is_err() {
            health.stats.health_check_failures_total.inc();
        }
        if host.record_check(result.is_ok(), first, &settings) {
            match &result {
                // A new endpoint passing its first check is the usual start, not news.
                Ok(()) if first => {}
                Ok(()) => events::log(format!("cluster {}: endpoint {} is healthy again", health.name, target.address)),
                Err(why) => events::log(format!("cluster {}: endpoint {} is unhealthy: {why}", health.name, target.address)),
            }
            // Takes effect before the next pick; the supervisor only prunes.
            if let Some(cluster) = cluster.upgrade() {
                cluster.rebalance();
            }
        }
        first = false;
        let jitter = match settings.jitter.0 {
            0 => Duration::ZERO,
            most => Duration::from_millis(rand::rng().random_range(0..=most)),
        };
        tokio::time::sleep(settings.interval.duration() + jitter).await;
    }
}

/// One check: `Ok` when it passed, else why not.
async fn probe(settings: &config::HealthCheck, target: &Target, cluster: &str) -> Result<(), String> {
    let dial = Dial {
        address: &target.address,
        protocol: target.protocol,
        connect_timeout: target.connect_timeout,
        // A check's connection is its own, never pooled.
        idle_timeout: Duration::ZERO,
        tls: target.tls.as_ref(),
        // A health check is not a request: circuit breakers do not count it.
        breakers: None,
    };
    if let Some(http) = &settings.http {
        let host = http.host.as_deref().unwrap_or(cluster);
        let request = request(target, Method::GET, host, &http.path, Body::Empty)?;
        let response = send(dial, request).await?;
        let status = response.status();
        return match http.expected_statuses.contains(&status.as_u16()) {
            true => Ok(()),
            false => Err(format!("answered {}", status.as_u16())),
        };
    }
    if let Some(check) = &settings.grpc {
        let mut request = request(target, Method::POST, cluster, grpc::PATH, Body::Full(Some(grpc::request(&check.service))))?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        headers.insert(TE, http::HeaderValue::from_static("trailers"));
        let response = send(Dial { protocol: UpstreamProtocol::Http2, ..dial }, request).await?;
        return grpc_answer(response).await;
    }
    // TCP: the connection, TLS included, is the check.
    pool::dial(dial).await.map(drop).map_err(|e| format!("cannot connect: {e}"))
}

/// The check's request: `path` on the endpoint, with `host` as `Host` (`:authority`).
fn request(target: &Target, method: Method, host: &str, path: &str, body: Body) -> Result<Request<Body>, String> {
    let uri = match target.protocol {
        UpstreamProtocol::Http1 if method == Method::GET => Uri::try_from(path).map_err(|e| e.to_string())?,
        // HTTP/2 carries the authority and scheme in pseudo-headers.
        _ => {
            let scheme = if target.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
            Uri::builder().scheme(scheme).authority(host).path_and_query(path).build().map_err(|e| e.to_string())?
        }
    };
    let mut builder = Request::builder().method(method).uri(uri).header(USER_AGENT, USER_AGENT_VALUE);
    if target.protocol == UpstreamProtocol::Http1 && path != grpc::PATH {
        builder = builder.header(HOST, host).header(CONNECTION, "close");
    }
    builder.body(body).map_err(|e| e.to_string())
}

/// Sends `request` on a new connection to the endpoint.
async fn send(dial: Dial<'_>, request: Request<Body>) -> Result<http::Response<hyper::body::Incoming>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("request failed: {e}");
    match dial.protocol {
        UpstreamProtocol::Http1 => {
            let mut sender = pool::connect_http1(dial, None).await.map_err(|e| format!("cannot connect: {e}"))?;
            sender.send_request(request).await.map_err(|e| failed(&e))
        }
        UpstreamProtocol::Http2 => {
            let mut sender = pool::connect_http2(dial, None).await.map_err(|e| format!("cannot connect: {e}"))?;
            sender.send_request(request).await.map_err(|e| failed(&e))
        }
        // The compiler refuses HTTP checks of a tcp cluster.
        UpstreamProtocol::Tcp => Err("a tcp cluster is checked by connecting".to_string()),
    }
}

/// Whether a gRPC health answer says `SERVING`.
async fn grpc_answer(response: http::Response<hyper::body::Incoming>) -> Result<(), String> {
    if response.status() != StatusCode::OK {
        return Err(format!("answered HTTP {}", response.status().as_u16()));
    }
    let (parts, body) = response.into_parts();
    // A trailers-only answer carries grpc-status in its headers.
    let status_in = |headers: &http::HeaderMap| headers.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(status) = status_in(&parts.headers).filter(|s| s != "0") {
        return Err(format!("answered grpc-status {status}"));
    }
    let collected = Limited::new(body, MAX_GRPC_ANSWER).collect().await.map_err(|e| format!("the answer broke off: {e}"))?;
    let trailers = collected.trailers().and_then(status_in);
    if let Some(status) = trailers.filter(|s| s != "0") {
        return Err(format!("answered grpc-status {status}"));
    }
    let body: Bytes = collected.to_bytes();
    match grpc::serving_status(&body)? {
        grpc::SERVING => Ok(()),
        other => Err(format!("serving status {other} (not SERVING)")),
    }
}
