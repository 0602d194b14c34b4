//! A cluster's endpoints replaced on their own (`Engine::set_endpoints`), as discovery does:
//! traffic moves, a refused list changes nothing, a pooled connection to an address that stays
//! is used again, and the config version stays. Real upstreams and a real client on loopback.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use meshproxy_engine::config::EndpointConfig;
use meshproxy_engine::{Config, Engine, EngineError};
use serde_json::json;

type TestResult = Result<(), Box<dyn Error>>;

/// An HTTP/1.1 upstream on loopback that answers every request with its name and the port the
/// request came from (`a 40312`), keeping connections open.
fn upstream(name: &'static str) -> Result<SocketAddr, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(name, stream));
        }
    });
    Ok(address)
}

fn serve(name: &str, stream: TcpStream) -> Result<(), std::io::Error> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        // A request without a body: its head ends with an empty line.
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
        }
        let body = format!("{name} {}", peer.port());
        write!(writer, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())?;
    }
}

/// The body of `GET /` sent through the proxy on a connection of its own.
fn get(proxy: SocketAddr) -> Result<String, Box<dyn Error>> {
    let mut stream = TcpStream::connect(proxy)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("expected 200, got {head}").into());
    }
    Ok(body.to_string())
}

/// Which upstream answered, and from which client port.
fn answer(proxy: SocketAddr) -> Result<(String, u16), Box<dyn Error>> {
    let body = get(proxy)?;
    let (name, port) = body.split_once(' ').ok_or("no port in the body")?;
    Ok((name.to_string(), port.parse()?))
}

/// One worker, so that every request uses the one pool of each address. The cluster that
/// discovery updates is `app`, second in the config, to show its index in paths.
fn start(app: &[SocketAddr]) -> Result<(Engine, SocketAddr), Box<dyn Error>> {
    let endpoints: Vec<_> = app.iter().map(|a| json!({"address": a.to_string()})).collect();
    let doc = json!({
        "workers": 1,
        "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [
            {"name": "other", "endpoints": [{"address": "127.0.0.1:9"}]},
            {"name": "app", "lb": "round_robin", "endpoints": endpoints},
        ],
    });
    let engine = Engine::start(&Config::from_json(&doc.to_string())?, None)?;
    let proxy = engine.listeners().first().map(|(_, address)| *address).ok_or("no listener")?;
    Ok((engine, proxy))
}

fn endpoints(list: &[(&str, u32)]) -> Vec<EndpointConfig> {
    list.iter().map(|&(address, weight)| EndpointConfig { address: address.to_string(), weight }).collect()
}

fn updates(engine: &Engine) -> serde_json::Value {
    engine.stats_json()["clusters"]["app"]["endpoint_updates_total"].clone()
}

fn listed(engine: &Engine) -> Vec<(String, u64)> {
    let clusters = engine.clusters_json();
    let Some(endpoints) = clusters["app"]["endpoints"].as_array() else { return Vec::new() };
    endpoints.iter().map(|e| (e["address"].as_str().unwrap_or_default().to_string(), e["weight"].as_u64().unwrap_or_default())).collect()
}

#[test]
fn new_endpoints_take_the_traffic_and_the_config_version_stays() -> TestResult {
    let (a, b) = (upstream("a")?, upstream("b")?);
    let (engine, proxy) = start(&[a])?;
    assert_eq!(answer(proxy)?.0, "a");

    engine.set_endpoints("app", &endpoints(&[(&b.to_string(), 1)]))?;

    assert_eq!((answer(proxy)?.0, answer(proxy)?.0), ("b".to_string(), "b".to_string()));
    assert_eq!(listed(&engine), [(b.to_string(), 1)]);
    assert_eq!(engine.version(), 1);
    assert_eq!(updates(&engine), 1);
    assert_eq!(engine.stats_json()["clusters"]["other"]["endpoint_updates_total"], 0);
    Ok(())
}

#[test]
fn a_refused_list_names_its_fields_and_the_running_list_stays() -> TestResult {
    let (a, b) = (upstream("a")?, upstream("b")?);
    let (engine, proxy) = start(&[a])?;

    let refused = endpoints(&[(&b.to_string(), 1), ("nope", 1), (&b.to_string(), 2)]);
    let Err(EngineError::Invalid(problems)) = engine.set_endpoints("app", &refused) else { panic!("the list was taken") };
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems, [
        format!("clusters[1].endpoints[1].address: 'nope' is not a valid address; {}", meshproxy_engine::config::address::ENDPOINT_EXAMPLE),
        format!("clusters[1].endpoints[2].address: duplicate endpoint '{b}'"),
    ]);

    assert_eq!(answer(proxy)?.0, "a");
    assert_eq!(listed(&engine), [(a.to_string(), 1)]);
    assert_eq!(updates(&engine), 0);
    Ok(())
}

