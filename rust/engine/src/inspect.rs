//! What the admin API shows of the running clusters: each endpoint with its weight, its health
//! (`healthy`, `unhealthy`, `ejected`, or `unchecked` without health settings), the live state
//! the balancer reads (requests in flight, peak-EWMA latency) and its connections.
//! Read on request from a control thread, with relaxed atomics and short pool locks.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use meshproxy_proxy::cluster::Cluster;
use meshproxy_proxy::endpoint::Endpoint;
use meshproxy_proxy::health::Status;

/// The clusters by name, each with its policy, upstream protocol and endpoints in config order.
pub fn clusters_json(clusters: &[Arc<Cluster>]) -> Value {
    let map: Map<String, Value> = clusters.iter().map(|c| (c.name.to_string(), cluster_json(c))).collect();
    Value::Object(map)
}

fn cluster_json(cluster: &Cluster) -> Value {
    let members = cluster.members();
    json!({
        "lb": members.balancer.policy().name(),
        "protocol": cluster.protocol,
        "tls": cluster.tls.is_some(),
        "endpoints": members.endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
    })
}

/// In-flight counts, latency and connections belong to the address (and how it is secured),
/// so clusters listing the same address show the same figures.
fn endpoint_json(endpoint: &Endpoint) -> Value {
    let (idle_http1, http2_connections) = endpoint.state.connections();
    json!({
        "address": &*endpoint.address,
        "weight": endpoint.weight,
        "health": Status::of(endpoint.health.as_deref()).name(),
        "in_flight": endpoint.state.in_flight.get(),
        "latency_ewma_ms": endpoint.state.latency.estimate_ns() / 1e6,
        "pool": {
            "idle_http1": idle_http1,
            "http2_connections": http2_connections,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshproxy_config::Config;
    use meshproxy_proxy::endpoint::EndpointRegistry;
    use crate::compile::{compile_all, Context};

    fn clusters(doc: Value) -> Vec<Arc<Cluster>> {
        let config: Config = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
        let (endpoints, stats, identity) = (EndpointRegistry::default(), Arc::default(), Arc::default());
        let cx = Context { endpoints: &endpoints, stats: &stats, identity: &identity, telemetry: &Arc::default(), running: &[], listeners: &[] };
        compile_all(&config, cx).unwrap_or_else(|p| panic!("{p:?}")).clusters
    }

    #[test]
    fn every_cluster_is_listed_by_name_with_its_endpoints_in_config_order_and_their_state() {
        let compiled = clusters(json!({
            "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [{"cluster": "b"}]}],
            "clusters": [
                {"name": "b", "lb": "round_robin", "protocol": "http2",
                 "endpoints": [{"address": "127.0.0.1:9002", "weight": 3}, {"address": "127.0.0.1:9001"}]},
                {"name": "a", "endpoints": []},
            ],
        }));
        let members = compiled[0].members();
        let in_flight = members.endpoints[0].start();
        members.endpoints[0].observe_latency(std::time::Duration::from_millis(40));

        let shown = clusters_json(&compiled);
        assert_eq!(shown["a"], json!({"lb": "p2c_ewma", "protocol": "http1", "tls": false, "endpoints": []}));
        assert_eq!((&shown["b"]["lb"], &shown["b"]["protocol"]), (&json!("round_robin"), &json!("http2")));
        let endpoints = &shown["b"]["endpoints"];
        assert_eq!(endpoints[0]["address"], "127.0.0.1:9002");
        assert_eq!((&endpoints[0]["weight"], &endpoints[0]["in_flight"]), (&json!(3), &json!(1)));
        assert_eq!(endpoints[0]["latency_ewma_ms"], 40.0);
        assert_eq!(endpoints[0]["pool"], json!({"idle_http1": 0, "http2_connections": 0}));
        assert_eq!(endpoints[0]["health"], "unchecked", "no health settings");
        assert_eq!((&endpoints[1]["address"], &endpoints[1]["in_flight"]), (&json!("127.0.0.1:9001"), &json!(0)));
        drop(in_flight);
        assert_eq!(clusters_json(&compiled)["b"]["endpoints"][0]["in_flight"], 0);
    }
}
