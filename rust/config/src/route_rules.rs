//! The request rules a route (and, for rate limits, a listener) may carry besides where it
//! sends: local rate limits, fault injection, redirects, direct responses and rewrites. Every
//! rule is an `Option` on its route: a route without one compiles to nothing extra.

use serde::{Deserialize, Serialize};

use crate::duration::Millis;

/// A token bucket: `requests_per_second` tokens added per second, at most `burst` held (default:
/// one second's worth). A request takes one token; with none left it is answered 429.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Faults injected before a request is forwarded: a delay, an abort, or both (the delay
/// first, as Envoy does).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed: Millis,
    /// The share of requests delayed, 0 to 100 (fractions allowed).
    #[serde(default = "all_percent")]
    pub percent: f64,
    /// Only requests carrying this header are candidates.
    #[serde(default)]
    pub header: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// The status the proxy answers with (200 to 599).
    pub status: u16,
    #[serde(default = "all_percent")]
    pub percent: f64,
    /// Only requests carrying this header are candidates.
    #[serde(default)]
    pub header: Option<String>,
}

/// Answers with a redirect to the request's URL with the parts given replaced.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub path: Option<String>,
    /// The authority of the new URL (`host` or `host:port`).
    #[serde(default)]
    pub host: Option<String>,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "Redirect::default_status")]
    pub status: u16,
    /// Drops the query; by default the new URL keeps it.
    #[serde(default)]
    pub strip_query: bool,
}

/// Answers with a fixed status and body, without any cluster.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
}

/// The upstream path rewritten with a regular expression (Rust regex syntax, matched against
/// the path without its query); `substitution` refers to groups as `\1` (as Envoy's RE2 does).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

/// A share of a route's requests copied to a shadow cluster, fire and forget.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    #[serde(default = "all_percent")]
    pub percent: f64,
}

pub(crate) fn all_percent() -> f64 {
    100.0
}

impl Redirect {
    pub(crate) fn default_status() -> u16 {
        301
    }
}
