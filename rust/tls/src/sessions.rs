//! Resumption state belongs to the credentials it was made with. A resumed handshake skips the
//! certificate checks (the peer's chain was checked when the session was made, and a server
//! presents no certificate at all), so a session that outlived a rotation would bring back what
//! the rotation took away: the sidecar's old certificate, or a client whose CA has left the
//! trust bundle. Each listener therefore issues stateless tickets from a `Ticketer` made for the
//! current credential set (its keys rotate every 6 h, as Envoy's do), and each mesh cluster keeps
//! its own client session cache, also made for the current set. When the set changes, the next
//! handshake finds a new ticketer or an empty cache: old tickets no longer decrypt, old sessions
//! are gone, and peers go through a full handshake against the new credentials.
//!
//! Within one set a session lives as long as its ticket, which can outlast the peer's
//! certificate: `check_resumed` refuses such a session as `expired`.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ProducesTickets;
use rustls::{CommonState, HandshakeKind, NamedGroup};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::refusal::{Reason, Refused};
use super::store::IdentityStore;

/// Sessions a mesh cluster remembers per server name (rustls's default size).
const CLIENT_SESSIONS: usize = 256;

/// A value made for one credential set, made again when the set changes.
struct PerCredentials<T: ?Sized> {
    store: Arc<IdentityStore>,
    made: ArcSwapOption<Made<T>>,
    make: fn() -> Option<Arc<T>>,
}

struct Made<T: ?Sized> {
    generation: u64,
    value: Arc<T>,
}

/// A listener's session tickets: encrypted with keys of the current credential set's ticketer.
#[derive(Debug)]
pub struct ListenerTickets(PerCredentials<dyn ProducesTickets>);

/// A mesh cluster's client sessions, for the current credential set only.
#[derive(Debug)]
pub struct ClusterSessions(PerCredentials<ClientSessionMemoryCache>);

// === impl PerCredentials ===

impl<T: ?Sized> PerCredentials<T> {
    fn new(store: Arc<IdentityStore>, make: fn() -> Option<Arc<T>>) -> PerCredentials<T> {
        PerCredentials { store, made: ArcSwapOption::empty(), make }
    }

    /// The value for the credentials in use; none while there are none.
    fn current(&self) -> Option<Arc<T>> {
        let generation = self.store.generation()?;
        if let Some(made) = &*self.made.load() {
            if made.generation == generation {
                return Some(made.value.clone());
            }
        }
        // Two handshakes racing here may both make one; the one stored last stays, and a
        // session made with the other is merely not resumed.
        let value = (self.make)()?;
        self.made.store(Some(Arc::new(Made { generation, value: value.clone() })));
        Some(value)
    }
}

impl<T: ?Sized> fmt::Debug for PerCredentials<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let generation = self.made.load().as_ref().map(|m| m.generation);
        f.debug_struct("PerCredentials").field("generation", &generation).finish_non_exhaustive()
    }
}

// === impl ListenerTickets ===

impl ListenerTickets {
    pub fn new(store: Arc<IdentityStore>) -> ListenerTickets {
        // A ticketer fails to build only if the system has no randomness; then no tickets are
        // issued and every handshake is a full one.
        ListenerTickets(PerCredentials::new(store, || rustls::crypto::ring::Ticketer::new().ok()))
    }
}

impl ProducesTickets for ListenerTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.0.current().map_or(0, |ticketer| ticketer.lifetime())
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.current()?.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.current()?.decrypt(cipher)
    }
}

// === impl ClusterSessions ===

impl ClusterSessions {
    pub fn new(store: Arc<IdentityStore>) -> ClusterSessions {
        ClusterSessions(PerCredentials::new(store, || Some(Arc::new(ClientSessionMemoryCache::new(CLIENT_SESSIONS)))))
    }
}

impl ClientSessionStore for ClusterSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        if let Some(cache) = self.0.current() {
            cache.set_kx_hint(server_name, group);
        }
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.current()?.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(cache) = self.0.current() {
            cache.set_tls12_session(server_name, value);
        }
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.current()?.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(cache) = self.0.current() {
            cache.remove_tls12_session(server_name);
        }
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        if let Some(cache) = self.0.current() {
            cache.insert_tls13_ticket(server_name, value);
        }
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.0.current()?.take_tls13_ticket(server_name)
    }
}

/// Whether a completed handshake resumed an earlier session.
pub fn resumed(connection: &CommonState) -> bool {
    connection.handshake_kind() == Some(HandshakeKind::Resumed)
}

/// A resumed session carries the peer's certificate as it was checked when the session was
/// made; refuses the session if that certificate has expired since.
pub fn check_resumed(connection: &CommonState) -> Result<(), Refused> {
    let Some(leaf) = connection.peer_certificates().and_then(|chain| chain.first()) else {
        return Ok(());
    };
    check_not_expired(leaf, UnixTime::now())
}

fn check_not_expired(leaf: &CertificateDer<'_>, now: UnixTime) -> Result<(), Refused> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| Refused::new(Reason::Handshake, format!("the resumed session's peer certificate is unreadable: {e}")))?;
    let not_after = cert.validity().not_after;
    if now.as_secs() > u64::try_from(not_after.timestamp()).unwrap_or(0) {
        return Err(Refused::new(Reason::Expired, format!("the resumed session's peer certificate expired at {not_after}")));
    }
    Ok(())
}
