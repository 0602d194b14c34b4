use super::*;
use meshproxy_balance::Policy;
use meshproxy_proxy::route::{HeaderCheck, PathMatch, Route};

fn problems(doc: serde_json::Value) -> Vec<String> {
    let config: Config = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    check(&config).iter().map(ToString::to_string).collect()
}

fn listener(routes: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{"name": "out", "address": "127.0.0.1:0", "routes": routes}])
}

#[test]
fn the_readme_config_compiles() {
    let doc = serde_json::json!({
        "listeners": listener(serde_json::json!([
            {"match": {"host": "orders", "headers": {"x-channel": "beta"}}, "cluster": "orders-v2"},
            {"match": {"host": "orders", "path_prefix": "/"}, "split": [{"cluster": "orders-v1", "weight": 90}, {"cluster": "orders-v2", "weight": 10}]},
        ])),
        "clusters": [
            {"name": "orders-v1", "lb": "p2c_ewma", "protocol": "http1", "endpoints": [{"address": "127.0.0.1:8081"}, {"address": "127.0.0.1:8082", "weight": 2}]},
            {"name": "orders-v2", "endpoints": [{"address": "127.0.0.1:8083"}]},
        ],
    });
    assert_eq!(problems(doc), Vec::<String>::new());
}

/// Compiles `doc` over the clusters of `running`, as a reload does.
fn clusters_over(doc: serde_json::Value, registry: &EndpointRegistry, running: &[Arc<Cluster>]) -> Vec<Arc<Cluster>> {
    let config: Config = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    let (stats, identity, telemetry) = (Arc::default(), Arc::default(), Arc::default());
    let cx = Context { endpoints: registry, stats: &stats, identity: &identity, telemetry: &telemetry, running, listeners: &[] };
    compile_all(&config, cx).unwrap_or_else(|p| panic!("{p:?}")).clusters
}

fn mesh(lb: &str, weight: u32) -> serde_json::Value {
    serde_json::json!({
        "listeners": listener(serde_json::json!([{"cluster": "a"}])),
        "clusters": [
            {"name": "a", "lb": lb, "endpoints": [{"address": "127.0.0.1:8081"}, {"address": "127.0.0.1:8082", "weight": weight}]},
            {"name": "b", "endpoints": [{"address": "127.0.0.1:8083"}]},
        ],
    })
}

#[test]
fn a_reload_keeps_a_cluster_whole_or_its_members_when_it_keeps_its_endpoints() {
    let registry = EndpointRegistry::default();
    let running = clusters_over(mesh("p2c_ewma", 2), &registry, &[]);
    let again = clusters_over(mesh("p2c_ewma", 2), &registry, &running);
    for (old, new) in running.iter().zip(&again) {
        assert!(Arc::ptr_eq(old, new), "{} is kept whole", old.name);
    }
    // A weight or a policy changed: the cluster's members are built again; the other stays.
    for doc in [mesh("p2c_ewma", 3), mesh("round_robin", 2)] {
        let changed = clusters_over(doc, &registry, &running);
        assert!(!Arc::ptr_eq(&running[0].members(), &changed[0].members()));
        assert!(Arc::ptr_eq(&running[1], &changed[1]));
    }
    // Another setting changed: a new cluster, with the members it had.
    let mut doc = mesh("p2c_ewma", 2);
    doc["clusters"][0]["connect_timeout"] = serde_json::json!("250ms");
    let changed = clusters_over(doc, &registry, &running);
    assert!(!Arc::ptr_eq(&running[0], &changed[0]));
    assert_eq!(changed[0].connect_timeout, std::time::Duration::from_millis(250));
    assert!(Arc::ptr_eq(&running[0].members(), &changed[0].members()));
}

#[test]
fn members_set_apart_from_the_config_are_compared_as_they_run() {
    let registry = EndpointRegistry::default();
    let running = clusters_over(mesh("p2c_ewma", 2), &registry, &[]);
    // As discovery does: the running list is no longer the one the config gave.
    let mut problems = Vec::new();
    let endpoint = |address: &str| config::EndpointConfig { address: address.into(), weight: 1 };
    let set = compile_members("clusters[0]", &[endpoint("127.0.0.1:8081")], Policy::P2cEwma, None, &registry, &mut problems);
    running[0].set_members(set);
    let again = clusters_over(mesh("p2c_ewma", 2), &registry, &running);
    let members = again[0].members();
    let addresses: Vec<&str> = members.endpoints.iter().map(|e| &*e.address).collect();
    assert_eq!(addresses, ["127.0.0.1:8081", "127.0.0.1:8082"]);
}

