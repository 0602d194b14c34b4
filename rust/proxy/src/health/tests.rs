use std::sync::atomic::Ordering::Relaxed;

use http::uri::Authority;
use meshproxy_balance::Policy;

use super::host::Status;
use super::*;
use crate::cluster::Members;
use crate::endpoint::{Endpoint, EndpointRegistry};

/// `count` endpoints on 127.0.0.1, each given its health in `health`.
pub(crate) fn endpoints(health: &ClusterHealth, count: u16) -> Vec<Endpoint> {
    let registry = EndpointRegistry::default();
    let mut hosts = health.hosts();
    (1..=count)
        .filter_map(|port| {
            let parse = |address: &str| {
                let key = meshproxy_config::address::endpoint(address)?;
                Ok((key, address.parse::<Authority>().map_err(|e| e.to_string())?))
            };
            registry.endpoint(&format!("127.0.0.1:{port}"), None, 1, parse).ok()
        })
        .map(|e| Endpoint { health: Some(health.host(&mut hosts, &e.address)), ..e })
        .collect()
}

pub(crate) fn cluster_health(check: Option<&config::HealthCheck>, outlier: Option<&config::OutlierDetection>) -> Arc<ClusterHealth> {
    let health = ClusterHealth::new(&Arc::from("orders"), check, outlier, &Arc::default());
    health.unwrap_or_else(|| panic!("health settings given"))
}

fn check(unhealthy: u32, healthy: u32) -> config::HealthCheck {
    let doc = format!(r#"{{"tcp": {{}}, "unhealthy_threshold": {unhealthy}, "healthy_threshold": {healthy}}}"#);
    serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_endpoint_starts_unhealthy_and_its_first_pass_makes_it_healthy() {
    let settings = check(2, 3);
    let host = HostHealth::new(&Arc::from("127.0.0.1:1"), true);
    assert!(!host.available());
    assert!(host.record_check(true, true, &settings), "first pass");
    assert!(host.available());
    assert!(!host.record_check(false, false, &settings));
    assert!(!host.record_check(true, false, &settings), "a pass ends the run of failures");
    assert!(!host.record_check(false, false, &settings));
    assert!(host.record_check(false, false, &settings), "two failures in a row");
    assert!(!host.available());
    assert!(!host.record_check(true, false, &settings));
    assert!(!host.record_check(true, false, &settings));
    assert!(host.record_check(true, false, &settings), "three passes in a row");
    assert!(host.available());
}

#[test]
fn unhealthy_endpoints_leave_the_choice_until_fewer_than_half_are_left() {
    let health = cluster_health(Some(&check(1, 1)), None);
    let endpoints = endpoints(&health, 4);
    let hosts: Vec<_> = endpoints.iter().filter_map(|e| e.health.clone()).collect();
    let picked = |endpoints: &[Endpoint]| {
        let members = Members::by_health(Policy::RoundRobin, endpoints.to_vec());
        let mut seen: Vec<String> = (0..40).filter_map(|_| members.pick().map(|e| e.address.to_string())).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    // None checked yet: every one is unhealthy, so the balancer panics and picks among all.
    assert_eq!(picked(&endpoints), 4);
    for host in &hosts {
        host.check_failed.store(false, Relaxed);
    }
    hosts[0].check_failed.store(true, Relaxed);
    assert_eq!(picked(&endpoints), 3);
    hosts[1].check_failed.store(true, Relaxed);
    assert_eq!(picked(&endpoints), 2, "half available: not below the panic threshold");
    hosts[2].check_failed.store(true, Relaxed);
    assert_eq!(picked(&endpoints), 4, "one of four: panic, all are picked");
    assert_eq!(Status::of(endpoints[0].health.as_deref()), Status::Unhealthy);
    assert_eq!(Status::of(endpoints[3].health.as_deref()), Status::Healthy);
    assert_eq!(Status::of(None), Status::Unchecked);
}

#[test]
fn an_address_keeps_its_health_while_listed() {
    let health = cluster_health(Some(&check(1, 1)), None);
    let first = endpoints(&health, 2);
    let again = endpoints(&health, 3);
    assert!(matches!((&first[0].health, &again[0].health), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
    health.prune(|| [again[2].address.clone()].into_iter().collect());
    assert_eq!(health.hosts().len(), 1);
}
