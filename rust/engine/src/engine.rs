//! The engine: owns the tokio runtime, the bound listeners and the state that outlives config
//! swaps. Control calls (apply, stats, shutdown) come from Python threads and return quickly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meshproxy_proxy::busy_poll::BusyPoll;
use meshproxy_proxy::closing::Closer;
use meshproxy_config::{self as config, Config, Direction};
use meshproxy_proxy::endpoint::EndpointRegistry;
use meshproxy_proxy::listener::{ListenerId, ListenerShared, RunningListener, Snapshot};
use crate::live::live_of;
use crate::compile::{self, Context};
use meshproxy_config::Problem;
use meshproxy_telemetry::stats::{ListenerStats, Stats};
use meshproxy_telemetry::Outlets;
use meshproxy_telemetry::trace::FinishedSpan;
use meshproxy_tls::credentials::{Credentials, Pems};
use meshproxy_tls::store::IdentityStore;
use meshproxy_proxy::workers::Workers;

/// How long a stopping engine waits for its access log writers to write their last lines.
const ACCESS_LOG_FINISH: Duration = Duration::from_secs(5);

/// How long a drained listener's connections have before what they still have open is closed,
/// until `Engine::set_drain_timeout` says otherwise (as the CLI's `--drain-timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping engine waits, once the drain has ended, for the connections it closed to
/// write their ends (access log lines, counters).
const CLOSED_WAIT: Duration = Duration::from_secs(1);

const NO_IDENTITY: &str = "the running config has no identity section (trust_domain, cert, key, bundle)";

#[derive(Debug)]
pub enum EngineError {
    /// The config has problems; nothing changed.
    Invalid(Vec<Problem>),
    /// A listener could not be bound; nothing changed.
    Bind { listener: String, address: SocketAddr, cause: std::io::Error },
    Runtime(std::io::Error),
    Stopped,
}

pub struct Engine {
    workers: Option<Workers>,
    control: Mutex<Control>,
    /// The running config, swapped whole by `apply`.
    running: Arc<ArcSwap<Snapshot>>,
    stats: Arc<Stats>,
    /// The running snapshot's busy-polling window, where every worker reads it when it wakes.
    busy_poll: Arc<BusyPoll>,
    /// The mesh credentials every TLS handshake uses; replaced whole on rotation.
    identity: Arc<IdentityStore>,
    /// Inbound listeners have stopped accepting for good: a reload leaves them unbound. Set
    /// under the control lock; read without it, so readiness probes never wait on a reload.
    draining: AtomicBool,
    /// Where access log lines and finished spans go; declared last, so that it is dropped
    /// after the listeners whose requests feed it.
    outlets: Outlets,
}

/// Touched only by control calls, under the engine's lock; never by the data path.
struct Control {
    /// The bound sockets, each serving its listener of the running snapshot.
    listeners: Vec<RunningListener>,
    /// The id the next bound socket gets.
    next_id: ListenerId,
    endpoints: EndpointRegistry,
    /// The listeners closed by the drain, whose open connections shutdown waits for (and
    /// closes, when its time is up).
    drained: Vec<Drained>,
    /// How long a listener's connections have once it stops accepting (removed by a reload,
    /// closed by a drain) before what they still have open is closed.
    drain_timeout: Duration,
    stopped: bool,
}

/// A listener that no longer accepts: its counters, and what closes what it still has.
struct Drained {
    stats: Arc<ListenerStats>,
    closer: Arc<Closer>,
}

// === impl Engine ===