/// What a running engine holds between reloads: its clusters and listener snapshots.
struct Running {
    clusters: Vec<Arc<Cluster>>,
    listeners: Vec<Arc<ListenerSnapshot>>,
}

/// Compiles `doc` over `running`, as a reload does.
fn reload(doc: &serde_json::Value, registry: &EndpointRegistry, running: &Running) -> Running {
    let config: Config = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}"));
    let (stats, identity, telemetry) = (Arc::default(), Arc::default(), Arc::default());
    let cx = Context { endpoints: registry, stats: &stats, identity: &identity, telemetry: &telemetry, running: &running.clusters, listeners: &running.listeners };
    let compiled = compile_all(&config, cx).unwrap_or_else(|p| panic!("{p:?}"));
    Running { clusters: compiled.clusters, listeners: compiled.listeners.into_iter().map(|l| Arc::new(l.snapshot)).collect() }
}

fn routes(running: &Running) -> &[Arc<Route>] {
    &running.listeners[0].routes.routes
}

/// Two clusters and routes of every kind: named, unnamed, with a header match and a split.
fn routed() -> serde_json::Value {
    serde_json::json!({
        "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [
            {"name": "orders", "match": {"host": "orders", "headers": {"x-channel": "beta"}}, "cluster": "a", "timeout": "2s"},
            {"match": {"path_prefix": "/static/"}, "cluster": "b"},
            {"name": "canary", "split": [{"cluster": "a", "weight": 90}, {"cluster": "b", "weight": 10}]},
            {"name": "rest", "cluster": "b"},
        ]}],
        "clusters": [
            {"name": "a", "endpoints": [{"address": "127.0.0.1:8081"}]},
            {"name": "b", "endpoints": [{"address": "127.0.0.1:8082"}]},
        ],
    })
}

fn kept(before: &Running, after: &Running) -> Vec<bool> {
    routes(after).iter().zip(routes(before)).map(|(new, old)| Arc::ptr_eq(new, old)).collect()
}

#[test]
fn a_reload_giving_the_same_routes_keeps_them_as_they_run() {
    let registry = EndpointRegistry::default();
    let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
    let again = reload(&routed(), &registry, &first);
    assert_eq!(kept(&first, &again), [true; 4]);
    // A check, or a first apply, has nothing to keep.
    let fresh = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
    assert_eq!(kept(&first, &fresh), [false; 4]);
}

#[test]
fn a_changed_route_is_compiled_again_and_the_others_are_kept() {
    let registry = EndpointRegistry::default();
    let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
    let change = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut doc = routed();
        edit(&mut doc["listeners"][0]["routes"]);
        reload(&doc, &registry, &first)
    };
    let timeout = change(&|r| r[0]["timeout"] = serde_json::json!("5s"));
    assert_eq!(kept(&first, &timeout), [false, true, true, true]);
    assert_eq!(routes(&timeout)[0].timeout, Some(std::time::Duration::from_secs(5)));

    let header = change(&|r| r[0]["match"]["headers"]["x-channel"] = serde_json::json!("gamma"));
    assert_eq!(kept(&first, &header), [false, true, true, true]);
    assert!(matches!(&routes(&header)[0].matcher.headers[0].1, HeaderCheck::Exact(v) if v == "gamma"));

    let path = change(&|r| r[1]["match"]["path_prefix"] = serde_json::json!("/assets/"));
    assert_eq!(kept(&first, &path), [true, false, true, true]);
    assert!(matches!(&routes(&path)[1].matcher.path, PathMatch::Prefix(p) if p == "/assets/"));

    let weight = change(&|r| r[2]["split"][1]["weight"] = serde_json::json!(30));
    assert_eq!(kept(&first, &weight), [true, true, false, true]);
    assert_eq!(routes(&weight)[2].compiled_from.split.as_ref().map(|s| s[1].weight), Some(30));

    let cluster = change(&|r| r[3]["cluster"] = serde_json::json!("a"));
    assert_eq!(kept(&first, &cluster), [true, true, true, false]);
    assert_eq!(&*routes(&cluster)[3].targets()[0].cluster.name, "a");
}

