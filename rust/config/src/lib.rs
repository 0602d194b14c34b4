//! The config documents the engine runs (as the Python layer writes them, JSON), the problems a
//! config can have, and the value rules both sides share: addresses, SPIFFE IDs, the access
//! log's fields.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod address;
pub mod capture;
mod cluster_documents;
mod documents;
mod duration;
mod hash_policy;
pub mod endpoint_list;
mod health;
mod log_fields;
mod problem;
mod retry;
mod route_rules;
mod timeouts;
pub mod spiffe;
mod tcp;
pub mod values;

pub use documents::*;
pub use hash_policy::HashPolicy;
pub use health::{GrpcCheck, HealthCheck, HttpCheck, OutlierDetection, SuccessRate, TcpCheck};
pub use log_fields::{Field, Fields, STDOUT};
pub use problem::Problem;
pub use spiffe::SpiffeId;
pub use timeouts::TimeoutCovers;
pub use tcp::default_detect_timeout;
