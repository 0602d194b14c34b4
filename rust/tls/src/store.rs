//! The credentials in use. TLS configs hold the store, not the credentials: the certificate
//! resolvers and verifiers read the current set at each handshake, so a rotation reaches new
//! handshakes at once, without rebuilding a config, and open connections carry on. Each set
//! installed gets a new generation number, by which `sessions` knows its resumption state
//! belongs to an older set.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::credentials::Credentials;

#[derive(Debug, Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Installed>,
    installs: AtomicU64,
}

/// A set of credentials and its generation, swapped in together.
#[derive(Debug)]
struct Installed {
    credentials: Arc<Credentials>,
    generation: u64,
}

// === impl IdentityStore ===

impl IdentityStore {
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.current.load().as_ref().map(|installed| installed.credentials.clone())
    }

    /// The generation of the current set: different for every set installed, even the same
    /// files read again.
    pub fn generation(&self) -> Option<u64> {
        self.current.load().as_ref().map(|installed| installed.generation)
    }

    pub fn replace(&self, credentials: Option<Arc<Credentials>>) {
        let generation = self.installs.fetch_add(1, Relaxed) + 1;
        self.current.store(credentials.map(|credentials| Arc::new(Installed { credentials, generation })));
    }
}
