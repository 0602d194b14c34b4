//! The path of one request, top-down: route → cluster → endpoint → upstream pool → response.
//! Each request is observed from arrival to the end of its response body (`observe`).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::authz::{AuthzRequest, Decision};
use crate::body::Body;
use crate::connect;
use crate::observed::Observed;
use meshproxy_config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::headers::{absolute_uri, prepare_request, remove_present_hop_by_hop, set_peer_identity, ClientAddress, PeerIdentity, Present};
use crate::snapshot::{ListenerShared, ListenerSnapshot};
use crate::grpc;
use crate::timeouts;
use crate::mirror;
use crate::observe::Observation;
use crate::observed::Upstream;
use crate::original_dst::OriginalDestination;
use crate::retry;
use crate::route::{host_without_port, Action, RequestTarget};
use crate::upgrade::{self, Forwarded, Tunnel};
use meshproxy_telemetry::stats::Stats;
use meshproxy_telemetry::traffic::TrafficKey;

/// Serves one request received by a listener. Never fails: proxy errors become responses. The
/// response body carries the request's observation, finished when the body ends; should the
/// client go away before a response is ready, this future is dropped and finishes it.
pub async fn handle(
    listener: Arc<ListenerShared>,
    client: ClientAddress,
    peer: Option<PeerIdentity>,
    request: Request<Incoming>,
) -> Result<Response<Observed>, Infallible> {
    let Some(snapshot) = listener.current() else {
        // Not reached: the engine retires a listener before the snapshot without it goes in.
        return Ok(ProxyError::NoRoute { host: String::new(), path: String::new() }.into_response().map(Observed::unobserved));
    };
    snapshot.stats.requests_total.inc();
    let mut observation = Observation::start(&snapshot.unrouted);
    observation.report_to(&snapshot.telemetry, client.ip, &request, peer.as_ref().map(|p| &p.id));
    observation.grpc = grpc::is_call(request.version(), request.method(), request.headers());
    let (response, upstream, splice) = match proxy(&snapshot, &listener.engine_stats, &client, peer.as_ref(), request, &mut observation).await {
        Ok(answered) => answered,
        Err(error) => {
            listener.engine_stats.count_error(error.reason());
            observation.error = Some(error.reason());
            // A gRPC client reads the proxy's errors as gRPC statuses only.
            if observation.grpc {
                let (response, code) = grpc::error_response(&error);
                observation.grpc_status = Some(code);
                (response, None, None)
            } else {
                (error.into_response(), None, None)
            }
        }
    };
    snapshot.stats.responses.count(response.status());
    observation.status = Some(response.status());
    // An agreed tunnel owns the observation until it ends (`upgrade`).
    if let Some(splice) = splice {
        splice.run(observation, upstream, &listener, &snapshot.stats);
        return Ok(response.map(Observed::unobserved));
    }
    Ok(response.map(|body| Observed::new(body, observation, upstream)))
}

