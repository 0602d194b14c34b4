//! Draining: inbound listeners stop accepting while outbound ones keep serving, and a reload
//! during the drain leaves inbound listeners closed. Real sockets on loopback.

use std::error::Error;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use meshproxy_engine::{Config, Engine};
use serde_json::json;

type TestResult = Result<(), Box<dyn Error>>;

fn config(listeners: serde_json::Value) -> Result<Config, serde_json::Error> {
    let doc = json!({
        "workers": 1,
        "listeners": listeners,
        "clusters": [{"name": "app", "endpoints": [{"address": "127.0.0.1:9"}]}],
    });
    Config::from_json(&doc.to_string())
}

fn listener(name: &str, direction: &str) -> serde_json::Value {
    json!({"name": name, "address": "127.0.0.1:0", "direction": direction, "routes": [{"cluster": "app"}]})
}

fn address(engine: &Engine, name: &str) -> Option<SocketAddr> {
    engine.listeners().into_iter().find(|(n, _)| n == name).map(|(_, address)| address)
}

fn accepts(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_ok()
}

#[test]
fn drain_closes_inbound_listeners_and_keeps_outbound_ones_serving() -> TestResult {
    let engine = Engine::start(&config(json!([listener("in", "inbound"), listener("out", "outbound")]))?, None)?;
    let (inbound, outbound) = (address(&engine, "in"), address(&engine, "out"));
    let (Some(inbound), Some(outbound)) = (inbound, outbound) else { panic!("{:?}", engine.listeners()) };
    assert!(accepts(inbound) && accepts(outbound));
    assert!(!engine.draining());

    engine.drain_inbound();

    assert!(engine.draining());
    assert!(!accepts(inbound), "a new inbound connection is refused once drain_inbound returns");
    assert!(accepts(outbound));
    assert_eq!(engine.listeners().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["out"]);
    engine.drain_inbound(); // idempotent
    assert!(accepts(outbound));
    Ok(())
}

#[test]
fn a_reload_while_draining_applies_to_outbound_listeners_and_leaves_inbound_ones_closed() -> TestResult {
    let engine = Engine::start(&config(json!([listener("in", "inbound"), listener("out", "outbound")]))?, None)?;
    engine.drain_inbound();

    let next = config(json!([listener("in", "inbound"), listener("out", "outbound"), listener("more", "outbound")]))?;
    assert_eq!(engine.apply(&next)?, 2);

    let mut names: Vec<String> = engine.listeners().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["more", "out"]);
    assert!(address(&engine, "more").is_some_and(accepts));
    Ok(())
}

#[test]
fn shutdown_closes_every_listener_and_refuses_reloads() -> TestResult {
    let engine = Engine::start(&config(json!([listener("in", "inbound"), listener("out", "outbound")]))?, None)?;
    let Some(outbound) = address(&engine, "out") else { panic!("{:?}", engine.listeners()) };
    engine.shutdown(Duration::from_secs(5));
    assert!(!accepts(outbound));
    assert!(engine.listeners().is_empty());
    let again = config(json!([listener("out", "outbound")]))?;
    assert!(matches!(engine.apply(&again), Err(meshproxy_engine::EngineError::Stopped)));
    Ok(())
}

/// A TCP peer that echoes what it reads until its client closes.
fn echo_peer() -> Result<SocketAddr, Box<dyn Error>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = match stream.try_clone() {
                    Ok(reader) => reader,
                    Err(_) => return,
                };
                let _ = std::io::copy(&mut reader, &mut stream);
            });
        }
    });
    Ok(address)
}

#[test]
fn a_removed_tcp_listener_closes_its_open_connections_after_the_drain_timeout() -> TestResult {
    use std::io::{Read, Write};
    let peer = echo_peer()?;
    let doc = |with_echo: bool| {
        let mut listeners = vec![listener("out", "outbound")];
        if with_echo {
            listeners.push(json!({"name": "echo", "address": "127.0.0.1:0", "protocol": "tcp", "routes": [{"cluster": "echo"}]}));
        }
        let clusters = json!([{"name": "app", "endpoints": [{"address": "127.0.0.1:9"}]},
                              {"name": "echo", "protocol": "tcp", "endpoints": [{"address": peer.to_string()}]}]);
        Config::from_json(&json!({"workers": 1, "listeners": listeners, "clusters": clusters}).to_string())
    };
    let engine = Engine::start(&doc(true)?, None)?;
    engine.set_drain_timeout(Duration::from_millis(100));
    let Some(echo) = address(&engine, "echo") else { panic!("{:?}", engine.listeners()) };
    let mut client = TcpStream::connect_timeout(&echo, Duration::from_secs(5))?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    client.write_all(b"ping")?;
    let mut ping = [0u8; 4];
    client.read_exact(&mut ping)?;
    assert_eq!(&ping, b"ping");

    engine.apply(&doc(false)?)?;

    // Neither the client nor the peer closes: the proxy does, once the drain timeout has passed.
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(n) => assert_eq!(n, 0, "nothing more came"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // Counted as the connection's end is written, just after its sockets close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while engine.stats_json()["errors"]["drained"] != 1 {
        assert!(std::time::Instant::now() < deadline, "{}", engine.stats_json()["errors"]);
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
