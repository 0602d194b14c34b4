//! A route's `hash_policy`: what in a request a hashing cluster (`lb: ring_hash` or `maglev`)
//! keys its pick by, so requests with one key keep landing on one endpoint (affinity).

use serde::{Deserialize, Serialize};

/// One source of a request's hash key; a route lists one or more, and the key is made of every
/// one the request carries, in order. Exactly one field is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HashPolicy {
    /// A request header's value.
    #[serde(default)]
    pub header: Option<String>,
    /// A cookie's value.
    #[serde(default)]
    pub cookie: Option<String>,
    /// The client's IP address (`true`).
    #[serde(default)]
    pub source_ip: Option<bool>,
}