async fn proxy(
    listener: &ListenerSnapshot,
    stats: &Stats,
    client: &ClientAddress,
    peer: Option<&PeerIdentity>,
    request: Request<Incoming>,
    observation: &mut Observation,
) -> Result<Forwarded, ProxyError> {
    let host = checked_host(request.version(), request.headers())?;
    let (mut parts, body) = request.into_parts();
    // The headers the proxy removes, if any, found in one pass.
    let present = Present::scan(&parts.headers);
    present.check_transfer_codings(&parts.headers)?;
    // Upgrades and CONNECT: a bit of the scan and the method say whether to look further.
    let mut tunnel = if present.upgrade() || parts.method == Method::CONNECT { Tunnel::requested(&mut parts, present) } else { None };
    // Before authorization: a policy's header rules must never see a forged identity.
    set_peer_identity(&mut parts.headers, present, peer);
    authorize(listener, peer, &parts)?;
    if let Some(limit) = &listener.rate_limit {
        limit.admit()?;
    }

    // Absolute-form and HTTP/2 requests carry the authority in the URI, which wins over `Host`.
    // Parsed once: the Host header's was while checking it.
    let (authority, parsed) = match parts.uri.authority() {
        Some(authority) => {
            let value = HeaderValue::from_str(authority.as_str()).ok();
            if let Some(value) = value.clone() {
                parts.headers.insert(HOST, value);
            }
            (value, Some(authority.clone()))
        }
        None => (parts.headers.get(HOST).cloned(), host),
    };
    let authority_str = authority.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let target = RequestTarget {
        host: host_without_port(authority_str),
        path: parts.uri.path(),
        method: &parts.method,
        headers: &parts.headers,
        destination: client.original_destination,
        authority: authority_str,
        connect: tunnel.as_ref().is_some_and(|tunnel| tunnel.is_connect()),
    };
    let Some(route) = listener.routes.find(&target) else { return Err(unrouted(&target)) };
    // Redirects and direct responses: answered here, counted under the route without a cluster.
    if let Action::Answer(answered) = &route.action {
        observation.routed(answered.traffic(&stats.traffic, || TrafficKey {
            direction: listener.direction,
            listener: listener.name.clone(),
            route: route.name.clone(),
            cluster: "".into(),
        }));
        route.rules.admit()?;
        if let Some(fault) = &route.rules.fault {
            Box::pin(fault.apply(&parts.headers)).await?;
        }
        let mut response = answered.response(&parts.uri, authority_str)?;
        route.response_headers.apply(response.headers_mut());
        return Ok((response, None, None));
    }
    // Read before the request's headers are edited for the upstream.
    let hash = route.hash_key.as_ref().and_then(|key| key.hash(&parts.headers, client.ip));
    // A split without targets: compilation refuses those.
    let target = route.pick().ok_or_else(|| ProxyError::NoHealthyEndpoint { cluster: String::new() })?;
    let cluster = target.cluster.clone();
    observation.routed(target.traffic(&stats.traffic, || TrafficKey {
        direction: listener.direction,
        listener: listener.name.clone(),
        route: route.name.clone(),
        cluster: cluster.name.clone(),
    }));
    // Rate limit and faults: after routing, so that what they answer counts for the route.
    route.rules.admit()?;
    if let Some(fault) = &route.rules.fault {
        Box::pin(fault.apply(&parts.headers)).await?;
    }
    // A tunnel's future is boxed: inline, its size would be every request's.
    if let Some(tunnel) = tunnel.take_if(|tunnel| tunnel.is_connect()) {
        return Box::pin(connect::open(&cluster, tunnel, parsed.as_ref(), listener.idle_timeout, observation)).await;
    }

    let original = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    // Without a rewrite the target is reused as parsed (a reference-counted clone).
    let path_and_query = match route.rewrite(original.as_str()) {
        std::borrow::Cow::Borrowed(_) => original,
        std::borrow::Cow::Owned(rewritten) => PathAndQuery::try_from(rewritten)
            .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid request target"))?,
    };
    prepare_request(&mut parts.headers, present, client, (!authority_str.is_empty()).then_some(authority_str));
    // A host rewrite replaces the authority sent upstream: `Host` here, `:authority` below.
    let (parsed, authority_str) = match &route.rules.host_rewrite {
        Some(rewrite) => {
            parts.headers.insert(HOST, rewrite.value.clone());
            (Some(rewrite.authority.clone()), rewrite.authority.as_str())
        }
        None => (parsed, authority_str),
    };
    // The upstream continues the trace from the proxy's span (before the route's header edits,
    // which may still remove the trace headers).
    if let Some(trace) = observation.trace() {
        trace.inject(&mut parts.headers);
    }
    route.request_headers.apply(&mut parts.headers);
    observation.note_request_id(&parts.headers);

    // Bodyless requests (most) need no counter, and get none: one allocation saved.
    let bodyless = http_body::Body::is_end_stream(&body);
    let received = (!bodyless).then(|| observation.count_request_bytes());
    // The request body's bytes count as a stream's movement for its idle timeout.
    let counted = route.stream_timeouts.and_then(|_| received.clone());
    // A request the route's mirror copies: a body (small, its length known) is read whole first,
    // for the copy to have it too.
    let mirrored = route.rules.mirror.as_ref().filter(|mirror| mirror.draws(&parts.headers, bodyless));
    let body = match mirrored {
        Some(_) if !bodyless => Box::pin(mirror::buffered(body, received)).await?,
        _ => Body::Streamed { body, received },
    };
    let mut upstream = Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.headers_mut() = parts.headers;
    if let (Some(_), Some(destination)) = (&cluster.passthrough, client.original_destination) {
        upstream.extensions_mut().insert(OriginalDestination(destination));
    }
    match cluster.protocol {
        // Origin-form target; the authority travels in `Host`. (No HTTP route sends to a tcp
        // cluster: the compiler refuses it.)
        UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.uri_mut() = Uri::from(path_and_query);
        }
        // The authority travels in `:authority`; a `Host` beside it would be malformed
        // (RFC 9113 §8.3.1) should the two ever differ. Without one, the endpoint's address
        // stands in, set per attempt.
        UpstreamProtocol::Http2 => {
            *upstream.version_mut() = Version::HTTP_2;
            upstream.headers_mut().remove(HOST);
            *upstream.uri_mut() = match parsed {
                Some(authority) if !authority_str.is_empty() => absolute_uri(cluster.scheme(), authority, path_and_query)?,
                _ => Uri::from(path_and_query),
            };
        }
    }
    if let Some(tunnel) = tunnel {
        return Box::pin(upgrade::forward(route, &cluster, upstream, tunnel, listener.idle_timeout, observation)).await;
    }
    // Fire and forget: the copy runs as a task of its own.
    if let Some(mirror) = mirrored {
        mirror.send_copy(&upstream, route.timeout);
    }
    // The exchange's state is a few KiB. Boxed, it is written once and stays put, while hyper
    // moves the small future around it (into a task per stream, for HTTP/2). So are the futures
    // of what only some routes do (faults, a mirror's body, stream timeouts): inline, their
    // size would be every request's, copied at each move.
    // A gRPC call's deadline (its grpc-timeout), when it has one, covers the whole call.
    let (stream_timeouts, timeout) = match observation.grpc {
        true => timeouts::call_limits(upstream.headers(), route.timeout, route.stream_timeouts),
        false => (route.stream_timeouts, route.timeout),
    };
    let grpc = observation.grpc;
    let forwarded = Box::pin(retry::forward(&cluster, route.retry(), upstream, hash, observation));
    let (mut response, upstream) = match (stream_timeouts, timeout) {
        (Some(timeouts), head) => {
            let (response, upstream, mut timer) = Box::pin(timeouts.forward(forwarded, head, &cluster, counted)).await?;
            if grpc {
                timer.end_calls_with_trailers();
            }
            (response, Upstream { timer: Some(timer), ..upstream })
        }
        (None, Some(limit)) => tokio::time::timeout(limit, forwarded).await.map_err(|_| {
            cluster.stats.timeouts_total.inc();
            ProxyError::Timeout { cluster: cluster.name.to_string(), after: limit }
        })??,
        (None, None) => forwarded.await?,
    };
    // The response's headers the proxy removes, found in one pass; among them, rarely, a
    // `Transfer-Encoding` (HTTP/1.1 upstreams only: h2 refuses it as malformed).
    let present = Present::scan(response.headers());
    if present.other_transfer_coding(response.headers()) {
        return Err(cluster.refuse_transfer_coding(upstream.lease));
    }
    remove_present_hop_by_hop(response.headers_mut(), present);
    // A trailers-only response: the call's status is in its headers.
    if observation.grpc {
        observation.grpc_status = grpc::status(response.headers());
    }
    // hyper would repeat the upstream's reason phrase, empty or odd as it may be; the proxy
    // writes the canonical one, as other proxies do.
    response.extensions_mut().remove::<hyper::ext::ReasonPhrase>();
    route.response_headers.apply(response.headers_mut());
    Ok((response, Some(upstream), None))
}

