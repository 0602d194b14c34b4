//! Load-balancing policies: pick one endpoint of a weighted set by observed load.
//!
//! The set is described once, off the hot path, as a [`Balancer`] built from the endpoints'
//! weights; a pick reads each endpoint's [`Load`] (requests in flight, peak-EWMA latency) and
//! returns an index into the same slice.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod balancer;
mod consistent;
mod load;
mod policy;
mod weighted;

pub use balancer::Balancer;
pub use consistent::{key_hash, Maglev, Ring};
pub use load::{InFlight, InFlightGuard, Load, PeakEwma};
pub use policy::{Policy, UnknownPolicy};
pub use weighted::WeightedSampler;
