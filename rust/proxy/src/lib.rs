//! The data path, top-down: `listener` accepts connections and serves them with hyper;
//! `proxy` takes each request through authorization (`authz`), picks a route (`route`) and a
//! cluster (`cluster`), and `retry` sends it to an endpoint (`endpoint`) over a pooled
//! connection (`pool`), again when its policy allows, within the cluster's `breakers`. Before
//! forwarding, a route's `rules` may stop or hold a request (`rate_limit`, `fault`), a route may
//! answer it itself (`direct`), `rewrite` changes what goes upstream and `mirror` copies it.
//! `health` checks endpoints and `outlier` ejects the failing ones. Each request is an
//! `observe::Observation`, recorded into the telemetry when its response body ends (`body`).
//! Upgrades (WebSocket) and CONNECT become tunnels of bytes once agreed (`upgrade`,
//! `connect`). `workers` are the threads it all runs on.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod authz;
mod body;
mod breakers;
mod budget;
pub mod busy_poll;
pub mod cluster;
mod connect;
pub mod direct;
pub mod endpoint;
mod error;
mod executor;
pub mod fault;
pub mod hash_key;
pub mod header_match;
mod headers;
pub mod health;
mod idle;
pub mod listener;
pub mod mirror;
mod observe;
mod observed;
mod outlier;
mod pool;
mod proxy;
pub mod rate_limit;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod rules;
mod snapshot;
mod upgrade;
pub mod workers;
