//! Redis: the one place cachewarden writes to the cache.
//!
//! Every write — warm jobs, invalidations, refreshes, binlog projections — goes through [`Cache::apply`] (batches of
//! [`KeyOp`]s), [`Cache::invalidate`] or [`Cache::supersede`]; knows nothing of jobs or SQL. What the server is — one
//! node (`node`) or a Redis Cluster (`cluster`: slots, batches per master, protection and the HA fence per slot) —
//! is decided once at connect (`connect`, `topology`), and every write respects one [`policy::WritePolicy`]:
//! stale-set protection (read leases and the guarded write path, `guard`) and the HA fence (`fence`). Also here: the
//! lease's commands (`lease`), the Lua scripts (`scripts`), what it only reads back (values, scans, INFO, ACL,
//! `reads`), a sample of the keyspace with its memory (`sample`), the streams and the channel (`streams`), the errors (`error`).

use std::sync::Arc;
use std::time::Duration;

use crate::pure::model::{KeyOp, ReadStamp};

mod auth;
pub mod cluster;
mod connect;
mod error;
mod fence;
mod guard;
mod lease;
mod node;
mod operations;
mod pieces;
mod policy;
mod reads;
mod replies;
mod sample;
mod scripts;
mod streams;
mod topology;
mod versions;

pub(crate) use auth::only_credentials_differ;
pub(crate) use connect::db_of;
pub use connect::{Conn, client};
pub use error::CacheError;
pub use fence::{Fence, LeaseAttempt};
pub(crate) use guard::{ReadLease, read_lease_keys};
use operations::Operations;
pub(crate) use pieces::Claimed;
use policy::WritePolicy;
pub use reads::info_field;
pub(crate) use sample::NodeSample;
use scripts::Scripts;
use topology::{Topology, on_topology};

/// Keys SCAN looks at per call during a pattern delete: big enough to be quick, small enough not to stall Redis.
const SCAN_COUNT: usize = 1000;
/// The counter that orders invalidations and reads (stale-set protection).
pub const VERSION_KEY: &str = "cachewarden:version";
/// The sorted set of read leases: member = lease id, score = expiry in Redis milliseconds.
pub const READERS_KEY: &str = "cachewarden:readers";
/// Prefix of the read leases' evidence hashes (`cachewarden:lease:<id>`: key → the version that invalidated it).
pub const LEASE_PREFIX: &str = "cachewarden:lease:";
/// The keys a stale-set protection script (invalidate, guarded set) declares before the keys it changes: the fence
/// slot, the version counter, the read-lease set. The fence slot is the `[ha]` lease key for a call that writes values
/// under `[ha]`, else the version counter (with an empty token: no check), never an empty name: an ACL checks every
/// declared key and no key pattern allows "". The calls build their key lists from this, and the ACL check at start
/// (`access`) asks about exactly these lists, with each slot [`fence_slots`] gives.
pub(crate) fn script_head(fence: &str) -> [&str; 3] {
    [fence, VERSION_KEY, READERS_KEY]
}

/// Every key a script's fence slot may hold under a configuration: the version counter, and the `[ha]` lease key.
pub(crate) fn fence_slots(ha_key: Option<&str>) -> Vec<&str> {
    std::iter::once(VERSION_KEY).chain(ha_key).collect()
}

/// Where warm run `run` builds a set or sorted set before renaming it over `key` (same slot, same prefix).
pub(crate) fn build_key(key: &str, run: &str) -> String {
    cluster::slot::slot_mate(key, &format!("{BUILD_SUFFIX}-{run}"))
}

/// What a key a set is built under adds to the set's key.
pub(crate) const BUILD_SUFFIX: &str = ":cachewarden-build";

/// Keys per Lua call: one script run blocks Redis, so keep each short.
const SCRIPT_BATCH: usize = 500;

/// The stream entry field that holds an invalidation message.
pub(crate) const STREAM_FIELD: &str = "message";
/// A reply slower than this means Redis is in trouble; the pipeline fails and the caller retries.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache. Cheap to clone: clones share one connection (or cluster connection) and its state.
#[derive(Clone)]
pub struct Cache {
    /// The current user and password, when the URL has one: every connection takes them from here.
    auth: Option<Arc<auth::RedisAuth>>,
    topology: Topology,
    policy: WritePolicy,
    scripts: Arc<Scripts>,
}

impl Cache {
    /// A connection for commands routed by their key (on a cluster, redis-rs routes them; on one node, the node).
    fn conn(&self) -> Conn {
        match &self.topology {
            Topology::Node(node) => node.conn.clone(),
            Topology::Cluster(cluster) => Conn::Cluster(cluster.conn()),
        }
    }

