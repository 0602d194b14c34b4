//! Routes the proxy answers itself, without a cluster: redirects and direct responses. Their
//! requests are counted and logged under the route, with no cluster.

use std::sync::{Arc, OnceLock};

use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::uri::{Authority, Scheme, Uri};
use http::{Response, StatusCode};
use meshproxy_config::{self as config, Problem};
use meshproxy_telemetry::traffic::{TrafficKey, TrafficRegistry, TrafficStats};

use crate::body::Body;
use crate::error::ProxyError;

/// What a route that sends to no cluster answers, with the stats of its requests (found on
/// the first one, as a `route::Target`'s are).
#[derive(Debug)]
pub struct Answered {
    pub answer: Answer,
    traffic: OnceLock<Arc<TrafficStats>>,
}

#[derive(Debug)]
pub enum Answer {
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// Answers with the request's URL, the parts given replaced, in `Location`.
#[derive(Debug)]
pub struct Redirect {
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<String>,
    status: StatusCode,
    strip_query: bool,
}

/// Answers with a fixed status and body.
#[derive(Debug)]
pub struct DirectResponse {
    status: StatusCode,
    body: bytes::Bytes,
}

const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

// === impl Answered ===

impl Answered {
    pub fn new(answer: Answer) -> Answered {
        Answered { answer, traffic: OnceLock::new() }
    }

    /// The stats of this route's requests, from `registry` under the key `key` makes (no
    /// cluster), the first time.
    pub fn traffic(&self, registry: &TrafficRegistry, key: impl FnOnce() -> TrafficKey) -> &Arc<TrafficStats> {
        self.traffic.get_or_init(|| registry.stats(key()))
    }

    /// The answer to a request for `uri`, whose authority (as routed on) is `authority`.
    pub fn response(&self, uri: &Uri, authority: &str) -> Result<Response<Body>, ProxyError> {
        match &self.answer {
            Answer::Redirect(redirect) => redirect.response(uri, authority),
            Answer::Direct(direct) => Ok(direct.response()),
        }
    }
}

// === impl Redirect ===

impl Redirect {
    /// `at` is the path of the `redirect` field.
    pub fn compile(redirect: &config::Redirect, at: &str, problems: &mut Vec<Problem>) -> Option<Redirect> {
        let before = problems.len();
        let status = StatusCode::from_u16(redirect.status).ok().filter(|s| REDIRECT_STATUSES.contains(&s.as_u16()));
        if status.is_none() {
            problems.push(Problem::new(format!("{at}.status"), format!("{} is not a redirect status; expected 301, 302, 303, 307 or 308", redirect.status)));
        }
        let scheme = redirect.scheme.as_deref().and_then(|scheme| match scheme {
            "http" => Some(Scheme::HTTP),
            "https" => Some(Scheme::HTTPS),
            _ => {
                problems.push(Problem::new(format!("{at}.scheme"), format!("'{scheme}' is not a scheme to redirect to; expected http or https")));
                None
            }
        });
        let authority = redirect.host.as_deref().and_then(|host| match Authority::try_from(host) {
            Ok(authority) if !host.contains('@') && !host.is_empty() => Some(authority),
            _ => {
                problems.push(Problem::new(format!("{at}.host"), format!("'{host}' is not a valid host[:port]")));
                None
            }
        });
        if let Some(path) = redirect.path.as_deref() {
            if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path).is_err() {
                problems.push(Problem::new(format!("{at}.path"), "must be a path starting with '/'"));
            }
        }
        if redirect.path.is_none() && redirect.host.is_none() && redirect.scheme.is_none() {
            problems.push(Problem::new(at.to_string(), "needs at least one of path, host, scheme: a redirect to the same URL would loop"));
        }
        let status = status?;
        (problems.len() == before).then(|| Redirect { scheme, authority, path: redirect.path.clone(), status, strip_query: redirect.strip_query })
    }