#[test]
fn a_route_to_a_cluster_compiled_again_is_compiled_again() {
    let registry = EndpointRegistry::default();
    let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
    let mut doc = routed();
    doc["clusters"][1]["endpoints"][0]["address"] = serde_json::json!("127.0.0.1:9090");
    let moved = reload(&doc, &registry, &first);
    // Routes to b (alone or in the split) send to the new b; the route to a alone stays.
    assert_eq!(kept(&first, &moved), [true, false, false, false]);
    for route in &routes(&moved)[1..] {
        let b = route.targets().iter().find(|t| &*t.cluster.name == "b").map(|t| t.cluster.clone());
        assert!(b.is_some_and(|b| Arc::ptr_eq(&b, &moved.clusters[1])), "{}", route.name);
    }
}

#[test]
fn a_moved_route_is_kept_by_name_and_an_unnamed_one_only_at_its_index() {
    let registry = EndpointRegistry::default();
    let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
    let mut doc = routed();
    let table = doc["listeners"][0]["routes"].as_array_mut().map(std::mem::take).unwrap_or_default();
    // Moved to the front: `rest`; `orders`, `canary` and the unnamed one shift by one.
    doc["listeners"][0]["routes"] = serde_json::json!([table[3], table[0], table[1], table[2]]);
    let moved = reload(&doc, &registry, &first);
    let old = routes(&first);
    let same = |new: usize, old_index: usize| Arc::ptr_eq(&routes(&moved)[new], &old[old_index]);
    assert!(same(0, 3) && same(1, 0) && same(3, 2));
    // Unnamed, its stats name is its index: `out/2` now, not the `out/1` it ran as.
    assert!(!same(2, 1));
    assert_eq!(&*routes(&moved)[2].name, "out/2");
}

#[test]
fn routes_of_a_listener_that_changes_direction_are_compiled_again() {
    let registry = EndpointRegistry::default();
    let first = reload(&routed(), &registry, &Running { clusters: vec![], listeners: vec![] });
    let mut doc = routed();
    doc["listeners"][0]["direction"] = serde_json::json!("inbound");
    assert_eq!(kept(&first, &reload(&doc, &registry, &first)), [false; 4]);
}

