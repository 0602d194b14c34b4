//! Why a TLS handshake was refused, as the stats count it (`tls.<direction>.refused.<reason>`);
//! the TLS crate sorts each refusal into one of these.

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
