//! The two shapes a Redis deployment has — one node ([`Node`]) or a Redis Cluster ([`Cluster`]) — chosen once at
//! connect ([`Topology`]), and the operations each of them implements once ([`Operations`]).
//!
//! [`super::Cache`] holds one `Topology` and sends each operation to it with [`on_topology!`]; what is the same on
//! both (the out-of-memory fallbacks, which path a write takes under the [`WritePolicy`]) stays in `Cache`, and
//! nothing below it asks which topology it is on.

use std::sync::Arc;
use std::time::Duration;

use super::cluster::Cluster;
use super::node::Node;
use super::policy::WritePolicy;
use super::{CacheError, LeaseAttempt, ReadLease};
use crate::codec::Structure;
use crate::model::{KeyOp, ReadStamp};

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
            $crate::cache::topology::Topology::Node($t) => $body,
            $crate::cache::topology::Topology::Cluster($t) => $body,
        }
    };
}
pub(super) use on_topology;

/// What each topology implements: the commands a write policy, a read lease or a scan becomes on it.
pub(super) trait Operations {
    /// `ops` as plain commands (`SET`, `UNLINK`, a hash's replacing script), in order, with nothing checked.
    async fn apply_plain(&self, ops: &[KeyOp]) -> Result<(), CacheError>;

    /// Plain `UNLINK` of `keys`.
    async fn unlink<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<(), CacheError>;

    /// Unlinks `keys` under stale-set protection: a new version, recorded for every read in flight; returns it.
    async fn invalidate_guarded<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(
        &self,
        keys: &[K],
        policy: &WritePolicy,
    ) -> Result<u64, CacheError>;

    /// Writes values that supersede anything read so far, as one invalidation and the sets (under protection).
    async fn supersede_guarded(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError>;

    /// Writes the sets of one read (`ops` all carry `read`) under stale-set protection and the fence.
    async fn set_guarded(&self, read: &ReadStamp, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError>;

    /// `ops` under the HA fence, without stale-set protection: refused whole when the lease is lost.
    async fn apply_fenced(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError>;

    /// Registers a read lease under protection (see `guard`).
    async fn begin_read(&self, timeout: Duration) -> Result<ReadLease, CacheError>;

    /// Ends read lease `id`; a failure is only logged (the lease expires by itself).
    async fn end_read(&self, id: &str);

    /// Takes the HA lease at `key` for `token` if it is free.
    async fn take_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<LeaseAttempt, CacheError>;

    /// The raw replies of reading `keys` as `structure` stores them, in the keys' order.
    async fn read(&self, keys: &[String], structure: Structure) -> Result<Vec<redis::Value>, CacheError>;

    /// How many nodes a SCAN of the whole keyspace visits.
    fn nodes(&self) -> usize;

    /// One `SCAN cursor MATCH pattern COUNT count` page on the `node`th node: the next cursor and the keys.
    async fn scan_page<K: redis::FromRedisValue>(
        &self,
        node: usize,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<K>), CacheError>;

    /// `INFO section` (on a cluster, its numeric fields summed over the masters).
    async fn info(&self, section: &str) -> Result<String, CacheError>;

    /// What the server is, in words.
    fn shape(&self) -> String;
}
