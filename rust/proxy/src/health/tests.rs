use std::sync::atomic::Ordering::Relaxed;

use http::uri::Authority;

use super::*;
use crate::endpoint::EndpointRegistry;

pub(crate) fn endpoints(registry: &EndpointRegistry, count: u16) -> Vec<Endpoint> {
    (1..=count)
        .filter_map(|port| {
            let parse = |address: &str| {
                let key = meshproxy_config::address::endpoint(address)?;
                Ok((key, address.parse::<Authority>().map_err(|e| e.to_string())?))
            };
            registry.endpoint(&format!("127.0.0.1:{port}"), None, 1, parse).ok()
        })
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
    let registry = EndpointRegistry::default();
    let health = cluster_health(Some(&check(1, 1)), None);
    let members = health.attach(endpoints(&registry, 4), Policy::RoundRobin);
    let hosts: Vec<_> = members.endpoints.iter().filter_map(|e| e.health.clone()).collect();
    let picked = |members: &Members| {
        let mut seen: Vec<&str> = (0..40).filter_map(|_| members.pick().map(|e| &*e.address)).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    // None checked yet: every one is unhealthy, so the balancer panics and picks among all.
    assert_eq!(picked(&members), 4);
    for host in &hosts {
        host.check_failed.store(false, Relaxed);
    }
    hosts[0].check_failed.store(true, Relaxed);
    let cell = ArcSwap::from_pointee(members);
    health.rebalance(&cell);
    assert_eq!(picked(&cell.load()), 3);
    assert_eq!(ClusterHealth::counts(&cell.load()), (3, 1, 0));
    hosts[1].check_failed.store(true, Relaxed);
    health.rebalance(&cell);
    assert_eq!(picked(&cell.load()), 2, "half available: not below the panic threshold");
    hosts[2].check_failed.store(true, Relaxed);
    health.rebalance(&cell);
    assert_eq!(picked(&cell.load()), 4, "one of four: panic, all are picked");
    assert_eq!(status(&cell.load().endpoints[0]), Status::Unhealthy);
    assert_eq!(status(&cell.load().endpoints[3]), Status::Healthy);
}

#[test]
fn an_address_keeps_its_health_across_new_member_lists() {
    let registry = EndpointRegistry::default();
    let health = cluster_health(Some(&check(1, 1)), None);
    let cell = ArcSwap::from_pointee(health.attach(endpoints(&registry, 2), Policy::RoundRobin));
    let first = cell.load().endpoints[0].health.clone();
    health.replace_members(&cell, Members::new(Policy::RoundRobin, endpoints(&registry, 3)));
    let again = cell.load().endpoints[0].health.clone();
    assert!(matches!((first, again), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b)));
    assert_eq!(health.hosts().len(), 3);
}
