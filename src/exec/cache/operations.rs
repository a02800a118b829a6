//! What each Redis topology (one node, a cluster) implements once: the commands a write policy, a read lease or a
//! scan becomes on it.

use std::time::Duration;

use super::CacheError;
use super::fence::LeaseAttempt;
use super::guard::ReadLease;
use super::policy::WritePolicy;
use crate::pure::model::{KeyOp, ReadStamp};

/// The read command for one key (see [`Operations::read`]).
pub(super) type ReadCommand = dyn Fn(&str) -> redis::Cmd + Sync;

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

    /// The raw replies of `command` on each of `keys` (a read), in the keys' order.
    async fn read(&self, keys: &[String], command: &ReadCommand) -> Result<Vec<redis::Value>, CacheError>;

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

    /// `pipe` on the `node`th node (as `scan_page` counts them), each reply in order; with `ignore_errors` set, a
    /// refused command is its reply (`Value::ServerError`) rather than failing the call.
    async fn on_node_pipeline(&self, node: usize, pipe: redis::Pipeline) -> Result<Vec<redis::Value>, CacheError>;

    /// `INFO section` (on a cluster, its numeric fields summed over the masters).
    async fn info(&self, section: &str) -> Result<String, CacheError>;

    /// What the server is, in words.
    fn shape(&self) -> String;
}
