use std::fmt;
use std::str::FromStr;

/// How a cluster chooses among its endpoints. The names are the config's `lb` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Each endpoint in turn, `weight` turns per cycle, spread through the cycle.
    RoundRobin,
    /// An endpoint drawn at random with probability proportional to its weight.
    Random,
    /// Power of two choices on requests in flight per unit of weight.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency scaled by in-flight requests per unit of
    /// weight (as in Linkerd): prefers endpoints that answer fast and are not busy.
    #[default]
    P2cEwma,
    /// Consistent hashing on a ring: a request's hash key (a route's `hash_policy`) picks the
    /// same endpoint on every sidecar; when one of N endpoints leaves, about 1/N of keys move.
    RingHash,
    /// Consistent hashing with Maglev's lookup table: as `RingHash`, a pick in O(1).
    Maglev,
}

/// A policy name that is not one of [`Policy::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

// === impl Policy ===

impl Policy {
    pub const NAMES: [&'static str; 6] = ["round_robin", "random", "least_request", "p2c_ewma", "ring_hash", "maglev"];

    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::Random => "random",
            Policy::LeastRequest => "least_request",
            Policy::P2cEwma => "p2c_ewma",
            Policy::RingHash => "ring_hash",
            Policy::Maglev => "maglev",
        }
    }

    /// Whether the policy picks by a request's hash key.
    pub fn is_hashing(self) -> bool {
        matches!(self, Policy::RingHash | Policy::Maglev)
    }
}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(Policy::RoundRobin),
            "random" => Ok(Policy::Random),
            "least_request" => Ok(Policy::LeastRequest),
            "p2c_ewma" => Ok(Policy::P2cEwma),
            "ring_hash" => Ok(Policy::RingHash),
            "maglev" => Ok(Policy::Maglev),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl UnknownPolicy ===

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not valid; expected one of {}", self.0, Policy::NAMES.join(", "))
    }
}

impl std::error::Error for UnknownPolicy {}
