//! The data path, top-down: `listener` accepts connections and serves them with hyper;
//! `proxy` takes each request through authorization (`authz`), picks a route (`route`), a
//! cluster (`cluster`) and an endpoint (`endpoint`), and forwards it over a pooled connection
//! (`pool`). Each request is an `observe::Observation`, recorded into the telemetry when its
//! response body ends (`body`). `workers` are the threads it all runs on. Before forwarding, a
//! route's `rules` may stop or hold a request (`rate_limit`, `fault`), a route may answer it
//! itself (`direct`), and `rewrite` changes what goes upstream.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod authz;
mod body;
pub mod busy_poll;
pub mod cluster;
pub mod direct;
pub mod endpoint;
mod error;
mod executor;
pub mod fault;
pub mod header_match;
mod headers;
pub mod listener;
pub mod mirror;
mod observe;
mod observed;
mod pool;
mod proxy;
pub mod rate_limit;
pub mod rewrite;
pub mod route;
pub mod rules;
mod snapshot;
pub mod workers;
