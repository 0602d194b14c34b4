//! Per-route counters across a swap: made on a route's first request, and shared by the
//! same route of the next compiled config.

use std::error::Error;
use std::sync::Arc;

use meshproxy_engine::compile::{self, CompiledListener, Context};
use meshproxy_engine::Config;
use meshproxy_proxy::endpoint::EndpointRegistry;
use meshproxy_telemetry::stats::Stats;
use meshproxy_telemetry::traffic::TrafficKey;

fn compiled(stats: &Arc<Stats>, endpoints: &EndpointRegistry, doc: &serde_json::Value) -> Result<Vec<CompiledListener>, Box<dyn Error>> {
    let config: Config = serde_json::from_value(doc.clone())?;
    let cx = Context { endpoints, stats, identity: &Arc::default(), telemetry: &Arc::default(), running: &[], listeners: &[] };
    compile::compile(&config, cx).map_err(|problems| format!("{problems:?}").into())
}

#[test]
fn route_stats_are_made_on_the_first_request_and_shared_across_a_swap() -> Result<(), Box<dyn Error>> {
    let (stats, endpoints) = (Arc::new(Stats::default()), EndpointRegistry::default());
    let doc = serde_json::json!({
        "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [
            {"name": "a", "match": {"host": "a"}, "cluster": "app"},
            {"name": "b", "match": {"host": "b"}, "cluster": "app"},
        ]}],
        "clusters": [{"name": "app", "endpoints": [{"address": "127.0.0.1:8080"}]}],
    });
    let traffic_of = |listeners: &[CompiledListener], route: usize| {
        let snapshot = &listeners[0].snapshot;
        let (route, target) = (&snapshot.routes.routes[route], &snapshot.routes.routes[route].targets()[0]);
        target
            .traffic(&stats.traffic, || TrafficKey {
                direction: snapshot.direction,
                listener: snapshot.name.clone(),
                route: route.name.clone(),
                cluster: target.cluster.name.clone(),
            })
            .clone()
    };
    let before = compiled(&stats, &endpoints, &doc)?;
    let routes = || stats.traffic.json()["stats"].as_array().map(|all| all.iter().map(|s| s["route"].clone()).collect::<Vec<_>>());
    assert_eq!(routes(), Some(vec![serde_json::json!("")]), "only the listener's unrouted stats, before any request");
    let first = traffic_of(&before, 0);
    assert_eq!(routes(), Some(vec![serde_json::json!(""), serde_json::json!("a")]), "route b carried nothing");
    let after = compiled(&stats, &endpoints, &doc)?;
    assert!(Arc::ptr_eq(&first, &traffic_of(&after, 0)), "the swapped-in route counts on");
    assert!(Arc::ptr_eq(&before[0].snapshot.unrouted, &after[0].snapshot.unrouted));
    Ok(())
}