/// Why no route takes the request. Cold, out of line: `proxy` stays small for the requests a
/// route takes.
#[cold]
fn unrouted(target: &RequestTarget<'_>) -> ProxyError {
    match target.connect {
        true => ProxyError::ConnectDenied { authority: target.authority.to_string() },
        false => ProxyError::NoRoute { host: target.host.to_string(), path: target.path.to_string() },
    }
}

/// RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without `Host`, and to any request
/// with more than one `Host` or an invalid one. Forwarding them would let the proxy route on one
/// host while the upstream reads another. A valid, non-empty `Host` comes back parsed.
fn checked_host(version: Version, headers: &HeaderMap) -> Result<Option<Authority>, ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(ProxyError::BadRequest("more than one Host header")),
        (None, None) if version == Version::HTTP_11 => Err(ProxyError::BadRequest("an HTTP/1.1 request must carry a Host header")),
        // Empty is valid: it says the target URI has no authority.
        (Some(host), None) if !host.is_empty() => {
            valid_host(host.as_bytes()).map(Some).ok_or(ProxyError::BadRequest("the Host header is not a valid host[:port]"))
        }
        _ => Ok(None),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): an authority without userinfo.
fn valid_host(host: &[u8]) -> Option<Authority> {
    if host.contains(&b'@') {
        return None;
    }
    Authority::try_from(host).ok()
}

