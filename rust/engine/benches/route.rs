//! Route lookup in tables of 10, 1,000 and 10,000 routes, and what a config swap costs the
//! engine for a 10,000-route / 100,000-endpoint document: parsing the JSON the Python layer
//! hands over, compiling it into listener snapshots, and a whole apply on a running engine.
//!
//! The tables look like a large mesh: ten routes per service host (path prefixes, a catch-all
//! last), every fifth route also matching a header, some limited to GET/HEAD. Lookups go to a
//! route in the middle of the table and to one near its end; routes are tried in order, so
//! the second shows the cost of a long table.
#![allow(clippy::panic, reason = "a benchmark whose setup fails has nothing to measure")]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use meshproxy_proxy::endpoint::EndpointRegistry;
use meshproxy_proxy::route::{RequestTarget, RouteTable};
use meshproxy_engine::compile::{self, CompiledListener, Context};
use meshproxy_telemetry::stats::Stats;
use meshproxy_engine::{Config, Engine};
use serde_json::{json, Value};

const ROUTES_PER_HOST: usize = 10;
const TABLE_SIZES: [usize; 3] = [10, 1_000, 10_000];

/// A config with `routes` routes on one listener and `clusters` clusters of `endpoints` each.
fn document(routes: usize, clusters: usize, endpoints: usize) -> Value {
    let routes: Vec<Value> = (0..routes)
        .map(|k| {
            let (host, slot) = (k / ROUTES_PER_HOST, k % ROUTES_PER_HOST);
            let mut matcher = json!({"host": format!("svc-{host}.mesh.local")});
            matcher["path_prefix"] =
                if slot == ROUTES_PER_HOST - 1 { json!("/") } else { json!(format!("/api/v{slot}/")) };
            if slot % 5 == 1 {
                matcher["headers"] = json!({"x-tenant": format!("tenant-{slot}")});
            }
            if slot == 3 {
                matcher["method"] = json!(["GET", "HEAD"]);
            }
            json!({"name": format!("r{k}"), "match": matcher, "cluster": format!("c{}", k % clusters)})
        })
        .collect();
    let clusters: Vec<Value> = (0..clusters)
        .map(|c| {
            let endpoints: Vec<Value> = (0..endpoints)
                .map(|e| json!({"address": format!("10.{}.{}.{}:8080", c / 256, c % 256, e), "weight": 1 + e % 3}))
                .collect();
            json!({"name": format!("c{c}"), "endpoints": endpoints})
        })
        .collect();
    json!({
        "listeners": [{"name": "outbound", "address": "127.0.0.1:15001", "routes": routes}],
        "clusters": clusters,
    })
}

fn compile(config: &Config, endpoints: &EndpointRegistry, stats: &std::sync::Arc<Stats>) -> Vec<CompiledListener> {
    match compile::compile(config, Context { endpoints, stats, identity: &std::sync::Arc::default(), telemetry: &std::sync::Arc::default(), running: &[], listeners: &[] }) {
        Ok(listeners) => listeners,
        Err(problems) => panic!("the benchmark config does not compile: {problems:?}"),
    }
}

fn parse(text: &str) -> Config {
    Config::from_json(text).unwrap_or_else(|e| panic!("the benchmark config does not parse: {e}"))
}

/// A request for route `k`'s host and path, carrying the header every fifth route wants.
struct Request {
    host: String,
    path: String,
    headers: HeaderMap,
}

impl Request {
    fn for_route(k: usize) -> Request {
        let (host, slot) = (k / ROUTES_PER_HOST, k % ROUTES_PER_HOST);
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("tenant-6"));
        headers.insert("user-agent", HeaderValue::from_static("bench"));
        Request { host: format!("svc-{host}.mesh.local"), path: format!("/api/v{slot}/items/42"), headers }
    }

    fn target(&self) -> RequestTarget<'_> {
        RequestTarget { host: &self.host, path: &self.path, method: &Method::GET, headers: &self.headers, authority: &self.host, connect: false, destination: None }
    }
}

fn lookup(c: &mut Criterion) {
    let (endpoints, stats) = (EndpointRegistry::default(), std::sync::Arc::new(Stats::default()));
    let mut group = c.benchmark_group("route_lookup");
    for size in TABLE_SIZES {
        let config = parse(&document(size, 10, 2).to_string());
        let listeners = compile(&config, &endpoints, &stats);
        let table: &RouteTable = &listeners[0].snapshot.routes;
        // Route 6 of a host wants `x-tenant: tenant-6`, which the request carries.
        for (case, k) in [("middle", size / 2 + 6), ("end", size - ROUTES_PER_HOST + 6)] {
            let request = Request::for_route(k.min(size - 1));
            let expected = format!("r{}", k.min(size - 1));
            let found = table.find(&request.target()).map(|route| route.name.to_string());
            assert_eq!(found.as_deref(), Some(expected.as_str()), "{case} of {size}");
            group.bench_with_input(BenchmarkId::new(case, size), &request, |b, request| {
                b.iter(|| table.find(black_box(&request.target())).is_some())
            });
        }
    }
    group.finish();
}

fn swap(c: &mut Criterion) {
    let text = document(10_000, 1_000, 100).to_string();
    let config = parse(&text);
    let (endpoints, stats) = (EndpointRegistry::default(), std::sync::Arc::new(Stats::default()));
    // The snapshot being replaced stays alive during a swap, so endpoint state is found, not
    // created, as in a reload that keeps most of the mesh.
    let _running = compile(&config, &endpoints, &stats);
    let mut group = c.benchmark_group("swap_10k_routes_100k_endpoints");
    group.sample_size(10);
    group.bench_function("parse_json", |b| b.iter_with_large_drop(|| parse(black_box(&text))));
    group.bench_function("compile", |b| b.iter_with_large_drop(|| compile(black_box(&config), &endpoints, &stats)));
    // What a reload costs the engine once the document is parsed: compile, swap the listener's
    // snapshot, drop the one it replaces, forget endpoints no cluster lists.
    let mut listening = serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}"));
    listening["listeners"][0]["address"] = json!("127.0.0.1:0");
    let listening: Config = serde_json::from_value(listening).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(&listening, Some(1)).unwrap_or_else(|e| panic!("the engine does not start: {e}"));
    group.bench_function("apply", |b| b.iter(|| engine.apply(black_box(&listening)).is_ok()));
    group.finish();
}

criterion_group!(benches, lookup, swap);
criterion_main!(benches);
