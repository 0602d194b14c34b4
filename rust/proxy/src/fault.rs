//! Fault injection: a route may hold a share of its requests for a fixed delay before
//! forwarding them, and answer a share with an error status instead of forwarding them, for
//! chaos tests. Either may be kept to requests carrying a header (a test channel).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName};
use http::StatusCode;
use meshproxy_config::{self as config, Problem};
use meshproxy_telemetry::rules::RuleStats;

use crate::error::ProxyError;

#[derive(Debug)]
pub struct Fault {
    delay: Option<(Duration, Chance)>,
    abort: Option<(StatusCode, Chance)>,
    stats: Arc<RuleStats>,
}

/// Which requests a fault applies to: those carrying `header` (any, without one), and of
/// those, `percent` of them.
#[derive(Debug)]
struct Chance {
    percent: f64,
    header: Option<HeaderName>,
}

// === impl Fault ===

impl Fault {
    /// `at` is the route's path; problems name the fields below it.
    pub fn compile(fault: &config::Fault, stats: Arc<RuleStats>, at: &str, problems: &mut Vec<Problem>) -> Option<Fault> {
        let before = problems.len();
        let delay = fault.delay.as_ref().map(|d| (d.fixed.duration(), Chance::compile(d.percent, d.header.as_deref(), &format!("{at}.fault.delay"), problems)));
        let abort = fault.abort.as_ref().map(|a| {
            let status = StatusCode::from_u16(a.status).ok().filter(|s| (200..=599).contains(&s.as_u16()));
            if status.is_none() {
                problems.push(Problem::new(format!("{at}.fault.abort.status"), format!("{} is not a status to answer with; expected 200 to 599", a.status)));
            }
            (status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE), Chance::compile(a.percent, a.header.as_deref(), &format!("{at}.fault.abort"), problems))
        });
        (problems.len() == before).then_some(Fault { delay, abort, stats })
    }

    /// Holds the request for the delay, if it draws one, then aborts it, if it draws that.
    pub async fn apply(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        if let Some((delay, chance)) = &self.delay {
            if chance.holds(headers) {
                self.stats.fault_delays_total.inc();
                tokio::time::sleep(*delay).await;
            }
        }
        match &self.abort {
            Some((status, chance)) if chance.holds(headers) => {
                self.stats.fault_aborts_total.inc();
                Err(ProxyError::FaultInjected { status: *status })
            }
            _ => Ok(()),
        }
    }
}

// === impl Chance ===

impl Chance {
    fn compile(percent: f64, header: Option<&str>, at: &str, problems: &mut Vec<Problem>) -> Chance {
        if !(0.0..=100.0).contains(&percent) {
            problems.push(Problem::new(format!("{at}.percent"), format!("{percent} is out of range; expected a number from 0 to 100")));
        }
        let header = header.and_then(|name| match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                problems.push(Problem::new(format!("{at}.header"), format!("'{name}' is not a valid header name")));
                None
            }
        });
        Chance { percent, header }
    }

    fn holds(&self, headers: &HeaderMap) -> bool {
        self.header.as_ref().is_none_or(|name| headers.contains_key(name))
            && (self.percent >= 100.0 || (self.percent > 0.0 && rand::random::<f64>() * 100.0 < self.percent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn fault(yaml: &str) -> Fault {
        let config: config::Fault = serde_json::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        Fault::compile(&config, Arc::default(), "r", &mut problems).unwrap_or_else(|| panic!("{problems:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_by_header_spares_requests_without_it() {
        let fault = fault(r#"{"abort": {"status": 418, "header": "x-fault"}}"#);
        assert!(fault.apply(&HeaderMap::new()).await.is_ok());
        let mut marked = HeaderMap::new();
        marked.insert("x-fault", HeaderValue::from_static("1"));
        assert!(matches!(fault.apply(&marked).await, Err(ProxyError::FaultInjected { status }) if status == StatusCode::IM_A_TEAPOT));
        assert_eq!(fault.stats.fault_aborts_total.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_the_request_for_its_time() {
        let fault = fault(r#"{"delay": {"fixed": "2s", "percent": 100}}"#);
        let started = tokio::time::Instant::now();
        assert!(fault.apply(&HeaderMap::new()).await.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(fault.stats.fault_delays_total.get(), 1);
    }

    #[test]
    fn a_share_of_zero_never_holds_and_a_fraction_holds_about_that_share() {
        let never = Chance { percent: 0.0, header: None };
        assert!(!(0..1000).any(|_| never.holds(&HeaderMap::new())));
        let some = Chance { percent: 25.0, header: None };
        let held = (0..10_000).filter(|_| some.holds(&HeaderMap::new())).count();
        assert!((2000..3000).contains(&held), "{held}");
    }

    #[test]
    fn bad_settings_are_problems_at_their_fields() {
        let config: config::Fault = serde_json::from_str(r#"{"abort": {"status": 99, "percent": 101}}"#).unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        assert!(Fault::compile(&config, Arc::default(), "r", &mut problems).is_none());
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["r.fault.abort.status", "r.fault.abort.percent"]);
    }
}
