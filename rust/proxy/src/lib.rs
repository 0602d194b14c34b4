//! The data path, top-down: `listener` accepts connections and serves them with hyper;
//! `proxy` takes each request through authorization (`authz`), picks a route (`route`) and a
//! cluster (`cluster`), and `retry` sends it to an endpoint (`endpoint`) over a pooled
//! connection (`pool`; `sweep` closes the unused ones), again when its policy allows, within
//! the cluster's `breakers`. Before forwarding, a route's `rules` may stop or hold a request
//! (`rate_limit`, `fault`), a route may answer it itself (`direct`), `rewrite` changes what goes
//! upstream and `mirror` copies it. `health` checks endpoints and `outlier` ejects the failing
//! ones. Each request is an `observe::Observation`, recorded into the telemetry when its
//! response body ends (`body`); a route's `timeouts` may stop a response that stalls or runs
//! long. `workers` are the threads it all runs on. A capture listener reads where each connection
//! was going before the kernel redirected it (`original_dst`), and its routes match on that.
//! `h2_preface` watches an HTTP/2 client's first SETTINGS, and `h2_frames` its later ones, for the
//! one value h2 answers with the wrong error code. `grpc` recognises gRPC calls: their status into the telemetry, their
//! deadline over the whole call (`grpc_deadline`), their errors as gRPC statuses. `tcp` serves connections that are not HTTP: every
//! one of a `tcp` listener, and those an `auto` listener's detection (`tcp::detect`) gives to
//! its `tcp_fallback`, copied both ways (`tcp::relay`). Upgrades (WebSocket) and CONNECT become
//! tunnels of bytes once agreed (`upgrade`, `connect`). A drained listener closes the TCP
//! connections and tunnels it still has once the drain timeout has passed (`closing`).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod authz;
mod body;
mod breakers;
mod budget;
pub mod busy_poll;
pub mod closing;
pub mod cluster;
mod connect;
pub mod direct;
pub mod endpoint;
mod error;
mod executor;
pub mod fault;
pub mod grpc;
mod grpc_deadline;
mod grpc_retry;
mod h2_frames;
mod h2_preface;
pub mod hash_key;
pub mod header_match;
mod headers;
pub mod health;
mod idle;
pub mod listener;
pub mod mirror;
mod members;
mod observe;
mod observed;
pub mod original_dst;
mod outlier;
mod pool;
mod proxy;
pub mod rate_limit;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod rules;
mod snapshot;
mod sweep;
pub mod timeouts;
pub mod tcp;
mod upgrade;
pub mod workers;