impl Engine {
    /// Starts the runtime and binds the config's listeners. `workers` overrides the config's.
    pub fn start(config: &Config, workers: Option<usize>) -> Result<Engine, EngineError> {
        let workers = workers
            .or(config.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let stats = Arc::new(Stats::default());
        let busy_poll = Arc::new(BusyPoll::default());
        let engine = Engine {
            outlets: Outlets::new(stats.clone()),
            workers: Some(Workers::start(workers, &busy_poll).map_err(EngineError::Runtime)?),
            control: Mutex::new(Control {
                listeners: Vec::new(),
                next_id: 0,
                endpoints: EndpointRegistry::new(workers),
                drained: Vec::new(),
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
                stopped: false,
            }),
            running: Arc::default(),
            stats,
            busy_poll,
            identity: Arc::default(),
            draining: AtomicBool::new(false),
        };
        engine.apply(config)?;
        Ok(engine)
    }

    pub fn workers(&self) -> usize {
        self.workers.as_ref().map_or(0, Workers::count)
    }

    /// Compiles the config off the data path and swaps it in. Listeners that keep their address
    /// keep their socket and open connections; in-flight requests finish on the snapshot they
    /// started with. On any error nothing changes. Returns the new config version.
    pub fn apply(&self, config: &Config) -> Result<u64, EngineError> {
        let workers = self.workers.as_ref().ok_or(EngineError::Stopped)?;
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if control.stopped {
            return Err(EngineError::Stopped);
        }
        let credentials = compile::load_identity(config.identity.as_ref());
        let telemetry = self.outlets.telemetry(config).map(Arc::new);
        let no_telemetry = Arc::default();
        let running = self.running.load_full();
        let running_listeners: Vec<_> = running.listeners.iter().map(|(_, snapshot)| snapshot.clone()).collect();
        let cx = Context {
            endpoints: &control.endpoints,
            stats: &self.stats,
            identity: &self.identity,
            telemetry: telemetry.as_ref().unwrap_or(&no_telemetry),
            running: &running.clusters,
            listeners: &running_listeners,
        };
        let compiled = match (credentials, telemetry.as_ref(), compile::compile_all(config, cx)) {
            (Ok(credentials), Ok(_), Ok(compiled)) => (credentials, compiled),
            (credentials, telemetry, compiled) => {
                let problems = credentials
                    .err()
                    .into_iter()
                    .chain(telemetry.err().into_iter().flatten().cloned())
                    .chain(compiled.err().into_iter().flatten())
                    .collect();
                return Err(EngineError::Invalid(problems));
            }
        };
        let (credentials, compiled) = compiled;
        let draining = self.draining.load(Relaxed);
        // While draining, inbound listeners stay closed: the config's inbound ones are left out.
        let listeners = compiled.listeners.into_iter().filter(|l| !(draining && l.snapshot.direction == Direction::Inbound));

        // Bind every new address before changing anything, so a bind failure changes nothing.
        let mut kept = Vec::new();
        let mut fresh = Vec::new();
        for listener in listeners {
            let existing = control.listeners.iter().position(|running| {
                running.configured == listener.configured
                    && (listener.address.port() != 0 || *running.name() == *listener.snapshot.name)
            });
            match existing {
                Some(index) => kept.push((index, listener)),
                None => match RunningListener::bind(listener.address) {
                    Ok(socket) => fresh.push((socket, listener)),
                    Err(cause) => {
                        let name = listener.snapshot.name.to_string();
                        return Err(EngineError::Bind { listener: name, address: listener.address, cause });
                    }
                },
            }
        }

        // New sockets accept from here on, serving what they were bound with until the snapshot
        // that has them is swapped in; should one fail to register, nothing else has changed.
        let mut spawned = Vec::new();
        let entered = workers.first().enter();
        for (socket, listener) in fresh {
            let id = control.next_id;
            control.next_id += 1;
            let snapshot = Arc::new(listener.snapshot);
            let shared = Arc::new(ListenerShared::new(id, self.running.clone(), snapshot.clone(), self.stats.clone()));
            match RunningListener::spawn(listener.configured, socket, shared, workers.handles()) {
                Ok(running) => spawned.push((running, snapshot)),
                Err(cause) => return Err(EngineError::Runtime(cause)),
            }
        }
        drop(entered);

        // From here on nothing can be refused.
        let mut previous: Vec<Option<RunningListener>> = control.listeners.drain(..).map(Some).collect();
        let (mut next, mut snapshots) = (Vec::new(), Vec::new());
        for (index, listener) in kept {
            if let Some(running) = previous[index].take() {
                snapshots.push((running.shared.id, Arc::new(listener.snapshot)));
                next.push(running);
            }
        }
        for (running, snapshot) in spawned {
            snapshots.push((running.shared.id, snapshot));
            next.push(running);
        }
        let removed: Vec<RunningListener> = previous.into_iter().flatten().collect();
        // Their open connections finish on what they served with, not on the next config.
        for listener in &removed {
            listener.shared.retire();
        }
        let live = live_of(snapshots.iter().map(|(_, snapshot)| &**snapshot), &compiled.clusters);
        let version = running.version + 1;
        self.identity.replace(credentials);
        let snapshot = Arc::new(Snapshot {
            version,
            listeners: snapshots,
            clusters: compiled.clusters,
            busy_poll: config.busy_poll.duration(),
            identity: config.identity.clone(),
            live,
        });
        // The workers read the window from an atomic when they wake, not from the snapshot.
        self.busy_poll.set(snapshot.busy_poll);
        self.running.store(snapshot.clone());
        // Health checks and outlier sweeps of clusters new in this snapshot.
        meshproxy_proxy::health::start(&snapshot.clusters, workers.first());
        for listener in &next {
            listener.shared.entered();
        }
        // Listeners no longer configured stop accepting; their open connections drain, and
        // what they still have is closed after the drain timeout.
        let closing: Vec<_> = removed.iter().map(|listener| listener.shared.closer()).collect();
        for listener in removed {
            listener.close(workers);
        }
        self.close_at(closing, Instant::now() + control.drain_timeout);
        control.listeners = next;
        control.endpoints.prune();
        self.stats.prune(&snapshot.live);
        Ok(version)
    }

    /// Replaces the endpoints of one running cluster, as discovery finds them, and nothing else:
    /// no route or other cluster is recompiled and the config version stays. The list is checked
    /// as compiling a config checks it, with the same field paths (`clusters[2].endpoints[5].address`);
    /// a refused list changes nothing. Addresses that stay keep their state (in-flight counts,
    /// latency estimate) and pooled connections; requests in flight finish on the endpoints they
    /// picked. The next `apply` compiles the document it is given: the caller puts the lists it
    /// set there (as the Python layer's discovery does).
    pub fn set_endpoints(&self, cluster: &str, endpoints: &[config::EndpointConfig]) -> Result<(), EngineError> {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if control.stopped {
            return Err(EngineError::Stopped);
        }
        // Clusters are kept in config order: the position is the config's index.
        let snapshot = self.running.load();
        let Some((index, running)) = snapshot.clusters.iter().enumerate().find(|(_, c)| *c.name == *cluster) else {
            let names: Vec<&str> = snapshot.clusters.iter().map(|c| &*c.name).collect();
            let defined = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            let message = format!("no cluster named '{cluster}' in the running config; clusters: {defined}");
            return Err(EngineError::Invalid(vec![Problem { path: "clusters".into(), message }]));
        };
        let mut problems = Vec::new();
        let at = format!("clusters[{index}]");
        let members = compile::compile_members(&at, endpoints, running.policy(), running.transport.as_deref(), &control.endpoints, &mut problems);
        if !problems.is_empty() {
            // The entries the refused list added die with it; a later sweep drops them.
            return Err(EngineError::Invalid(problems));
        }
        running.set_members(members);
        running.stats.endpoint_updates_total.inc();
        control.endpoints.sweep();
        Ok(())
    }

    /// Reads the identity's files again and uses them for new handshakes; open connections carry
    /// on. A set that fails its checks is refused and the current one stays.
    pub fn reload_identity(&self) -> Result<(), EngineError> {
        // Under the control lock: an apply does not change the identity section meanwhile.
        let _control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let credentials = compile::load_identity(self.running.load().identity.as_ref()).map_err(|p| EngineError::Invalid(vec![p]))?;
        match credentials {
            Some(credentials) => {
                self.identity.replace(Some(credentials));
                Ok(())
            }
            None => Err(EngineError::Invalid(vec![Problem { path: "identity".into(), message: NO_IDENTITY.into() }])),
        }
    }

    /// Uses credentials given as PEM texts for new handshakes, in the running config's trust
    /// domain. Refused, keeping the current set, if they fail their checks.
    pub fn set_identity(&self, pems: Pems<'_>) -> Result<(), EngineError> {
        let _control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.running.load();
        let Some(identity) = &snapshot.identity else {
            return Err(EngineError::Invalid(vec![Problem { path: "identity".into(), message: NO_IDENTITY.into() }]));
        };
        let credentials = Credentials::from_pems(&identity.trust_domain, pems)
            .map_err(|e| EngineError::Invalid(vec![Problem { path: format!("identity.{}", e.field), message: e.message }]))?;
        self.identity.replace(Some(Arc::new(credentials)));
        Ok(())
    }

    /// The SPIFFE ID this sidecar presents and when its certificate expires (Unix seconds).
    pub fn identity(&self) -> Option<(String, i64)> {
        self.identity.current().map(|c| (c.identity.to_string(), c.not_after))
    }

    /// Bound listeners as (name, local address), in config order of binding.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        control.listeners.iter().map(|l| (l.name().to_string(), l.local_addr)).collect()
    }

