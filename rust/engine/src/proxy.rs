//! The path of one request, top-down: route → cluster → endpoint → upstream pool → response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::cluster::Cluster;
use crate::config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::headers::{prepare_request, remove_hop_by_hop};
use crate::listener::ListenerShared;
use crate::route::{host_without_port, RequestTarget};

/// Connect failures are retried on other endpoints, for requests without a body only (nothing
/// has been sent, and there is no body to replay). This bounds the attempts.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Serves one request received by a listener. Never fails: proxy errors become responses.
pub async fn handle(listener: Arc<ListenerShared>, client: SocketAddr, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let snapshot = listener.snapshot.load_full();
    snapshot.stats.requests_total.inc();
    let response = match proxy(&snapshot.routes, client, request).await {
        Ok(response) => response,
        Err(error) => {
            listener.engine_stats.count_error(error.reason());
            error.into_response()
        }
    };
    snapshot.stats.responses.count(response.status());
    Ok(response)
}

async fn proxy(routes: &crate::route::RouteTable, client: SocketAddr, request: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    reject_ambiguous_framing(request.headers())?;
    let (mut parts, body) = request.into_parts();

    // Absolute-form and HTTP/2 requests carry the authority in the URI, which wins over `Host`.
    let authority = match parts.uri.authority() {
        Some(authority) => {
            let value = HeaderValue::from_str(authority.as_str()).ok();
            if let Some(value) = value.clone() {
                parts.headers.insert(HOST, value);
            }
            value
        }
        None => parts.headers.get(HOST).cloned(),
    };
    let authority_str = authority.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let target = RequestTarget {
        host: host_without_port(authority_str),
        path: parts.uri.path(),
        method: &parts.method,
        headers: &parts.headers,
    };
    let route = routes.find(&target).ok_or_else(|| ProxyError::NoRoute {
        host: target.host.to_string(),
        path: target.path.to_string(),
    })?;
    let cluster = route.pick_cluster().clone();

    let original = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let path_and_query = PathAndQuery::try_from(route.rewrite(original).as_ref())
        .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid request target"))?;
    prepare_request(&mut parts.headers, client.ip(), (!authority_str.is_empty()).then_some(authority_str));
    route.request_headers.apply(&mut parts.headers);

    let forwarded = forward(&cluster, parts.method, path_and_query, parts.headers, body);
    let mut response = match route.timeout {
        Some(limit) => tokio::time::timeout(limit, forwarded).await.map_err(|_| {
            cluster.stats.timeouts_total.inc();
            ProxyError::Timeout { cluster: cluster.name.to_string(), after: limit }
        })??,
        None => forwarded.await?,
    };
    remove_hop_by_hop(response.headers_mut());
    route.response_headers.apply(response.headers_mut());
    Ok(response)
}

/// `Content-Length` beside `Transfer-Encoding` is how requests are smuggled past proxies that
/// frame differently from their upstream (RFC 9112 §6.3): refuse rather than guess.
fn reject_ambiguous_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest("both Content-Length and Transfer-Encoding are present"));
    }
    Ok(())
}

/// Sends the request to an endpoint of the cluster and returns its response, whose body keeps
/// the endpoint's request in flight until it ends.
async fn forward(cluster: &Cluster, method: Method, path_and_query: PathAndQuery, headers: HeaderMap, body: Incoming) -> Result<Response<Body>, ProxyError> {
    let attempts = if http_body::Body::is_end_stream(&body) { cluster.pickable().clamp(1, MAX_CONNECT_ATTEMPTS) } else { 1 };
    let mut body = Some(body);
    let mut headers = Some(headers);
    let mut last_error = None;
    for attempt in 1..=attempts {
        let endpoint = cluster.pick().ok_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() })?;
        let head = if attempt == attempts { headers.take() } else { headers.clone() };
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))?;
        let mut request = Request::new(body.take().map_or(Body::Empty, Body::Streamed));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = match cluster.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        *request.headers_mut() = head.unwrap_or_default();

        cluster.stats.upstream_requests_total.inc();
        let in_flight = endpoint.start();
        let started = Instant::now();
        match cluster.client.request(request).await {
            Ok(response) => {
                endpoint.observe_latency(started.elapsed());
                cluster.stats.responses.count(response.status());
                return Ok(response.map(|body| Body::Upstream { body, in_flight: Some(in_flight) }));
            }
            Err(error) if error.is_connect() => {
                cluster.stats.connect_failures_total.inc();
                last_error = Some(ProxyError::ConnectFailure {
                    cluster: cluster.name.to_string(),
                    endpoint: endpoint.address.to_string(),
                    cause: root_cause(&error),
                });
            }
            Err(error) => {
                cluster.stats.upstream_failures_total.inc();
                return Err(ProxyError::UpstreamFailure {
                    cluster: cluster.name.to_string(),
                    endpoint: endpoint.address.to_string(),
                    cause: root_cause(&error),
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() }))
}

/// The innermost cause of an error chain: the part a user can act on ("connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