    /// Deletes `keys` as invalidated: with protection, takes a new version (returned) so that values read before now
    /// can no longer be written; without, a plain UNLINK (returns 0).
    ///
    /// A full Redis (`OOM` under `noeviction`) refuses the protection's bookkeeping but never a delete: the keys are
    /// then unlinked plainly — the invalidation happens, its protection against a slower read in flight does not
    /// (counted in `cachewarden_protection_degraded_total{reason="out_of_memory"}`).
    pub async fn invalidate<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<u64, CacheError> {
        if !self.policy.protected {
            return self.unlink(keys).await.map(|()| 0);
        }
        match on_topology!(&self.topology, t => t.invalidate_guarded(keys, &self.policy).await) {
            Err(error) if error.is_out_of_memory() => {
                tracing::warn!(
                    keys = keys.len(),
                    "Redis is out of memory (maxmemory under noeviction): deleting the keys without stale-set \
                     protection."
                );
                crate::telemetry::metrics::record_protection_degraded("out_of_memory", keys.len() as u64);
                self.unlink(keys).await.map(|()| 0)
            }
            outcome => outcome,
        }
    }

    /// Plain UNLINK of `keys` (per master on a cluster).
    async fn unlink<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<(), CacheError> {
        on_topology!(&self.topology, t => t.unlink(keys).await)
    }

    /// Writes values that supersede anything read so far (row images from the binlog, in binlog order): like
    /// [`Cache::invalidate`] followed by the sets, in one script, so no older read can land in between. `Delete` ops
    /// are unlinked; stamps are ignored. A full Redis refusing the values gets the keys deleted instead (a miss, never
    /// the old value).
    pub async fn supersede(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        let written = if self.policy.protected {
            on_topology!(&self.topology, t => t.supersede_guarded(ops, &self.policy).await)
        } else {
            self.apply_unguarded(ops).await
        };
        match written {
            Err(error) if error.is_out_of_memory() => {
                let keys: Vec<&str> = ops.iter().map(KeyOp::key).collect();
                tracing::warn!(
                    keys = keys.len(),
                    "Redis is out of memory (maxmemory under noeviction): deleting the keys instead of writing them."
                );
                crate::telemetry::metrics::record_protection_degraded("out_of_memory", keys.len() as u64);
                self.unlink(&keys).await
            }
            outcome => outcome,
        }
    }

    /// Makes every value write carry `fence`'s token (`[ha]`); the clones made afterwards share it.
    pub fn fenced(mut self, fence: Arc<Fence>) -> Self {
        self.policy.fence = Some(fence);
        self
    }

    /// Applies `ops` in order. Under protection, the sets of one read go through the guarded path together (see
    /// `guard`); the rest is one pipeline, or under `[ha]` fenced scripts when it writes values. Either every reply
    /// arrives or the whole batch is reported failed (some ops may have been applied; every op is idempotent, so the
    /// caller simply retries the batch).
    pub async fn apply(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        fn stamp(op: &KeyOp) -> Option<&ReadStamp> {
            match op {
                KeyOp::Set { read, .. } => read.as_ref(),
                KeyOp::Delete { .. } => None,
            }
        }
        if !self.policy.protected {
            return self.apply_unguarded(ops).await;
        }
        for run in ops.chunk_by(|a, b| stamp(a) == stamp(b)) {
            match stamp(&run[0]) {
                Some(read) => on_topology!(&self.topology, t => t.set_guarded(read, run, &self.policy).await)?,
                None => self.apply_unguarded(run).await?,
            }
        }
        Ok(())
    }

    /// `ops` without stale-set protection: under `[ha]` values go through the fence (deletes are safe from anyone,
    /// at worst a miss; values only from the lease holder), else plain commands in one pipeline.
    async fn apply_unguarded(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.policy.fence.is_some() && ops.iter().any(|op| matches!(op, KeyOp::Set { .. })) {
            return on_topology!(&self.topology, t => t.apply_fenced(ops, &self.policy).await);
        }
        on_topology!(&self.topology, t => t.apply_plain(ops).await)
    }

    /// Registers a read lease and takes the current version; call it before reading data that will be written. The
    /// lease lives `timeout` (the read's own limit) plus a margin for the writes. Without protection it costs nothing
    /// and `read_at` is 0.
    pub async fn begin_read(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        if !self.policy.protected {
            return Ok(ReadLease::unprotected());
        }
        on_topology!(&self.topology, t => t.begin_read(timeout).await)
    }

