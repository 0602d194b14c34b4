//! The meshproxy engine: compiles config documents into what the data path runs, and runs it.
//!
//! A request, top-down, by file (crates under `rust/`):
//!   proxy/src/listener.rs  accepts a connection and serves it with hyper
//!   proxy/src/proxy.rs     authorizes it (authz/) and routes it: route.rs picks the route
//!   proxy/src/cluster.rs   picks an endpoint of the route's cluster (balance/: p2c_ewma, weighted)
//!   proxy/src/pool.rs      forwards it over a pooled connection to that endpoint (endpoint.rs)
//! A config, top-down:
//!   engine/src/compile/    compiles a config document (config/) into the running snapshot
//!   engine/src/engine.rs   swaps it in whole (`Engine::apply`; the type: proxy/src/snapshot.rs)
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod compile;
mod engine;
mod inspect;
mod live;

pub use compile::check;
pub use engine::{Engine, EngineError, DEFAULT_DRAIN_TIMEOUT};
pub use meshproxy_config::{self as config, Config, Problem};
pub use meshproxy_telemetry::trace::attributes as span_attributes;
pub use meshproxy_telemetry::trace::FinishedSpan;
pub use meshproxy_tls::credentials::Pems;