    pub fn version(&self) -> u64 {
        self.running.load().version
    }

    /// The counters, as one JSON document; with each running listener's direction and each
    /// cluster's upstream connections, read from the running listeners and pools now.
    pub fn stats_json(&self) -> serde_json::Value {
        // What a swap could not drop yet (requests on the old config were still running).
        self.stats.prune(&self.running.load().live);
        let mut stats = self.stats.json();
        self.add_running_state(&mut stats);
        if let Some(map) = stats.as_object_mut() {
            map.insert("config_version".into(), self.version().into());
            map.insert("workers".into(), self.workers().into());
            map.insert("busy_poll".into(), self.busy_poll.json());
            if let Some((id, not_after)) = self.identity() {
                map.insert("identity".into(), serde_json::json!({ "spiffe_id": id, "not_after": not_after }));
            }
        }
        stats
    }

    /// Adds `direction` to the entry of each running listener, and `pool` (`idle_http1`,
    /// `http2_connections`, as `/clusters` names them per endpoint) and `endpoints` by health
    /// (`healthy`, `unhealthy`, `ejected`) to the entry of every cluster: zeros for clusters
    /// the running config no longer has.
    fn add_running_state(&self, stats: &mut serde_json::Value) {
        let (directions, pools): (HashMap<_, _>, HashMap<_, _>) = {
            let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
            let directions = control.listeners.iter().filter_map(|l| l.shared.current()).map(|s| (s.name.clone(), s.direction));
            let pools = self.running.load().clusters.iter().map(|c| (c.name.clone(), (c.connections(), c.health_counts()))).collect();
            (directions.collect(), pools)
        };
        if let Some(listeners) = stats.get_mut("listeners").and_then(serde_json::Value::as_object_mut) {
            for (name, entry) in listeners.iter_mut() {
                if let (Some(direction), Some(entry)) = (directions.get(name.as_str()), entry.as_object_mut()) {
                    entry.insert("direction".into(), direction.name().into());
                }
            }
        }
        if let Some(clusters) = stats.get_mut("clusters").and_then(serde_json::Value::as_object_mut) {
            for (name, entry) in clusters.iter_mut() {
                let ((idle_http1, http2_connections), (available, failing, ejected)) = pools.get(name.as_str()).copied().unwrap_or_default();
                if let Some(entry) = entry.as_object_mut() {
                    let pool = serde_json::json!({ "idle_http1": idle_http1, "http2_connections": http2_connections });
                    entry.insert("pool".into(), pool);
                    let health = serde_json::json!({ "healthy": available, "unhealthy": failing, "ejected": ejected });
                    entry.insert("endpoints".into(), health);
                }
            }
        }
    }

