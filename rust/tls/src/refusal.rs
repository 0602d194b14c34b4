//! Why a TLS handshake was refused: one reason per refusal, counted by direction and logged
//! with its detail. The verifiers say why in a `Refused` they hand rustls; anything rustls
//! finds itself is sorted into the same reasons here.

use std::fmt;
use std::sync::Arc;

use rustls::{CertificateError, OtherError};

pub use meshproxy_telemetry::refusal::Reason;

/// A refusal decided by a verifier of ours, carried through rustls as a certificate error.
#[derive(Debug, Clone)]
pub struct Refused {
    pub reason: Reason,
    pub detail: String,
}

// === impl Refused ===

impl Refused {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Refused {
        Refused { reason, detail: detail.into() }
    }

    /// As rustls carries it out of a verifier.
    pub fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }

    /// Sorts a failed handshake, as tokio-rustls reports it, into a reason.
    pub fn of_handshake(error: &std::io::Error) -> Refused {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => Refused::of_rustls(tls),
            None if matches!(error.kind(), ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof) => {
                Refused::new(Reason::PeerClosed, error.to_string())
            }
            None => Refused::new(Reason::Handshake, error.to_string()),
        }
    }

    pub fn of_rustls(error: &rustls::Error) -> Refused {
        use rustls::Error as E;
        let reason = match error {
            E::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
                if let Some(refused) = other.downcast_ref::<Refused>() {
                    return refused.clone();
                }
                Reason::Handshake
            }
            E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => Reason::Expired,
            E::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => Reason::NotYetValid,
            E::InvalidCertificate(CertificateError::UnknownIssuer) => Reason::UnknownCa,
            E::NoCertificatesPresented => Reason::NoClientCertificate,
            // The peer refused us: its alert names why (unknown CA, bad or expired certificate).
            E::AlertReceived(alert) => return Refused::new(Reason::Handshake, format!("the peer refused the handshake: {alert:?}")),
            _ => Reason::Handshake,
        };
        Refused::new(reason, error.to_string())
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.reason.name())
    }
}

impl std::error::Error for Refused {}
