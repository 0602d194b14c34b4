//! The meshproxy data path: listeners, routing, load balancing and upstream pools on
//! tokio + hyper. The path of a request, top-down: `listener` → `proxy` → `route` →
//! `cluster` → `endpoint` → `pool`. `engine` owns it all; `snapshot` compiles configs. Each
//! request is an `observe::Observation`, recorded into `traffic` stats when its response ends.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod access_log;
pub mod authz;
pub mod body;
pub mod busy_poll;
pub mod cluster;
pub mod config;
pub mod endpoint;
pub mod endpoint_list;
pub mod engine;
pub mod error;
pub mod events;
pub mod executor;
pub mod headers;
pub mod inspect;
pub mod listener;
pub mod live;
pub mod observe;
pub mod pool;
pub mod proxy;
pub mod route;
pub mod snapshot;
pub mod spiffe;
pub mod stats;
pub mod telemetry;
pub mod tls;
pub mod traffic;
pub mod values;
pub mod trace;
pub mod workers;

pub use config::Config;
pub use engine::{Engine, EngineError};
pub use snapshot::{check, Problem};
