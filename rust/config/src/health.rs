//! A cluster's health settings as the config writes them: active checks (`health_check`) and
//! passive outlier ejection (`outlier_detection`). The engine runs both (`meshproxy_proxy::health`).

use serde::{Deserialize, Serialize};

use crate::duration::Millis;

/// Active checks: each endpoint probed every `interval` (plus up to `jitter`), by exactly one
/// of `http`, `grpc`, `tcp`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub http: Option<HttpCheck>,
    #[serde(default)]
    pub grpc: Option<GrpcCheck>,
    #[serde(default)]
    pub tcp: Option<TcpCheck>,
    #[serde(default = "HealthCheck::default_interval")]
    pub interval: Millis,
    #[serde(default = "HealthCheck::default_timeout")]
    pub timeout: Millis,
    /// Failed checks in a row that take a healthy endpoint out of the balancer's choice.
    #[serde(default = "HealthCheck::default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring an unhealthy endpoint back.
    #[serde(default = "HealthCheck::default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Up to this much is added to each wait, at random, so checks of many sidecars spread out.
    #[serde(default = "HealthCheck::default_jitter")]
    pub jitter: Millis,
}

/// `GET path`; healthy when the status is one of `expected_statuses`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub path: String,
    /// The `Host` (`:authority`) sent; none: the cluster's name, as Envoy does.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "HttpCheck::default_expected_statuses")]
    pub expected_statuses: Vec<u16>,
}

/// `grpc.health.v1.Health/Check` for `service` (empty: the server as a whole); healthy when
/// the answer is `SERVING`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcCheck {
    #[serde(default)]
    pub service: String,
}

/// Healthy when a connection (and the cluster's TLS handshake, if any) can be made.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {}

/// Passive ejection: endpoints whose answers fail are left out of the balancer's choice for a
/// while, longer each time.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx answers (and gateway errors) in a row that eject an endpoint.
    #[serde(default = "OutlierDetection::default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Gateway errors in a row (connect failure, reset, timeout, 502, 503, 504) that eject an
    /// endpoint; none: not checked on their own (Envoy's default too).
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections end and success rates are compared.
    #[serde(default = "OutlierDetection::default_interval")]
    pub interval: Millis,
    #[serde(default = "OutlierDetection::default_base_ejection_time")]
    pub base_ejection_time: Millis,
    #[serde(default = "OutlierDetection::default_max_ejection_time")]
    pub max_ejection_time: Millis,
    #[serde(default = "OutlierDetection::default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// None (`null`): no success-rate ejection.
    #[serde(default = "OutlierDetection::default_success_rate")]
    pub success_rate: Option<SuccessRate>,
}

/// Ejects endpoints whose success rate over an interval lies more than `stdev_factor / 1000`
/// standard deviations below the mean of the cluster's endpoints.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuccessRate {
    #[serde(default = "SuccessRate::default_minimum_hosts")]
    pub minimum_hosts: u32,
    #[serde(default = "SuccessRate::default_request_volume")]
    pub request_volume: u32,
    #[serde(default = "SuccessRate::default_stdev_factor")]
    pub stdev_factor: u32,
}

/// The health defaults, by `section.field`, for `documents::defaults`.
pub(crate) fn defaults() -> [(&'static str, serde_json::Value); 14] {
    use serde_json::json;
    let success = SuccessRate::default();
    [
        ("health_check.interval_ms", json!(HealthCheck::default_interval().0)),
        ("health_check.timeout_ms", json!(HealthCheck::default_timeout().0)),
        ("health_check.unhealthy_threshold", json!(HealthCheck::default_unhealthy_threshold())),
        ("health_check.healthy_threshold", json!(HealthCheck::default_healthy_threshold())),
        ("health_check.jitter_ms", json!(HealthCheck::default_jitter().0)),
        ("health_check.http.expected_statuses", json!(HttpCheck::default_expected_statuses())),
        ("outlier_detection.consecutive_5xx", json!(OutlierDetection::default_consecutive_5xx())),
        ("outlier_detection.interval_ms", json!(OutlierDetection::default_interval().0)),
        ("outlier_detection.base_ejection_time_ms", json!(OutlierDetection::default_base_ejection_time().0)),
        ("outlier_detection.max_ejection_time_ms", json!(OutlierDetection::default_max_ejection_time().0)),
        ("outlier_detection.max_ejection_percent", json!(OutlierDetection::default_max_ejection_percent())),
        ("success_rate.minimum_hosts", json!(success.minimum_hosts)),
        ("success_rate.request_volume", json!(success.request_volume)),
        ("success_rate.stdev_factor", json!(success.stdev_factor)),
    ]
}

// === impl HealthCheck ===

impl HealthCheck {
    fn default_interval() -> Millis {
        Millis(5_000)
    }
    fn default_timeout() -> Millis {
        Millis(1_000)
    }
    fn default_unhealthy_threshold() -> u32 {
        2
    }
    fn default_healthy_threshold() -> u32 {
        1
    }
    fn default_jitter() -> Millis {
        Millis(0)
    }
}

impl HttpCheck {
    /// Envoy's: 200 only.
    fn default_expected_statuses() -> Vec<u16> {
        vec![200]
    }
}

// === impl OutlierDetection ===

impl OutlierDetection {
    fn default_consecutive_5xx() -> u32 {
        5
    }
    fn default_interval() -> Millis {
        Millis(10_000)
    }
    fn default_base_ejection_time() -> Millis {
        Millis(30_000)
    }
    fn default_max_ejection_time() -> Millis {
        Millis(300_000)
    }
    fn default_max_ejection_percent() -> u32 {
        10
    }
    fn default_success_rate() -> Option<SuccessRate> {
        Some(SuccessRate::default())
    }
}

impl Default for SuccessRate {
    /// Envoy's.
    fn default() -> SuccessRate {
        SuccessRate { minimum_hosts: 5, request_volume: 100, stdev_factor: 1900 }
    }
}

impl SuccessRate {
    fn default_minimum_hosts() -> u32 {
        SuccessRate::default().minimum_hosts
    }
    fn default_request_volume() -> u32 {
        SuccessRate::default().request_volume
    }
    fn default_stdev_factor() -> u32 {
        SuccessRate::default().stdev_factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_keys_read_with_the_defaults_of_the_rest() {
        let check: HealthCheck = serde_json::from_str(r#"{"http": {"path": "/healthz"}, "interval": "1s", "timeout": "500ms", "unhealthy_threshold": 2, "healthy_threshold": 1}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check.http.map(|h| h.expected_statuses), Some(vec![200]));
        assert_eq!((check.interval, check.timeout, check.jitter), (Millis(1_000), Millis(500), Millis(0)));
        let outlier: OutlierDetection = serde_json::from_str(r#"{"consecutive_5xx": 5, "consecutive_gateway_errors": 3, "base_ejection_time": "30s", "max_ejection_percent": 10}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((outlier.interval, outlier.max_ejection_time), (Millis(10_000), Millis(300_000)));
        assert_eq!(outlier.success_rate, Some(SuccessRate::default()));
        let off: OutlierDetection = serde_json::from_str(r#"{"success_rate": null}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off.success_rate, None);
    }
}
