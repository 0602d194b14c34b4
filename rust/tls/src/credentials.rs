//! This sidecar's mesh credentials: a certificate chain whose leaf carries a SPIFFE ID, its
//! private key, and the trust bundle peers must chain to. Loading checks everything a mistake
//! could get wrong, so that a bad set is refused with a clear reason before any handshake
//! would have failed on it, and a rotation to a bad set keeps the old one.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use meshproxy_config as config;
use meshproxy_config::spiffe::SpiffeId;

/// A checked, usable set of credentials.
#[derive(Debug)]
pub struct Credentials {
    pub identity: SpiffeId,
    pub trust_domain: Arc<str>,
    pub certified_key: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Checks client certificates against `roots`; built once per set, used per handshake.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// Seconds since the epoch after which the leaf is no longer valid.
    pub not_after: i64,
}

/// The PEM texts of a set, and where they came from (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Pems<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub bundle: &'a [u8],
}

/// Why a set of credentials was refused, and which of its fields (`cert`, `key`, `bundle`,
/// `trust_domain`) is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    pub field: &'static str,
    pub message: String,
}

// === impl Credentials ===

impl Credentials {
    /// Reads and checks the files an `identity` section names.
    pub fn load(identity: &config::Identity) -> Result<Credentials, CredentialError> {
        let read = |field: &'static str, path: &str| {
            std::fs::read(path).map_err(|e| CredentialError::new(field, format!("cannot read '{path}': {e}")))
        };
        let (cert, key, bundle) = (read("cert", &identity.cert)?, read("key", &identity.key)?, read("bundle", &identity.bundle)?);
        Credentials::from_pems(&identity.trust_domain, Pems { cert: &cert, key: &key, bundle: &bundle })
    }

    /// Checks a set given as PEM texts: every certificate parses, the key is the leaf's, the
    /// leaf is valid now, names exactly one SPIFFE ID in the trust domain, and chains to the
    /// bundle.
    pub fn from_pems(trust_domain: &str, pems: Pems<'_>) -> Result<Credentials, CredentialError> {
        meshproxy_config::spiffe::check_trust_domain(trust_domain).map_err(|e| CredentialError::new("trust_domain", e.to_string()))?;
        let chain = certificates("cert", pems.cert)?;
        let roots = trust_bundle(pems.bundle)?;
        let key = PrivateKeyDer::from_pem_slice(pems.key).map_err(|e| {
            CredentialError::new("key", format!("no private key found (PKCS#8, SEC1 or PKCS#1 PEM expected): {e}"))
        })?;
        let provider = super::provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CredentialError::new("key", format!("unusable private key: {e}")))?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        certified_key
            .keys_match()
            .map_err(|_| CredentialError::new("key", "the private key does not match the certificate's public key"))?;

        let leaf = &chain[0];
        let (identity, not_before, not_after) = leaf_facts(leaf)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if now > not_after {
            return Err(CredentialError::new("cert", format!("the certificate expired at {}", utc(not_after))));
        }
        if now < not_before {
            return Err(CredentialError::new("cert", format!("the certificate is not valid before {}", utc(not_before))));
        }
        if identity.trust_domain() != trust_domain {
            return Err(CredentialError::new(
                "cert",
                format!("the certificate's SPIFFE ID {identity} is outside the trust domain '{trust_domain}'"),
            ));
        }
        let parsed = ParsedCertificate::try_from(leaf).map_err(|e| CredentialError::new("cert", format!("unusable certificate: {e}")))?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| CredentialError::new("cert", format!("the certificate does not chain to a CA in the bundle: {e}")))?;

        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| CredentialError::new("bundle", format!("unusable trust bundle: {e}")))?;
        Ok(Credentials { identity, trust_domain: trust_domain.into(), certified_key: Arc::new(certified_key), roots, client_verifier, not_after })
    }
}

fn certificates(field: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CredentialError::new(field, format!("not a PEM certificate list: {e}")))?;
    if chain.is_empty() {
        return Err(CredentialError::new(field, "no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)"));
    }
    Ok(chain)
}

/// The trust bundle as a root store: every certificate in it is a trust anchor.
pub fn trust_bundle(pem: &[u8]) -> Result<RootCertStore, CredentialError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates("bundle", pem)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| CredentialError::new("bundle", format!("certificate {} of the bundle is unusable: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// The leaf's SPIFFE ID (its one URI SAN) and validity window, in seconds since the epoch.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(SpiffeId, i64, i64), CredentialError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| CredentialError::new("cert", format!("unreadable certificate: {e}")))?;
    let validity = cert.validity();
    let identity = spiffe_id(&cert).map_err(|message| CredentialError::new("cert", message))?;
    Ok((identity, validity.not_before.timestamp(), validity.not_after.timestamp()))
}

/// The SPIFFE ID of a certificate, as the X.509-SVID spec puts it: exactly one URI SAN.
pub fn spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, String> {
    let names = match cert.subject_alternative_name() {
        Ok(Some(extension)) => &extension.value.general_names,
        Ok(None) => return Err("the certificate has no SPIFFE ID (no subject alternative names)".into()),
        Err(e) => return Err(format!("the certificate's subject alternative names are unreadable: {e}")),
    };
    let uris: Vec<&str> = names.iter().filter_map(|n| if let GeneralName::URI(uri) = n { Some(*uri) } else { None }).collect();
    match uris.as_slice() {
        [uri] => SpiffeId::parse(uri).map_err(|e| format!("the certificate's URI SAN '{uri}' is not a SPIFFE ID: {}", e.problem())),
        [] => Err("the certificate has no SPIFFE ID (no URI subject alternative name)".into()),
        _ => Err(format!("the certificate has {} URI SANs; a SPIFFE certificate has exactly one", uris.len())),
    }
}

/// The SPIFFE ID of a DER certificate presented by a peer.
pub fn peer_spiffe_id(der: &CertificateDer<'_>) -> Result<SpiffeId, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| format!("unreadable certificate: {e}"))?;
    spiffe_id(&cert)
}

/// `2026-11-25 10:00:00 UTC`, for messages about validity.
fn utc(seconds: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(seconds).map_or_else(|_| format!("{seconds} (Unix time)"), |t| t.to_string())
}

// === impl CredentialError ===

impl CredentialError {
    pub fn new(field: &'static str, message: impl Into<String>) -> CredentialError {
        CredentialError { field, message: message.into() }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CredentialError {}
