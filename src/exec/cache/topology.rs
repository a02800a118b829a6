//! The two shapes a Redis deployment has — one node ([`Node`]) or a Redis Cluster ([`Cluster`]) — chosen once at
//! connect ([`Topology`]); each implements the operations once (`operations::Operations`).
//!
//! [`super::Cache`] holds one `Topology` and sends each operation to it with [`on_topology!`]; what is the same on
//! both (the out-of-memory fallbacks, which path a write takes under the write policy) stays in `Cache`, and
//! nothing below it asks which topology it is on.

use std::sync::Arc;

use super::cluster::Cluster;
use super::node::Node;

/// The deployment this cache talks to, decided at connect.
#[derive(Clone)]
pub(super) enum Topology {
    Node(Node),
    Cluster(Arc<Cluster>),
}

/// `on_topology!(topology, t => expression)`: the expression on whichever topology this is.
macro_rules! on_topology {
    ($topology:expr, $t:ident => $body:expr) => {
        match $topology {
            $crate::exec::cache::topology::Topology::Node($t) => $body,
            $crate::exec::cache::topology::Topology::Cluster($t) => $body,
        }
    };
}
pub(super) use on_topology;