/// Applies the listener's authorization policies, if it has any.
fn authorize(listener: &ListenerSnapshot, peer: Option<&PeerIdentity>, request: &http::request::Parts) -> Result<(), ProxyError> {
    if listener.authz.is_empty() {
        return Ok(());
    }
    let path = request.uri.path();
    // Policies match the path as written; `/public/../admin` must not pass as `/public/*` and
    // then reach an upstream that resolves it to `/admin`.
    if !is_normalized(path) {
        return Err(ProxyError::BadRequest("the path has dot segments, empty segments or encoded '/', '.' or backslash; authorization needs it normalized"));
    }
    let request = AuthzRequest { peer: peer.map(|p| &p.id), method: &request.method, path, headers: &request.headers };
    match listener.authz.decide(&request) {
        Decision::Allow => Ok(()),
        Decision::Deny { policy, rule } => Err(ProxyError::Denied { policy, rule }),
    }
}

/// A path with no `.` or `..` segment, no empty segment (`//`), and no percent-encoding that
/// an upstream would decode into something else a policy should have seen: `/`, `\\`, or an
/// unreserved character (RFC 3986 §6.2.2.2: `%61dmin` is `admin`). One that every upstream
/// reads as written.
fn is_normalized(path: &str) -> bool {
    let bytes = path.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        let decoded = bytes.get(i + 1..i + 3).and_then(|hex| std::str::from_utf8(hex).ok()).and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\') => return false,
            _ => {}
        }
    }
    if path.contains('\\') {
        return false;
    }
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        // An empty last segment is the trailing slash of `/orders/`.
        if segment == "." || segment == ".." || (segment.is_empty() && segments.peek().is_some()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::is_normalized;

    #[test]
    fn paths_authorization_could_misread_are_not_normalized() {
        for good in ["/", "/orders", "/orders/", "/orders/42", "/a.b/c..d"] {
            assert!(is_normalized(good), "{good}");
        }
        for good in ["/a%20b", "/a%25b", "/%e2%82%ac"] {
            assert!(is_normalized(good), "{good}");
        }
        for bad in ["/public/../admin", "/./admin", "//admin", "/a//b", "/admin/..", "/%2e%2e/admin", "/a%2Fb", "/a%5cb", "/a\\b", "/%61dmin", "/x%7e"] {
            assert!(!is_normalized(bad), "{bad}");
        }
    }
}
