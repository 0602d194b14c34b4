//! The data path, top-down: `listener` accepts connections and serves them with hyper;
//! `proxy` takes each request through authorization (`authz`), picks a route (`route`), a
//! cluster (`cluster`) and an endpoint (`endpoint`), and forwards it over a pooled connection
//! (`pool`). Each request is an `observe::Observation`, recorded into the telemetry when its
//! response body ends (`body`). `workers` are the threads it all runs on.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod authz;
pub mod body;
pub mod busy_poll;
pub mod cluster;
pub mod endpoint;
pub mod error;
pub mod executor;
pub mod headers;
pub mod listener;
pub mod observe;
pub mod observed;
pub mod pool;
pub mod proxy;
pub mod route;
pub mod snapshot;
pub mod workers;
