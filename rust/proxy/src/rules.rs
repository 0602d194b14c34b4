//! The request rules of one route besides where it sends (`route_rules` in the config): a
//! rate limit and faults, applied before the request is forwarded, the rewrites of what goes
//! upstream, and a mirror. A route without rules holds empty options and checks them once.

use std::collections::HashMap;
use std::sync::Arc;

use meshproxy_config::{self as config, Problem};
use meshproxy_telemetry::rules::{RuleKey, RuleRegistry, RuleStats};

use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::fault::Fault;
use crate::mirror::Mirror;
use crate::rate_limit::RateLimiter;
use crate::rewrite::{HostRewrite, RegexRewrite};

#[derive(Debug, Default)]
pub struct RouteRules {
    pub rate_limit: Option<RateLimiter>,
    pub fault: Option<Fault>,
    pub regex_rewrite: Option<RegexRewrite>,
    pub host_rewrite: Option<HostRewrite>,
    pub mirror: Option<Mirror>,
}

// === impl RouteRules ===

impl RouteRules {
    /// The rules of `route`, whose path is `at`; counted under `key` when it has counted rules.
    pub fn compile(
        route: &config::Route,
        clusters: &HashMap<String, Arc<Cluster>>,
        key: impl FnOnce() -> RuleKey,
        registry: &RuleRegistry,
        at: &str,
        problems: &mut Vec<Problem>,
    ) -> RouteRules {
        let counted = route.rate_limit.is_some() || route.fault.is_some() || route.mirror.is_some();
        let stats: Option<Arc<RuleStats>> = counted.then(|| registry.stats(key()));
        let stats = || stats.clone().unwrap_or_default();
        let rate_limit = route.rate_limit.as_ref().and_then(|limit| rate_limiter(limit, stats(), &format!("{at}.rate_limit"), problems));
        let fault = route.fault.as_ref().and_then(|fault| Fault::compile(fault, stats(), at, problems));
        let regex_rewrite = route.regex_rewrite.as_ref().and_then(|rw| RegexRewrite::compile(rw, &format!("{at}.regex_rewrite"), problems));
        if route.regex_rewrite.is_some() && route.prefix_rewrite.is_some() {
            problems.push(Problem::new(at.to_string(), "give at most one of prefix_rewrite and regex_rewrite"));
        }
        let host_rewrite = route.host_rewrite.as_deref().and_then(|host| HostRewrite::compile(host, &format!("{at}.host_rewrite"), problems));
        let mirror = route.mirror.as_ref().and_then(|mirror| Mirror::compile(mirror, clusters, stats(), at, problems));
        RouteRules { rate_limit, fault, regex_rewrite, host_rewrite, mirror }
    }

    /// What may stop a request before it is forwarded: the rate limit. (Faults, which may
    /// hold it, are awaited by the caller, only on routes that have them: a request's future
    /// without them carries no sleep.)
    pub fn admit(&self) -> Result<(), ProxyError> {
        if let Some(limit) = &self.rate_limit {
            limit.admit()?;
        }
        Ok(())
    }
}

/// A listener's or a route's rate limiter; `at` is the path of its `rate_limit` field.
pub fn rate_limiter(limit: &config::RateLimit, stats: Arc<RuleStats>, at: &str, problems: &mut Vec<Problem>) -> Option<RateLimiter> {
    let limiter = RateLimiter::new(limit, stats);
    if limiter.is_none() {
        let field = if limit.requests_per_second == 0 { "requests_per_second" } else { "burst" };
        problems.push(Problem::new(format!("{at}.{field}"), "must be at least 1"));
    }
    limiter
}
