//! `meshproxy._native`: the engine as Python sees it. One config document in (JSON text),
//! small coarse calls out; every call releases the GIL, and no engine thread ever takes it.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use std::time::Duration;

use meshproxy_engine::{Config, EngineError};
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

mod endpoints;
mod spans;
mod values;

create_exception!(
    _native,
    ConfigRejected,
    PyValueError,
    "The engine refused a config. args[0] is the message; args[1] the (path, message) problems."
);
create_exception!(_native, BindError, PyOSError, "A listener could not bind its address.");

/// The engine allocates and frees small buffers and header maps on every request; mimalloc's
/// thread-local free lists make that cheap and keep each worker's memory on its own pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the engine document, or says where it does not fit the schema.
fn parse(config_json: &str) -> Result<Config, (String, String)> {
    // Tracking the path slows down every read of a large document; only a document that does
    // not fit is read again, to say where.
    Config::from_json(config_json).or_else(|_| {
        let mut deserializer = serde_json::Deserializer::from_str(config_json);
        serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|error| (error.path().to_string().replace("?", ""), error.inner().to_string()))
    })
}

fn rejected(problems: Vec<(String, String)>) -> PyErr {
    let message: Vec<String> = problems.iter().map(|(path, msg)| format!("{path}: {msg}")).collect();
    ConfigRejected::new_err((message.join("\n"), problems))
}

fn to_py(error: EngineError) -> PyErr {
    match error {
        EngineError::Invalid(problems) => rejected(problems.into_iter().map(|p| (p.path, p.message)).collect()),
        error @ EngineError::Bind { .. } => BindError::new_err(error.to_string()),
        error => PyRuntimeError::new_err(error.to_string()),
    }
}

#[pymodule(gil_used = false)]
mod _native {
    use super::*;

