//! The TLS side of a cluster's connections: mutual TLS to mesh peers, which must present one of
//! the cluster's SPIFFE IDs, or ordinary server-authenticated TLS to anything else (the server
//! name checked against the system's CAs or the cluster's own).

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::credentials::trust_bundle;
use super::refusal::Refused;
use super::sessions::{self, ClusterSessions};
use super::store::IdentityStore;
use super::verify::{CurrentCertificate, MeshServerVerifier, ServerAuthenticated};
use meshproxy_config::UpstreamProtocol;
use meshproxy_telemetry::events;
use meshproxy_telemetry::stats::Stats;
use meshproxy_config::spiffe::SpiffeId;

/// The cluster a TLS client config is made for, and where it counts its handshakes.
#[derive(Debug, Clone)]
pub struct Owner {
    pub cluster: Arc<str>,
    pub stats: Arc<Stats>,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    /// The cluster's name, for the log line of a refused handshake.
    cluster: Arc<str>,
    stats: Arc<Stats>,
    /// The name sent as SNI and checked in the server's certificate; by default the
    /// endpoint's host.
    server_name: Option<ServerName<'static>>,
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// Mutual TLS with this sidecar's credentials, to endpoints presenting one of `allowed`.
    pub fn mesh(store: &Arc<IdentityStore>, allowed: Arc<[SpiffeId]>, protocol: UpstreamProtocol, owner: Owner) -> Result<UpstreamTls, rustls::Error> {
        let mut config = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .dangerous() // the peer is checked by its SPIFFE ID instead of a host name
            .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(store.clone(), allowed)))
            .with_client_cert_resolver(Arc::new(CurrentCertificate(store.clone())));
        // This cluster's own sessions, made with the current credentials (see `sessions`).
        config.resumption = rustls::client::Resumption::store(Arc::new(ClusterSessions::new(store.clone())));
        config.alpn_protocols = alpn(protocol);
        Ok(UpstreamTls { config: Arc::new(config), cluster: owner.cluster, stats: owner.stats, server_name: None })
    }

    /// Server-authenticated TLS against `ca_pem`'s CAs, or the system's when none is given.
    pub fn server_authenticated(sni: Option<&str>, ca_pem: Option<&[u8]>, protocol: UpstreamProtocol, owner: Owner) -> Result<UpstreamTls, String> {
        let roots = match ca_pem {
            Some(pem) => Arc::new(trust_bundle(pem).map_err(|e| e.message)?),
            None => system_roots(),
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, super::provider()).build().map_err(|e| e.to_string())?;
        let mut config = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous() // rustls's own verifier, only its errors sorted (see ServerAuthenticated)
            .with_custom_certificate_verifier(Arc::new(ServerAuthenticated(verifier)))
            .with_no_client_auth();
        config.alpn_protocols = alpn(protocol);
        let server_name = sni
            .map(|name| ServerName::try_from(name.to_string()).map_err(|_| format!("'{name}' is not a valid server name")))
            .transpose()?;
        Ok(UpstreamTls { config: Arc::new(config), cluster: owner.cluster, stats: owner.stats, server_name })
    }

    /// Runs the handshake on a connected socket to `address` (`host:port`); a refusal is
    /// counted and logged.
    pub async fn connect(&self, stream: TcpStream, address: &str) -> Result<TlsStream<TcpStream>, Refused> {
        let outcome = match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => endpoint_name(address),
        };
        let outcome = match outcome {
            Ok(name) => TlsConnector::from(self.config.clone()).connect(name, stream).await.map_err(|e| Refused::of_handshake(&e)),
            Err(refused) => Err(refused),
        };
        let outcome = outcome.and_then(|tls| {
            let resumed = sessions::resumed(tls.get_ref().1);
            if resumed {
                sessions::check_resumed(tls.get_ref().1)?;
            }
            Ok((tls, resumed))
        });
        match &outcome {
            Ok((_, resumed)) => {
                self.stats.tls.outbound.handshakes_total.inc();
                if *resumed {
                    self.stats.tls.outbound.resumed_total.inc();
                }
            }
            Err(refused) => {
                self.stats.tls.outbound.refused(refused.reason);
                events::log(format!("cluster '{}': TLS to {address} refused: {refused}", self.cluster));
            }
        }
        outcome.map(|(tls, _)| tls)
    }
}

fn alpn(protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        // Opaque bytes: no application protocol to agree on.
        UpstreamProtocol::Tcp => Vec::new(),
    }
}

/// The host of `host:port` or `[v6]:port` as a server name (an IP address sends no SNI).
fn endpoint_name(address: &str) -> Result<ServerName<'static>, Refused> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| Refused::new(super::refusal::Reason::Handshake, format!("'{host}' is not a valid server name")))
}

/// The system's CA certificates, read once. Unreadable ones are skipped, as other clients do.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}
