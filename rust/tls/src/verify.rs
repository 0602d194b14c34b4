//! Peer checks for mutual TLS. Both directions check the peer's chain against the current
//! trust bundle and read its SPIFFE ID, which must be in the trust domain; a client also checks
//! that the server is one of the identities its cluster allows (the host name plays no part:
//! a mesh peer is known by its SPIFFE ID). Failures carry a `Refused` with the reason.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::credentials::{peer_spiffe_id, Credentials};
use super::refusal::{Reason, Refused};
use super::store::IdentityStore;
use meshproxy_config::spiffe::SpiffeId;

/// Presents the current certificate, on either side of a handshake.
#[derive(Debug)]
pub struct CurrentCertificate(pub Arc<IdentityStore>);

/// Checks the certificates clients present to an inbound listener.
#[derive(Debug)]
pub struct MeshClientVerifier {
    store: Arc<IdentityStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Checks the certificate a mesh endpoint presents: chain, trust domain, allowed identity.
#[derive(Debug)]
pub struct MeshServerVerifier {
    store: Arc<IdentityStore>,
    allowed: Arc<[SpiffeId]>,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl CurrentCertificate ===

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.certified_key.clone())
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

// === impl MeshClientVerifier ===

impl MeshClientVerifier {
    pub fn new(store: Arc<IdentityStore>) -> MeshClientVerifier {
        MeshClientVerifier { store, algorithms: super::provider().signature_verification_algorithms }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to outlive a rotation; clients of the mesh have one
        // certificate and send it without them.
        &[]
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        let credentials = current(&self.store)?;
        credentials
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(unknown_ca_by_name)?;
        in_trust_domain(&credentials, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl MeshServerVerifier ===

impl MeshServerVerifier {
    pub fn new(store: Arc<IdentityStore>, allowed: Arc<[SpiffeId]>) -> MeshServerVerifier {
        MeshServerVerifier { store, allowed, algorithms: super::provider().signature_verification_algorithms }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let credentials = current(&self.store)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        // rustls's own errors pass through as they are: they pick the alert the peer gets
        // (unknown_ca, certificate_expired); `Refused::of_rustls` sorts them for the counters.
        verify_server_cert_signed_by_trust_anchor(&parsed, &credentials.roots, intermediates, now, self.algorithms.all)
            .map_err(unknown_ca_by_name)?;
        let identity = in_trust_domain(&credentials, end_entity)?;
        if !self.allowed.contains(&identity) {
            let allowed: Vec<&str> = self.allowed.iter().map(SpiffeId::as_str).collect();
            let detail = format!("the endpoint presented {identity}, not one of {}", allowed.join(", "));
            return Err(Refused::new(Reason::WrongIdentity, detail).into_rustls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A chain whose issuer *name* matches a trusted CA but whose signature does not comes from
/// another CA of the same name (a CA replaced without a rotation, two meshes both named after
/// their trust domain): for the peer and the counters, an unknown CA.
fn unknown_ca_by_name(error: rustls::Error) -> rustls::Error {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        other => other,
    }
}

/// Ordinary server authentication (host name and chain, rustls's own verifier), with a
/// same-named CA's signature failure reported as an unknown CA, as above.
#[derive(Debug)]
pub struct ServerAuthenticated(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ServerAuthenticated {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).map_err(unknown_ca_by_name)
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn current(store: &IdentityStore) -> Result<Arc<Credentials>, rustls::Error> {
    store.current().ok_or_else(|| Refused::new(Reason::NoCredentials, "this sidecar has no mesh credentials").into_rustls())
}

/// The peer's SPIFFE ID, if it has one in this sidecar's trust domain.
fn in_trust_domain(credentials: &Credentials, end_entity: &CertificateDer<'_>) -> Result<SpiffeId, rustls::Error> {
    let identity = peer_spiffe_id(end_entity).map_err(|detail| Refused::new(Reason::NoSpiffeId, detail).into_rustls())?;
    if identity.trust_domain() != &*credentials.trust_domain {
        let detail = format!("the peer presented {identity}, outside the trust domain '{}'", credentials.trust_domain);
        return Err(Refused::new(Reason::ForeignTrustDomain, detail).into_rustls());
    }
    Ok(identity)
}
