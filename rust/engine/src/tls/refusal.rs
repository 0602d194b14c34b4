//! Why a TLS handshake was refused: one reason per refusal, counted by direction and logged
//! with its detail. The verifiers say why in a `Refused` they hand rustls; anything rustls
//! finds itself is sorted into the same reasons here.

use std::fmt;
use std::sync::Arc;

use rustls::{CertificateError, OtherError};

/// The reasons, in the order stats count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Plain text where only TLS is accepted.
    NotTls,
    NoClientCertificate,
    /// The peer's chain leads to no CA of the trust bundle.
    UnknownCa,
    Expired,
    NotYetValid,
    NoSpiffeId,
    /// A SPIFFE ID from another trust domain.
    ForeignTrustDomain,
    /// A valid peer of the mesh, but not one of the identities the cluster allows.
    WrongIdentity,
    /// This sidecar has no credentials to offer.
    NoCredentials,
    Timeout,
    /// The peer hung up or reset the connection during the handshake. A client that closes
    /// abruptly (SO_LINGER 0) right after its Finished lands here too: the server's session
    /// tickets, its last handshake write, then fail.
    PeerClosed,
    /// Any other handshake failure (protocol error, bad signature).
    Handshake,
}

/// A refusal decided by a verifier of ours, carried through rustls as a certificate error.
#[derive(Debug, Clone)]
pub struct Refused {
    pub reason: Reason,
    pub detail: String,
}

// === impl Reason ===

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::NotTls,
        Reason::NoClientCertificate,
        Reason::UnknownCa,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::NoSpiffeId,
        Reason::ForeignTrustDomain,
        Reason::WrongIdentity,
        Reason::NoCredentials,
        Reason::Timeout,
        Reason::PeerClosed,
        Reason::Handshake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::NotTls => "not_tls",
            Reason::NoClientCertificate => "no_client_certificate",
            Reason::UnknownCa => "unknown_ca",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::NoSpiffeId => "no_spiffe_id",
            Reason::ForeignTrustDomain => "foreign_trust_domain",
            Reason::WrongIdentity => "wrong_identity",
            Reason::NoCredentials => "no_credentials",
            Reason::Timeout => "timeout",
            Reason::PeerClosed => "peer_closed",
            Reason::Handshake => "handshake",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
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