    /// Ends a read lease: from here on, writes stamped with it are refused, and invalidations stop recording evidence
    /// for it. A failure is only logged: the lease and its evidence then expire by themselves.
    pub async fn end_read(&self, lease: ReadLease) {
        if let Some(id) = lease.id() {
            on_topology!(&self.topology, t => t.end_read(id).await)
        }
    }

    /// Deletes the keys matching a Redis glob `pattern` with SCAN MATCH + UNLINK in batches (never KEYS, which
    /// blocks Redis), stopping after `limit` keys. Returns how many were deleted and whether the limit cut it short.
    pub async fn delete_matching(&self, pattern: &str, limit: u64) -> Result<(u64, bool), CacheError> {
        let mut deleted = 0u64;
        for node in 0..self.nodes() {
            let (more, cut_short) = self.delete_matching_on(node, pattern, limit - deleted).await?;
            deleted += more;
            if cut_short {
                return Ok((deleted, true));
            }
        }
        Ok((deleted, false))
    }

    /// What the server is, in words: a single node, or a cluster and how many masters it has.
    pub fn shape(&self) -> String {
        on_topology!(&self.topology, t => t.shape())
    }

    /// How many nodes a SCAN of the whole keyspace visits: 1, or a cluster's masters.
    fn nodes(&self) -> usize {
        on_topology!(&self.topology, t => t.nodes())
    }

    /// [`Cache::delete_matching`] on one node (see [`Cache::nodes`]).
    async fn delete_matching_on(&self, node: usize, pattern: &str, limit: u64) -> Result<(u64, bool), CacheError> {
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.scan_page(node, cursor, pattern).await?;
            let room = usize::try_from(limit - deleted).unwrap_or(usize::MAX);
            let batch = &keys[..keys.len().min(room)];
            if !batch.is_empty() {
                // Raw bytes: a key that is not UTF-8 is deleted as it is.
                self.invalidate(batch).await?;
                deleted += batch.len() as u64;
            }
            if deleted >= limit && (batch.len() < keys.len() || next != 0) {
                return Ok((deleted, true));
            }
            if next == 0 {
                return Ok((deleted, false));
            }
            cursor = next;
        }
    }
}

/// The command that reads a value as `structure` stores it: `GET`, `HGETALL` for a hash, `JSON.GET` for a document,
/// `SMEMBERS` for a set, `ZRANGE … WITHSCORES` for a sorted set.
fn read_command(key: &str, structure: crate::pure::codec::Structure) -> redis::Cmd {
    use crate::pure::codec::Structure;
    match structure {
        Structure::String => redis::cmd("GET").arg(key).clone(),
        Structure::Hash => redis::cmd("HGETALL").arg(key).clone(),
        Structure::Json => redis::cmd("JSON.GET").arg(key).clone(),
        Structure::Set => redis::cmd("SMEMBERS").arg(key).clone(),
        Structure::Zset => redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES").clone(),
    }
}

/// Whether `op` writes a value the scripts interpret (a hash, a document, a set's writes): such ops go to Redis in
/// batch scripts (`PLAIN_APPLY` and the guarded ones), not as plain commands.
pub(crate) fn is_scripted(op: &KeyOp) -> bool {
    matches!(op, KeyOp::Set { value, .. } if value.starts_with(crate::pure::codec::HASH_TAG)
        || value.starts_with(crate::pure::codec::HASH_UPDATE_TAG)
        || value.starts_with(crate::pure::codec::JSON_TAG)
        || crate::pure::members::is_member_write(value))
}

/// The command that applies `op`: `SET` or `UNLINK`. Never for a scripted value (see [`is_scripted`]): a batch that
/// holds one goes through a script.
pub(crate) fn op_command(op: &KeyOp) -> redis::Cmd {
    debug_assert!(
        !is_scripted(op),
        "a scripted value must go through a script, not a plain SET"
    );
    match op {
        KeyOp::Set { key, value, ttl, .. } => set_command(key, value, *ttl),
        KeyOp::Delete { key } => redis::cmd("UNLINK").arg(key).clone(),
    }
}

/// `SET key value [PX ttl]`, its buffer sized up front (a warm run builds one per key).
fn set_command(key: &str, value: &[u8], ttl: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(5, key.len() + value.len() + 32);
    cmd.arg("SET").arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl_millis(Some(ttl)));
    }
    cmd
}

/// A TTL as Redis milliseconds: at least 1 (0 would be an error), 0 for none (the scripts' convention).
fn ttl_millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| ttl.as_millis().max(1) as u64)
}

fn command_failed(error: redis::RedisError) -> CacheError {
    crate::telemetry::metrics::redis_error();
    CacheError::Command(error)
}
