//! The TLS side of an inbound listener: strict (mutual TLS only), permissive (mutual TLS or
//! plain text, told apart by the first byte: a TLS record starts with 0x16, an HTTP request
//! with a letter), or disabled.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::credentials::peer_spiffe_id;
use super::refusal::{Reason, Refused};
use super::sessions::{self, ListenerTickets};
use super::store::IdentityStore;
use super::verify::{CurrentCertificate, MeshClientVerifier};
use meshproxy_config::{ListenerProtocol, ListenerTls};
use meshproxy_config::spiffe::SpiffeId;

/// A client that connects and then sends nothing (or handshakes slowly) is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug)]
pub struct InboundTls {
    mode: ListenerTls,
    config: Option<Arc<rustls::ServerConfig>>,
}

/// An accepted connection: plain text, or mutual TLS with the peer's verified identity.
pub enum Accepted {
    Plain(TcpStream),
    Mutual(Box<TlsStream<TcpStream>>, SpiffeId),
}

// === impl InboundTls ===

impl InboundTls {
    pub fn new(mode: ListenerTls, protocol: ListenerProtocol, store: &Arc<IdentityStore>) -> Result<InboundTls, rustls::Error> {
        if mode == ListenerTls::Disable {
            return Ok(InboundTls { mode, config: None });
        }
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(store.clone())))
            .with_cert_resolver(Arc::new(CurrentCertificate(store.clone())));
        // Resumption by stateless tickets of the current credentials only (see `sessions`):
        // no server-side session cache that could outlive them.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.ticketer = Arc::new(ListenerTickets::new(store.clone()));
        config.alpn_protocols = match protocol {
            ListenerProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ListenerProtocol::Http1 => vec![b"http/1.1".to_vec()],
            ListenerProtocol::Http2 => vec![b"h2".to_vec()],
            ListenerProtocol::Tcp => Vec::new(),
        };
        Ok(InboundTls { mode, config: Some(Arc::new(config)) })
    }

    pub fn mode(&self) -> ListenerTls {
        self.mode
    }

    /// Completes what the listener's mode asks of a new connection before HTTP begins.
    pub async fn accept(&self, stream: TcpStream) -> Result<Accepted, Refused> {
        let Some(config) = &self.config else {
            return Ok(Accepted::Plain(stream));
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(TlsAcceptor::from(config.clone()), stream))
            .await
            .unwrap_or_else(|_| Err(Refused::new(Reason::Timeout, format!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()))))
    }

    async fn handshake(&self, acceptor: TlsAcceptor, stream: TcpStream) -> Result<Accepted, Refused> {
        let mut first = [0u8; 1];
        let peeked = stream.peek(&mut first).await.map_err(|e| Refused::new(Reason::Handshake, e.to_string()))?;
        if peeked == 0 {
            return Err(Refused::new(Reason::Handshake, "the client closed the connection before sending anything"));
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return match self.mode {
                ListenerTls::Permissive => Ok(Accepted::Plain(stream)),
                _ => Err(Refused::new(Reason::NotTls, "plain text on a listener that accepts mutual TLS only")),
            };
        }
        let tls = acceptor.accept(stream).await.map_err(|e| Refused::of_handshake(&e))?;
        if sessions::resumed(tls.get_ref().1) {
            sessions::check_resumed(tls.get_ref().1)?;
        }
        // The verifier accepted the chain and its SPIFFE ID; read the ID again to pass it on.
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| Refused::new(Reason::NoClientCertificate, "the client sent no certificate"))
            .and_then(|leaf| peer_spiffe_id(leaf).map_err(|detail| Refused::new(Reason::NoSpiffeId, detail)))?;
        Ok(Accepted::Mutual(Box::new(tls), identity))
    }
}