#[test]
fn an_unknown_cluster_is_refused() -> TestResult {
    let a = upstream("a")?;
    let (engine, _) = start(&[a])?;
    let Err(EngineError::Invalid(problems)) = engine.set_endpoints("ghost", &endpoints(&[(&a.to_string(), 1)])) else {
        panic!("a list for a cluster the config lacks was taken")
    };
    assert_eq!(problems[0].to_string(), "clusters: no cluster named 'ghost' in the running config; clusters: other, app");
    Ok(())
}

#[test]
fn a_pooled_connection_to_an_address_that_stays_is_used_again() -> TestResult {
    let (a, b) = (upstream("a")?, upstream("b")?);
    let (engine, proxy) = start(&[a])?;
    let (first, port) = answer(proxy)?;
    assert_eq!(first, "a");

    // `a` stays with a new weight; `b` comes with weight 0, never picked.
    engine.set_endpoints("app", &endpoints(&[(&a.to_string(), 5), (&b.to_string(), 0)]))?;

    assert_eq!(listed(&engine), [(a.to_string(), 5), (b.to_string(), 0)]);
    assert_eq!(answer(proxy)?, ("a".to_string(), port), "the upstream sees the same connection");
    assert_eq!(engine.version(), 1);
    Ok(())
}

#[test]
fn an_empty_list_leaves_the_cluster_without_endpoints_until_the_next() -> TestResult {
    let a = upstream("a")?;
    let (engine, proxy) = start(&[a])?;
    engine.set_endpoints("app", &[])?;
    assert!(get(proxy).is_err_and(|e| e.to_string().contains("503")));

    engine.set_endpoints("app", &endpoints(&[(&a.to_string(), 1)]))?;
    assert_eq!(answer(proxy)?.0, "a");
    assert_eq!(updates(&engine), 2);
    Ok(())
}

#[test]
fn a_reload_of_the_list_discovery_set_keeps_its_connections() -> TestResult {
    let (a, b) = (upstream("a")?, upstream("b")?);
    let (engine, proxy) = start(&[b])?;
    engine.set_endpoints("app", &endpoints(&[(&a.to_string(), 1)]))?;
    let (_, port) = answer(proxy)?;

    // A full apply of a document with the list discovery set, as the Python layer renders it.
    let doc = json!({
        "workers": 1,
        "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "lb": "random", "endpoints": [{"address": a.to_string()}]}],
    });
    assert_eq!(engine.apply(&Config::from_json(&doc.to_string())?)?, 2);
    let proxy = engine.listeners().first().map(|(_, address)| *address).ok_or("no listener")?;

    assert_eq!(answer(proxy)?, ("a".to_string(), port));
    assert_eq!(engine.clusters_json()["app"]["lb"], "random");
    Ok(())
}

#[test]
fn a_reload_runs_the_list_it_gives_when_discovery_changed_the_running_one() -> TestResult {
    let (a, b) = (upstream("a")?, upstream("b")?);
    let (engine, proxy) = start(&[a])?;
    engine.set_endpoints("app", &endpoints(&[(&b.to_string(), 1)]))?;
    assert_eq!(answer(proxy)?.0, "b");

    // The document the engine started with: its list for `app` is not the one running now,
    // so the cluster's members are built again rather than kept.
    let doc = json!({
        "workers": 1,
        "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [
            {"name": "other", "endpoints": [{"address": "127.0.0.1:9"}]},
            {"name": "app", "lb": "round_robin", "endpoints": [{"address": a.to_string()}]},
        ],
    });
    engine.apply(&Config::from_json(&doc.to_string())?)?;
    let proxy = engine.listeners().first().map(|(_, address)| *address).ok_or("no listener")?;

    assert_eq!(listed(&engine), [(a.to_string(), 1)]);
    assert_eq!(answer(proxy)?.0, "a");
    Ok(())
}

#[test]
fn after_shutdown_lists_are_refused() -> TestResult {
    let a = upstream("a")?;
    let (engine, _) = start(&[a])?;
    engine.shutdown(Duration::ZERO);
    assert!(matches!(engine.set_endpoints("app", &endpoints(&[(&a.to_string(), 1)])), Err(EngineError::Stopped)));
    Ok(())
}
