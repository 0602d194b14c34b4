//! A cluster's health settings checked: the engine's own refusals for documents that did not
//! pass the Python schema (which says the same things first, at the same paths).

use meshproxy_config::{self as config, Problem, UpstreamProtocol};

/// Problems of `cluster`'s `health_check` and `outlier_detection`, below `at` (`clusters[2]`).
pub(super) fn check_health(cluster: &config::Cluster, at: &str, problems: &mut Vec<Problem>) {
    let mut problem = |path: &str, message: String| problems.push(Problem::new(format!("{at}.{path}"), message));
    if let Some(check) = &cluster.health_check {
        let kinds = [("http", check.http.is_some()), ("grpc", check.grpc.is_some()), ("tcp", check.tcp.is_some())];
        let given: Vec<&str> = kinds.iter().filter(|(_, given)| *given).map(|(kind, _)| *kind).collect();
        if given.len() != 1 {
            let found = if given.is_empty() { "none".to_string() } else { given.join(" and ") };
            problem("health_check", format!("a health check needs exactly one of http, grpc, tcp; found {found}"));
        }
        if let Some(http) = &check.http {
            if !http.path.starts_with('/') {
                problem("health_check.http.path", format!("'{}' is not a valid path; it must start with '/'", http.path));
            }
            if http.expected_statuses.is_empty() || http.expected_statuses.iter().any(|s| !(100..=599).contains(s)) {
                problem("health_check.http.expected_statuses", "expected statuses from 100 to 599, at least one".into());
            }
        }
        if check.grpc.is_some() && cluster.protocol != UpstreamProtocol::Http2 {
            problem("health_check.grpc", "a grpc health check needs protocol http2".into());
        }
        for (key, duration) in [("interval", check.interval), ("timeout", check.timeout)] {
            if duration.0 == 0 {
                problem(&format!("health_check.{key}"), format!("{key} must be greater than 0, e.g. 1s"));
            }
        }
        for (key, count) in [("unhealthy_threshold", check.unhealthy_threshold), ("healthy_threshold", check.healthy_threshold)] {
            if count == 0 {
                problem(&format!("health_check.{key}"), "0 is out of range; expected an integer from 1 to 1000000".into());
            }
        }
    }
    if let Some(outlier) = &cluster.outlier_detection {
        for (key, duration) in [("interval", outlier.interval), ("base_ejection_time", outlier.base_ejection_time)] {
            if duration.0 == 0 {
                problem(&format!("outlier_detection.{key}"), format!("{key} must be greater than 0, e.g. 1s"));
            }
        }
        if outlier.max_ejection_time < outlier.base_ejection_time {
            problem("outlier_detection.max_ejection_time", "max_ejection_time must not be less than base_ejection_time".into());
        }
        if outlier.max_ejection_percent > 100 {
            let given = outlier.max_ejection_percent;
            problem("outlier_detection.max_ejection_percent", format!("{given} is out of range; expected an integer from 0 to 100"));
        }
        let zero = [Some(outlier.consecutive_5xx), outlier.consecutive_gateway_errors].into_iter().flatten().any(|n| n == 0)
            || outlier.success_rate.as_ref().is_some_and(|s| s.minimum_hosts == 0 || s.request_volume == 0 || s.stdev_factor == 0);
        if zero {
            problem("outlier_detection", "counts and thresholds must be at least 1".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(cluster: serde_json::Value) -> Vec<String> {
        let cluster: config::Cluster = serde_json::from_value(cluster).unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        check_health(&cluster, "clusters[0]", &mut problems);
        problems.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    #[test]
    fn the_engine_refuses_what_the_schema_refuses_at_the_same_paths() {
        assert_eq!(problems(json!({"name": "c", "health_check": {"http": {"path": "/healthz"}}, "outlier_detection": {}})), Vec::<String>::new());
        assert_eq!(
            problems(json!({"name": "c", "health_check": {"http": {"path": "healthz"}, "tcp": {}}})),
            [
                "clusters[0].health_check: a health check needs exactly one of http, grpc, tcp; found http and tcp",
                "clusters[0].health_check.http.path: 'healthz' is not a valid path; it must start with '/'",
            ]
        );
        assert_eq!(
            problems(json!({"name": "c", "health_check": {"grpc": {}, "timeout": "0s"}})),
            ["clusters[0].health_check.grpc: a grpc health check needs protocol http2", "clusters[0].health_check.timeout: timeout must be greater than 0, e.g. 1s"]
        );
        assert_eq!(
            problems(json!({"name": "c", "outlier_detection": {"max_ejection_percent": 101}})),
            ["clusters[0].outlier_detection.max_ejection_percent: 101 is out of range; expected an integer from 0 to 100"]
        );
    }
}
