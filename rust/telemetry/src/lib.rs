//! What the data path reports: counters (`stats`, per-route `traffic`, `authz`), the access
//! log, traces, and the sidecar's own log lines (`events`). Each request's [`Record`] feeds the
//! access log and its span when the request ends; the counters are read as one JSON document.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod access_log;
pub mod authz;
mod counter;
pub mod events;
pub mod live;
mod outlets;
mod reason;
mod record;
pub mod refusal;
pub mod rules;
mod sample;
pub mod stats;
pub mod trace;
pub mod traffic;

pub use outlets::*;
pub use reason::Reason;
pub use record::Record;
pub use sample::Sample;