    /// The redirect for a request to `uri` (its authority, if any, as routed on).
    pub fn response(&self, uri: &Uri, authority: &str) -> Result<Response<Body>, ProxyError> {
        let scheme = self.scheme.as_ref().map_or(uri.scheme_str().unwrap_or("http"), Scheme::as_str);
        let authority = self.authority.as_ref().map_or(authority, Authority::as_str);
        let path = self.path.as_deref().unwrap_or(uri.path());
        let query = uri.query().filter(|_| !self.strip_query);
        let location = match (authority.is_empty(), query) {
            (false, Some(query)) => format!("{scheme}://{authority}{path}?{query}"),
            (false, None) => format!("{scheme}://{authority}{path}"),
            // A request without a host (HTTP/1.0) gets a relative location.
            (true, Some(query)) => format!("{path}?{query}"),
            (true, None) => path.to_string(),
        };
        let location = HeaderValue::try_from(location).map_err(|_| ProxyError::BadRequest("the redirect location is not a valid header value"))?;
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = self.status;
        response.headers_mut().insert(LOCATION, location);
        Ok(response)
    }
}

// === impl DirectResponse ===

impl DirectResponse {
    /// `at` is the path of the `direct_response` field.
    pub fn compile(direct: &config::DirectResponse, at: &str, problems: &mut Vec<Problem>) -> Option<DirectResponse> {
        match StatusCode::from_u16(direct.status).ok().filter(|s| (200..=599).contains(&s.as_u16())) {
            Some(status) => Some(DirectResponse { status, body: bytes::Bytes::from(direct.body.clone()) }),
            None => {
                problems.push(Problem::new(format!("{at}.status"), format!("{} is not a status to answer with; expected 200 to 599", direct.status)));
                None
            }
        }
    }

    pub fn response(&self) -> Response<Body> {
        let mut response = Response::new(if self.body.is_empty() { Body::Empty } else { Body::Full(Some(self.body.clone())) });
        *response.status_mut() = self.status;
        if !self.body.is_empty() {
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(json: &str) -> Result<Redirect, Vec<Problem>> {
        let config: config::Redirect = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        Redirect::compile(&config, "r.redirect", &mut problems).ok_or(problems)
    }

    fn location(redirect: &Redirect, uri: &str, authority: &str) -> String {
        let uri: Uri = uri.parse().unwrap_or_else(|e| panic!("{e}"));
        let response = redirect.response(&uri, authority).unwrap_or_else(|e| panic!("{e}"));
        response.headers()[LOCATION].to_str().unwrap_or_default().to_string()
    }

    #[test]
    fn the_parts_given_replace_those_of_the_request() {
        let path = redirect(r#"{"path": "/new"}"#).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(path.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(location(&path, "/old?a=1", "orders:8080"), "http://orders:8080/new?a=1");
        let moved = redirect(r#"{"host": "new.example", "scheme": "https", "status": 308, "strip_query": true}"#).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(location(&moved, "/old?a=1", "orders"), "https://new.example/old");
        assert_eq!(location(&path, "/old", ""), "/new");
    }

    #[test]
    fn bad_redirects_are_problems_at_their_fields() {
        let problems = redirect(r#"{"path": "/new", "status": 200}"#).err().unwrap_or_default();
        assert_eq!(problems[0].path, "r.redirect.status");
        let problems = redirect(r#"{"status": 302}"#).err().unwrap_or_default();
        assert_eq!(problems[0].path, "r.redirect");
        let problems = redirect(r#"{"scheme": "ftp"}"#).err().unwrap_or_default();
        assert_eq!(problems[0].path, "r.redirect.scheme");
    }

    #[test]
    fn a_direct_response_answers_its_status_and_body() {
        let config = config::DirectResponse { status: 200, body: "pong".into() };
        let direct = DirectResponse::compile(&config, "r", &mut Vec::new()).unwrap_or_else(|| panic!("valid"));
        let response = direct.response();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(matches!(response.body(), Body::Full(Some(b)) if b == "pong"));
    }
}
