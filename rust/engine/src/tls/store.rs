//! The credentials in use. TLS configs hold the store, not the credentials: the certificate
//! resolvers and verifiers read the current set at each handshake, so a rotation reaches new
//! handshakes at once, without rebuilding a config, and open connections carry on.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::credentials::Credentials;

#[derive(Debug, Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Credentials>,
}

// === impl IdentityStore ===

impl IdentityStore {
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.current.load_full()
    }

    pub fn replace(&self, credentials: Option<Arc<Credentials>>) {
        self.current.store(credentials);
    }
}
