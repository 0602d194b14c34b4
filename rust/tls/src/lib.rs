//! Mutual TLS between sidecars, with SPIFFE identities, and ordinary TLS to other upstreams.
//! `credentials` loads and checks this sidecar's PEM files; `store` holds the current ones so
//! that rotation reaches new handshakes without rebuilding anything; `verify` checks peers;
//! `inbound` accepts on a listener; `outbound` connects to a cluster's endpoints; `sessions`
//! keeps resumption state tied to the credentials it was made with; `refusal` names why a
//! handshake was refused, for the counters and the log.

pub mod credentials;
pub mod inbound;
pub mod outbound;
pub mod refusal;
pub mod sessions;
pub mod store;
mod verify;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The one crypto provider every TLS config is built with (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