    #[pymodule_export]
    use super::{BindError, ConfigRejected};
    #[pymodule_export]
    use super::endpoints::read_endpoints;
    #[pymodule_export]
    use super::values::{
        check_busy_poll, check_original_destination, check_positive_duration, check_trust_domain, parse_duration, parse_endpoint_address,
        parse_listen_address, parse_spiffe_id,
    };

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        use meshproxy_engine::config::values;
        module.add("__version__", env!("CARGO_PKG_VERSION"))?;
        module.add("DURATION_PATTERN", values::DURATION_PATTERN)?;
        module.add("FINE_DURATION_PATTERN", values::FINE_DURATION_PATTERN)?;
        module.add("MAX_BUSY_POLL_MICROS", values::MAX_BUSY_POLL_MICROS)?;
        module.add("CONFIG_DEFAULTS", meshproxy_engine::config::defaults().to_string())
    }

    /// The engine's own check of an engine document: `(path, message)` problems, empty when
    /// the engine would run it.
    #[pyfunction]
    fn check_config(py: Python<'_>, config_json: &str) -> Vec<(String, String)> {
        py.detach(|| match parse(config_json) {
            Ok(config) => meshproxy_engine::check(&config).into_iter().map(|p| (p.path, p.message)).collect(),
            Err(problem) => vec![problem],
        })
    }

    /// The document as the engine reads it, written back in canonical form with every default
    /// filled in: two documents mean the same to the engine iff this gives the same JSON.
    #[pyfunction]
    fn normalize_config(py: Python<'_>, config_json: &str) -> PyResult<String> {
        let config = py.detach(|| parse(config_json).map(Config::canonical)).map_err(|problem| rejected(vec![problem]))?;
        serde_json::to_string(&config).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// A running data path: a tokio runtime, bound listeners, upstream pools.
    #[pyclass(frozen, module = "meshproxy._native")]
    struct Engine {
        inner: meshproxy_engine::Engine,
    }

    #[pymethods]
    impl Engine {
        /// Starts the runtime and binds the listeners of the config. `workers` overrides the
        /// config's `workers`. `drain_seconds`: how long a listener's connections have once it
        /// stops accepting (removed by a reload, closed by a drain) before the TCP connections,
        /// tunnels and requests still open are closed.
        #[new]
        #[pyo3(signature = (config_json, workers=None, drain_seconds=10.0))]
        fn new(py: Python<'_>, config_json: &str, workers: Option<usize>, drain_seconds: f64) -> PyResult<Self> {
            let config = parse(config_json).map_err(|problem| rejected(vec![problem]))?;
            let drain = Duration::try_from_secs_f64(drain_seconds.max(0.0)).unwrap_or(meshproxy_engine::DEFAULT_DRAIN_TIMEOUT);
            let inner = py.detach(|| meshproxy_engine::Engine::start(&config, workers)).map_err(to_py)?;
            inner.set_drain_timeout(drain);
            Ok(Engine { inner })
        }

        /// Compiles and swaps in a new config; returns its version. On error nothing changes.
        fn apply(&self, py: Python<'_>, config_json: &str) -> PyResult<u64> {
            let config = parse(config_json).map_err(|problem| rejected(vec![problem]))?;
            py.detach(|| self.inner.apply(&config)).map_err(to_py)
        }

        /// Replaces one running cluster's endpoints with `endpoints` (`(address, weight)`
        /// pairs), recompiling nothing else; the config version stays. Raises ConfigRejected
        /// with the field paths compiling would name (`clusters[2].endpoints[5].address`), and
        /// changes nothing, when the list is refused.
        fn set_endpoints(&self, py: Python<'_>, cluster: &str, endpoints: Vec<(String, u32)>) -> PyResult<()> {
            let endpoints: Vec<_> =
                endpoints.into_iter().map(|(address, weight)| meshproxy_engine::config::EndpointConfig { address, weight }).collect();
            py.detach(|| self.inner.set_endpoints(cluster, &endpoints)).map_err(to_py)
        }

        /// Reads the identity's PEM files again and uses them for new handshakes; raises
        /// ConfigRejected (the current credentials stay) when the new set fails its checks.
        fn reload_identity(&self, py: Python<'_>) -> PyResult<()> {
            py.detach(|| self.inner.reload_identity()).map_err(to_py)
        }

        /// Uses credentials given as PEM bytes for new handshakes; raises ConfigRejected (the
        /// current credentials stay) when they fail their checks.
        fn set_identity(&self, py: Python<'_>, cert_pem: &[u8], key_pem: &[u8], bundle_pem: &[u8]) -> PyResult<()> {
            let pems = meshproxy_engine::Pems { cert: cert_pem, key: key_pem, bundle: bundle_pem };
            py.detach(|| self.inner.set_identity(pems)).map_err(to_py)
        }

        /// Bound listeners as `(name, "ip:port")`.
        fn listeners(&self, py: Python<'_>) -> Vec<(String, String)> {
            py.detach(|| self.inner.listeners().into_iter().map(|(name, addr)| (name, addr.to_string())).collect())
        }

        /// Counters as a JSON document.
        fn stats_json(&self, py: Python<'_>) -> String {
            py.detach(|| self.inner.stats_json().to_string())
        }

        /// The running config's clusters with their endpoints' live state, as a JSON document.
        fn clusters_json(&self, py: Python<'_>) -> String {
            py.detach(|| self.inner.clusters_json().to_string())
        }

        /// Starts draining: inbound listeners stop accepting (closed when this returns) and
        /// their open connections finish, what is still open after the drain timeout closed;
        /// outbound listeners keep serving. Idempotent.
        fn drain_inbound(&self, py: Python<'_>) {
            py.detach(|| self.inner.drain_inbound());
        }

        /// Whether inbound listeners have been closed by a drain.
        #[getter]
        fn draining(&self) -> bool {
            self.inner.draining()
        }

        #[getter]
        fn workers(&self) -> usize {
            self.inner.workers()
        }

        #[getter]
        fn version(&self) -> u64 {
            self.inner.version()
        }

        /// Up to `max_spans` finished, sampled spans: returns once it has that many, or after
        /// `wait_seconds` with what it has (maybe none), or at once after `wake_span_drain`.
        fn drain_spans<'py>(&self, py: Python<'py>, max_spans: usize, wait_seconds: f64) -> PyResult<Vec<spans::SpanTuple<'py>>> {
            let wait = Duration::try_from_secs_f64(wait_seconds.max(0.0)).unwrap_or(Duration::ZERO);
            let batch = py.detach(|| self.inner.drain_spans(max_spans, wait));
            batch.iter().map(|span| spans::to_python(py, span)).collect()
        }

        /// Ends a `drain_spans` in progress, if any, at once.
        fn wake_span_drain(&self, py: Python<'_>) {
            py.detach(|| self.inner.wake_span_drain());
        }

        /// Stops within `drain_seconds`: inbound listeners first, while outbound ones keep
        /// serving, until inbound connections finish; then the rest, until theirs finish.
        #[pyo3(signature = (drain_seconds=0.0))]
        fn shutdown(&self, py: Python<'_>, drain_seconds: f64) {
            let drain = Duration::try_from_secs_f64(drain_seconds.max(0.0)).unwrap_or(Duration::ZERO);
            py.detach(|| self.inner.shutdown(drain));
        }
    }
}