#[test]
fn each_mistake_is_reported_at_its_path() {
    let doc = serde_json::json!({
        "listeners": [
            {"name": "a", "address": "127.0.0.1:9000", "routes": [
                {"cluster": "missing"},
                {"match": {"path_regex": "(unclosed"}, "cluster": "c"},
                {"split": [{"cluster": "c", "weight": 0}]},
            ]},
            {"name": "b", "address": "127.0.0.1:9000"},
            {"name": "c", "address": "localhost"},
        ],
        "clusters": [{"name": "c", "lb": "fastest", "endpoints": [{"address": "nope"}]}],
    });
    let got = problems(doc);
    let expect = [
        "clusters[0].lb: 'fastest' is not valid; expected one of round_robin, random, least_request, p2c_ewma",
        "clusters[0].endpoints[0].address: 'nope' is not a valid address; expected HOST:PORT, e.g. 127.0.0.1:8080",
        "listeners[0].routes[0].cluster: unknown cluster 'missing'; defined clusters: c",
        "listeners[0].routes[1].match.path_regex: not a valid regular expression",
        "listeners[0].routes[2].split: the weights sum to 0; at least one must be positive",
        "listeners[1].address: listeners 'a' and 'b' both use 127.0.0.1:9000",
        "listeners[2].address: 'localhost' is not a valid address; expected IP:PORT, e.g. 127.0.0.1:15001",
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for (got, want) in got.iter().zip(expect) {
        assert!(got.starts_with(want), "{got} / {want}");
    }
}

/// `routed()` with a rate limit on the listener and a mirror to b on the first route.
fn with_rules(burst: u32) -> serde_json::Value {
    let mut doc = routed();
    doc["listeners"][0]["rate_limit"] = serde_json::json!({"requests_per_second": 10, "burst": burst});
    doc["listeners"][0]["routes"][0]["mirror"] = serde_json::json!({"cluster": "b"});
    doc
}

#[test]
fn a_listener_rate_limit_given_again_is_kept_with_its_tokens() {
    let registry = EndpointRegistry::default();
    let first = reload(&with_rules(5), &registry, &Running { clusters: vec![], listeners: vec![] });
    let limit = |running: &Running| running.listeners[0].rate_limit.clone().unwrap_or_else(|| panic!("a rate limit"));
    assert!(Arc::ptr_eq(&limit(&first), &limit(&reload(&with_rules(5), &registry, &first))));
    assert!(!Arc::ptr_eq(&limit(&first), &limit(&reload(&with_rules(6), &registry, &first))));
}

#[test]
fn a_route_mirroring_to_a_cluster_compiled_again_is_compiled_again() {
    let registry = EndpointRegistry::default();
    let first = reload(&with_rules(5), &registry, &Running { clusters: vec![], listeners: vec![] });
    assert_eq!(kept(&first, &reload(&with_rules(5), &registry, &first)), [true; 4]);
    let mut doc = with_rules(5);
    doc["clusters"][1]["endpoints"][0]["address"] = serde_json::json!("127.0.0.1:9090");
    let moved = reload(&doc, &registry, &first);
    // The first route sends to a, which stays, but mirrors to b, which does not.
    assert!(!kept(&first, &moved)[0]);
    let mirror = routes(&moved)[0].rules.mirror.as_ref().map(|m| m.cluster.clone());
    assert!(mirror.is_some_and(|b| Arc::ptr_eq(&b, &moved.clusters[1])));
}

#[test]
fn timeouts_the_schema_refuses_are_refused_at_their_paths() {
    let doc = serde_json::json!({
        "listeners": listener(serde_json::json!([
            {"cluster": "a", "timeout": "0s", "timeout_covers": "response"},
            {"cluster": "a", "timeout": "2s", "timeout_covers": "response", "idle_timeout": "300ms"},
        ])),
        "clusters": [{"name": "a", "idle_timeout": "0s"}],
    });
    let got = problems(doc);
    assert!(got.iter().any(|p| p.starts_with("listeners[0].routes[0].timeout_covers: timeout_covers: response needs a timeout")), "{got:?}");
    assert!(got.iter().any(|p| p.starts_with("clusters[0].idle_timeout: idle_timeout must be greater than 0")), "{got:?}");
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn a_capture_listener_sends_tcp_destinations_to_their_cluster_and_detects_the_rest() {
    let doc = serde_json::json!({
        "listeners": [{"name": "capture", "address": "127.0.0.1:0", "original_destination": true,
            "tcp_fallback": "passthrough_tcp", "routes": [
            {"match": {"original_destination": ["10.0.2.2:8080"]}, "cluster": "orders"},
            {"match": {"original_destination": ["10.0.2.3:6379", "10.0.3.0/24:6379"]}, "cluster": "redis"},
        ]}],
        "clusters": [
            {"name": "orders", "endpoints": [{"address": "127.0.0.1:8081"}]},
            {"name": "redis", "protocol": "tcp", "endpoints": [{"address": "127.0.0.1:6379"}]},
            {"name": "passthrough_tcp", "protocol": "tcp", "original_destination": true},
        ],
    });
    let running = reload(&doc, &EndpointRegistry::new(1), &Running { clusters: Vec::new(), listeners: Vec::new() });
    let listener = &running.listeners[0];
    // The TCP route is no HTTP route.
    assert_eq!(routes(&running).len(), 1);
    let at = |to: &str| to.parse().ok();
    let cluster = |to: &str| listener.tcp.by_destination(at(to)).ok().map(|c| c.name.to_string());
    assert_eq!(cluster("10.0.2.3:6379").as_deref(), Some("redis"));
    assert_eq!(cluster("10.0.3.9:6379").as_deref(), Some("redis"));
    // Elsewhere (an HTTP service's destination too): detected, then HTTP or the TCP passthrough.
    for elsewhere in ["10.0.2.2:8080", "10.0.3.9:6380"] {
        let mode = listener.tcp.by_destination(at(elsewhere)).err().flatten();
        assert!(matches!(mode, Some(meshproxy_proxy::tcp::Mode::Detect { fallback, .. }) if &*fallback.name == "passthrough_tcp"), "{elsewhere}");
    }
    assert!(listener.tcp.by_destination(None).is_err());
}

#[test]
fn routes_by_original_destination_take_plain_text_only() {
    let found = problems(serde_json::json!({
        "listeners": [{"name": "capture", "address": "127.0.0.1:0", "original_destination": true, "tls": "strict",
            "routes": [{"match": {"original_destination": ["10.0.2.3:6379"]}, "cluster": "redis"}]}],
        "clusters": [{"name": "redis", "protocol": "tcp", "endpoints": [{"address": "127.0.0.1:6379"}]}],
    }));
    let expected = "listeners[0].tls: routes by original destination take the app's plain-text connections (a capture listener's); set tls: disable";
    assert!(found.iter().any(|p| p == expected), "{found:?}");
}