    /// The running config's clusters with their endpoints' live state, as JSON (see `inspect`).
    pub fn clusters_json(&self) -> serde_json::Value {
        crate::inspect::clusters_json(&self.running.load().clusters)
    }

    /// Starts draining: inbound listeners stop accepting (their sockets are closed when this
    /// returns, so new connections are refused) and their open connections finish the requests
    /// in progress, then close. Outbound listeners keep serving: the local app may still call
    /// out while it finishes the requests it has. Idempotent.
    /// Once the drain timeout has passed, what they still have is closed (TCP connections,
    /// tunnels, requests in progress).
    pub fn drain_inbound(&self) {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let close_at = Instant::now() + control.drain_timeout;
        self.close_inbound(&mut control, close_at);
    }

    /// How long a listener's connections have once it stops accepting (removed by a reload,
    /// closed by a drain) before the TCP connections, tunnels and requests they still have are
    /// closed; default [`DEFAULT_DRAIN_TIMEOUT`]. A shutdown has the time it is given.
    pub fn set_drain_timeout(&self, timeout: Duration) {
        self.control.lock().unwrap_or_else(|p| p.into_inner()).drain_timeout = timeout;
    }

    /// Whether a drain has closed the inbound listeners (true only once their sockets are).
    pub fn draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    fn close_inbound(&self, control: &mut Control, close_at: Instant) {
        let (inbound, outbound): (Vec<_>, Vec<_>) = std::mem::take(&mut control.listeners)
            .into_iter()
            .partition(|l| l.shared.current().is_some_and(|snapshot| snapshot.direction == Direction::Inbound));
        control.listeners = outbound;
        let drained = inbound.iter().filter_map(|l| l.shared.current().map(|snapshot| Drained { stats: snapshot.stats.clone(), closer: l.shared.closer() }));
        control.drained.extend(drained);
        for listener in &inbound {
            listener.shared.retire();
        }
        self.close_at(inbound.iter().map(|listener| listener.shared.closer()).collect(), close_at);
        if let Some(workers) = &self.workers {
            for listener in inbound {
                listener.close(workers);
            }
        }
        // Once the sockets are closed: whoever sees the drain (a readiness probe) may count on
        // new inbound connections being refused.
        self.draining.store(true, Relaxed);
    }

