//! The stats of routes, clusters and listeners (with their authorization policies) a config
//! swap removes are dropped once no request counts into them any more; what the new config
//! keeps keeps its counts. A real upstream and client on loopback, through the engine.

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use meshproxy_engine::{Config, Engine};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn Error>>;

/// How long a poll waits for the engine to let go of a swapped-out config's counters: far
/// more than it needs, so only a counter that is never dropped runs it out.
const PATIENCE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 upstream answering 200 to everything; a request for `/hold` is reported on
/// `held` and answered only once `release` is sent to.
struct Upstream {
    address: SocketAddr,
    held: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl Upstream {
    fn start() -> Result<Upstream, Box<dyn Error>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let (held_tx, held) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (held_tx, release_rx) = (held_tx.clone(), release_rx.clone());
                thread::spawn(move || serve(stream, &held_tx, &release_rx));
            }
        });
        Ok(Upstream { address, held, release })
    }
}

fn serve(stream: TcpStream, held: &mpsc::Sender<()>, release: &Mutex<mpsc::Receiver<()>>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // The rest of the head; these requests have no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        if request_line.contains(" /hold ") {
            let _ = held.send(());
            let _ = release.lock().map(|r| r.recv());
        }
        if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}

/// One request through the proxy at `proxy`, on its own connection; the response's status line.
fn get(proxy: SocketAddr, host: &str, path: &str) -> Result<String, Box<dyn Error>> {
    let mut stream = TcpStream::connect(proxy)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_string())
}

fn config(upstream: SocketAddr, with_b: bool) -> Result<Config, serde_json::Error> {
    let mut routes = vec![json!({"name": "a", "match": {"host": "a"}, "cluster": "ca"})];
    let mut clusters = vec![json!({"name": "ca", "endpoints": [{"address": upstream.to_string()}]})];
    let mut listeners = vec![json!({"name": "out", "address": "127.0.0.1:0", "routes": routes})];
    if with_b {
        routes.push(json!({"name": "b", "match": {"host": "b"}, "cluster": "cb"}));
        clusters.push(json!({"name": "cb", "endpoints": [{"address": upstream.to_string()}]}));
        listeners = vec![
            json!({"name": "out", "address": "127.0.0.1:0", "routes": routes}),
            json!({"name": "extra", "address": "127.0.0.1:0", "routes": [{"cluster": "cb"}], "authorization": [
                {"name": "reads", "rules": [{"name": "get", "action": "allow", "methods": ["GET"]}]},
            ]}),
        ];
    }
    Config::from_json(&json!({"workers": 1, "listeners": listeners, "clusters": clusters}).to_string())
}

fn address(engine: &Engine, name: &str) -> Result<SocketAddr, Box<dyn Error>> {
    let found = engine.listeners().into_iter().find(|(n, _)| n == name).map(|(_, address)| address);
    found.ok_or_else(|| format!("no listener {name}: {:?}", engine.listeners()).into())
}

/// The requests counted with status 200 for `route`, or None when the route has no stats.
fn route_count(stats: &Value, route: &str) -> Option<u64> {
    let all = stats["traffic"]["stats"].as_array()?;
    let entry = all.iter().find(|s| s["route"] == route)?;
    Some(entry["responses"]["200"].as_u64().unwrap_or(0))
}

fn has(stats: &Value, section: &str, name: &str) -> bool {
    stats[section].get(name).is_some()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> TestResult {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what}").into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn a_swap_drops_the_stats_of_what_it_removed_once_no_request_holds_them() -> TestResult {
    let upstream = Upstream::start()?;
    let engine = Engine::start(&config(upstream.address, true)?, None)?;
    let out = address(&engine, "out")?;
    for host in ["a", "a", "b"] {
        assert_eq!(get(out, host, "/")?, "HTTP/1.1 200 OK");
    }
    assert_eq!(get(address(&engine, "extra")?, "any", "/")?, "HTTP/1.1 200 OK");
    assert_eq!(engine.stats_json()["authorization"]["extra"]["reads"]["allowed"], 1);
    // A request on route b that is still waiting for its response when b is removed.
    let in_flight = thread::spawn(move || get(out, "b", "/hold").map_err(|e| e.to_string()));
    upstream.held.recv_timeout(PATIENCE)?;

    engine.apply(&config(upstream.address, false)?)?;

    let stats = engine.stats_json();
    assert_eq!(route_count(&stats, "a"), Some(2), "route a is kept, with its counts, though nothing came since");
    assert!(has(&stats, "clusters", "ca") && has(&stats, "listeners", "out"));
    assert_eq!(route_count(&stats, "b"), Some(1), "the request in flight still counts into route b");
    assert!(has(&stats, "clusters", "cb"), "the request in flight still counts into cluster cb");

    upstream.release.send(())?;
    assert_eq!(in_flight.join().map_err(|_| "client thread panicked")??, "HTTP/1.1 200 OK");
    // Dropped by a stats read once the request has finished (its counts end with it), and once
    // the removed listener's accept loop has let go of its config.
    wait_until("the stats of route b, cluster cb and listener extra (and its policy) to be dropped", || {
        let stats = engine.stats_json();
        route_count(&stats, "b").is_none()
            && !has(&stats, "clusters", "cb")
            && !has(&stats, "listeners", "extra")
            && !has(&stats, "authorization", "extra")
    })?;
    let stats = engine.stats_json();
    assert_eq!(route_count(&stats, "a"), Some(2));
    assert!(has(&stats, "clusters", "ca") && has(&stats, "listeners", "out"));
    let routes: Vec<&Value> = stats["traffic"]["stats"].as_array().map(|all| all.iter().map(|s| &s["route"]).collect()).unwrap_or_default();
    assert_eq!(routes, [&json!(""), &json!("a")], "listener out's unrouted stats and route a: nothing of b or extra");

    // What the swap dropped starts again from zero if a later config brings it back.
    engine.apply(&config(upstream.address, true)?)?;
    assert_eq!(route_count(&engine.stats_json(), "b"), None, "made on its first request");
    assert_eq!(get(address(&engine, "out")?, "b", "/")?, "HTTP/1.1 200 OK");
    wait_until("route b's new request to be counted", || route_count(&engine.stats_json(), "b") == Some(1))?;
    Ok(())
}
