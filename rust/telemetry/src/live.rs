//! What the running config counts under: its listeners, clusters, and the (direction,
//! listener, route, cluster) of each route target. The stats of anything else belong to a
//! config that was swapped out, and are dropped once no request counts into them any more
//! (`Stats::prune`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::traffic::TrafficKey;

#[derive(Debug, Default)]
pub struct Live {
    pub listeners: BTreeSet<Arc<str>>,
    pub clusters: BTreeSet<Arc<str>>,
    /// Every key a request on the running config can count under, whether or not one has:
    /// a route that carried nothing since the swap keeps the counts it had before. Hashed: a
    /// mesh has ten thousand of them, made again at each swap, and only asked about the few
    /// that carried traffic.
    pub traffic: HashSet<TrafficKey>,
}