    /// Up to `max` finished, sampled spans: returns once it has `max`, or after `wait` with
    /// what it has (maybe none), or at once after [`Engine::wake_span_drain`].
    pub fn drain_spans(&self, max: usize, wait: Duration) -> Vec<FinishedSpan> {
        self.outlets.spans.drain(max, wait)
    }

    /// Ends a `drain_spans` in progress: the exporter is stopping.
    pub fn wake_span_drain(&self) {
        self.outlets.spans.wake();
    }

    /// Stops in two steps within `drain`: first the inbound listeners, as `drain_inbound`, while
    /// outbound ones keep serving, until the inbound connections have finished; then every other
    /// listener, until their connections have finished too. Returns when all connections are
    /// done or `drain` has passed. Reloads are refused from the start. Idempotent.
    pub fn shutdown(&self, drain: Duration) {
        let deadline = Instant::now() + drain;
        let (inbound, closing): (Vec<_>, Vec<_>) = {
            let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
            control.stopped = true;
            self.close_inbound(&mut control, deadline);
            control.drained.iter().map(|drained| (drained.stats.clone(), drained.closer.clone())).unzip()
        };
        wait_closed(&inbound, deadline);
        let listeners = {
            let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut control.listeners)
        };
        let stats: Vec<_> = listeners.iter().filter_map(|l| l.shared.current()).map(|snapshot| snapshot.stats.clone()).collect();
        let closing: Vec<_> = closing.into_iter().chain(listeners.iter().map(|l| l.shared.closer())).collect();
        if let Some(workers) = &self.workers {
            for listener in listeners {
                listener.close(workers);
            }
        }
        wait_closed(&stats, deadline);
        let all: Vec<_> = stats.into_iter().chain(inbound).collect();
        // The drain is over: what is still open (TCP connections, tunnels, requests that go on)
        // is closed, each writing its end, before the access log writers finish.
        if all.iter().any(|s| s.connections_active.get() > 0) {
            for closer in &closing {
                closer.close();
            }
            wait_closed(&all, Instant::now() + CLOSED_WAIT);
        }
        // With every connection done, the access log writers have the last lines and end as the
        // last snapshots go: waiting for them here means a process exiting next loses none. The
        // running snapshot is the last to hold their sinks (nothing serves from it any more),
        // so it goes first: kept, it made every stop wait out the writers' whole limit.
        if all.iter().all(|s| s.connections_active.get() == 0) {
            self.running.store(Arc::default());
            self.outlets.finish(ACCESS_LOG_FINISH);
        }
    }
}

impl Engine {
    /// Closes what the listeners of `closers` still have open at `at`: the end of their
    /// drain. A timer task on a worker, holding no config meanwhile.
    fn close_at(&self, closers: Vec<Arc<Closer>>, at: Instant) {
        let Some(workers) = self.workers.as_ref().filter(|_| !closers.is_empty()) else { return };
        workers.first().spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            for closer in closers {
                closer.close();
            }
        });
    }
}

/// Waits until the listeners have no open connection, or until `deadline`. Polled: a drain is
/// rare and short, and the data path should not pay for a notification it almost never needs.
fn wait_closed(listeners: &[Arc<ListenerStats>], deadline: Instant) {
    while listeners.iter().any(|s| s.connections_active.get() > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
        // Stops the worker threads; what still runs on them is dropped, and with it the last
        // listener snapshots and their access log senders.
        self.workers.take();
        // The writers write what is queued, and end.
        self.outlets.finish(ACCESS_LOG_FINISH);
    }
}

// === impl EngineError ===

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Invalid(problems) => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
            EngineError::Bind { listener, address, cause } => {
                write!(f, "listener '{listener}' cannot bind {address}: {cause}")
            }
            EngineError::Runtime(cause) => write!(f, "cannot start the engine runtime: {cause}"),
            EngineError::Stopped => f.write_str("the engine has been shut down"),
        }
    }
}

impl std::error::Error for EngineError {}
