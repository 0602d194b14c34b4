use std::time::{Duration, Instant};

use meshproxy_config as config;

use super::*;
use crate::health::tests::{cluster_health, endpoints};

fn settings(doc: &str) -> config::OutlierDetection {
    serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}"))
}

fn hosts(health: &ClusterHealth, count: u16) -> Vec<Arc<HostHealth>> {
    endpoints(health, count).iter().filter_map(|e| e.health.clone()).collect()
}

#[test]
fn consecutive_5xx_eject_and_a_success_ends_the_run() {
    let health = cluster_health(None, Some(&settings(r#"{"consecutive_5xx": 3, "max_ejection_percent": 100}"#)));
    let hosts = hosts(&health, 2);
    let fail = Outcome::Failure { gateway: false };
    report(&health, &hosts[0], fail);
    report(&health, &hosts[0], fail);
    report(&health, &hosts[0], Outcome::Success);
    report(&health, &hosts[0], fail);
    report(&health, &hosts[0], fail);
    assert!(!hosts[0].outlier.is_ejected());
    report(&health, &hosts[0], fail);
    assert!(hosts[0].outlier.is_ejected());
    assert_eq!(health.stats.ejections_total.get(), 1);
}

#[test]
fn gateway_errors_eject_on_their_own_count_and_a_500_ends_their_run() {
    let health = cluster_health(None, Some(&settings(r#"{"consecutive_5xx": 10, "consecutive_gateway_errors": 2, "max_ejection_percent": 100}"#)));
    let hosts = hosts(&health, 2);
    report(&health, &hosts[0], Outcome::of(StatusCode::BAD_GATEWAY));
    report(&health, &hosts[0], Outcome::of(StatusCode::INTERNAL_SERVER_ERROR));
    report(&health, &hosts[0], Outcome::of(StatusCode::GATEWAY_TIMEOUT));
    assert!(!hosts[0].outlier.is_ejected());
    report(&health, &hosts[0], Outcome::Failure { gateway: true });
    assert!(hosts[0].outlier.is_ejected());
}

#[test]
fn the_share_ejected_is_capped_but_one_may_always_be() {
    let health = cluster_health(None, Some(&settings(r#"{"consecutive_5xx": 1, "max_ejection_percent": 10}"#)));
    let hosts = hosts(&health, 4);
    let now = Instant::now();
    assert!(eject(&health, &hosts[0], "test", now), "10 % of 4 is less than one: one may still go");
    assert!(!eject(&health, &hosts[1], "test", now));
    let health = cluster_health(None, Some(&settings(r#"{"consecutive_5xx": 1, "max_ejection_percent": 50}"#)));
    let hosts = self::hosts(&health, 4);
    assert!(eject(&health, &hosts[0], "test", now) && eject(&health, &hosts[1], "test", now));
    assert!(!eject(&health, &hosts[2], "test", now));
}

#[test]
fn ejection_time_grows_with_repeats_up_to_the_maximum_and_ends_at_a_sweep() {
    let doc = r#"{"base_ejection_time": "1s", "max_ejection_time": "2500ms", "max_ejection_percent": 100, "success_rate": null}"#;
    let health = cluster_health(None, Some(&settings(doc)));
    let hosts = hosts(&health, 1);
    let start = Instant::now();
    let until = |host: &HostHealth| host.outlier.ejection().until.map(|t| t - start);
    assert!(eject(&health, &hosts[0], "test", start));
    assert_eq!(until(&hosts[0]), Some(Duration::from_secs(1)));
    sweep(&health, start + Duration::from_millis(999));
    assert!(hosts[0].outlier.is_ejected());
    sweep(&health, start + Duration::from_secs(1));
    assert!(!hosts[0].outlier.is_ejected());
    assert!(eject(&health, &hosts[0], "test", start));
    assert_eq!(until(&hosts[0]), Some(Duration::from_secs(2)));
    sweep(&health, start + Duration::from_secs(3));
    assert!(eject(&health, &hosts[0], "test", start));
    assert_eq!(until(&hosts[0]), Some(Duration::from_millis(2500)), "capped");
}

#[test]
fn a_success_rate_far_below_the_others_ejects() {
    let doc = r#"{"max_ejection_percent": 100, "success_rate": {"minimum_hosts": 5, "request_volume": 10, "stdev_factor": 1000}}"#;
    let health = cluster_health(None, Some(&settings(doc)));
    let hosts = hosts(&health, 6);
    for (i, host) in hosts.iter().enumerate() {
        for n in 0..20 {
            // The first endpoint fails every other attempt; the others never do.
            let outcome = if i == 0 && n % 2 == 0 { Outcome::Failure { gateway: false } } else { Outcome::Success };
            report(&health, host, outcome);
        }
    }
    sweep(&health, Instant::now());
    assert!(hosts[0].outlier.is_ejected());
    assert!(hosts[1..].iter().all(|h| !h.outlier.is_ejected()));
}
