//! Redis: the one place cachewarden writes to the cache.
//!
//! Every write — warm jobs, invalidations, refreshes, binlog projections — goes through [`Cache::apply`] (batches of
//! [`KeyOp`]s), [`Cache::invalidate`] or [`Cache::supersede`]. Owns the connection ([`Conn`]: to one node a redis-rs
//! `ConnectionManager`, to a Redis Cluster redis-rs' cluster connection; both reconnect by themselves; made in
//! `connect`); knows nothing of jobs or SQL. Stale-set protection — read leases and the guarded write path — is `guard`; what a cluster needs
//! besides (slots, batches per master, protection and the HA fence per slot) `cluster`; the HA fence `fence`, the lease's commands
//! `lease`, the Lua scripts `scripts`, what it only reads back (values, scans, INFO, ACL) `reads`.

use std::sync::Arc;
use std::time::Duration;

use crate::model::KeyOp;

mod auth;
pub mod cluster;
mod connect;
mod fence;
mod guard;
mod lease;
mod reads;
mod scripts;
mod streams;

pub use auth::only_credentials_differ;
pub use connect::{Conn, client, db_of};
pub use fence::Fence;
use guard::{Dedicated, counter_seed};
pub use guard::{ReadLease, read_lease_keys};
pub use lease::LeaseAttempt;
pub use reads::info_field;
use scripts::{FENCED, Scripts};

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
pub fn script_head(fence: &str) -> [&str; 3] {
    [fence, VERSION_KEY, READERS_KEY]
}

/// Every key a script's fence slot may hold under a configuration: the version counter, and the `[ha]` lease key.
pub fn fence_slots(ha_key: Option<&str>) -> Vec<&str> {
    std::iter::once(VERSION_KEY).chain(ha_key).collect()
}

/// Keys per Lua call: one script run blocks Redis, so keep each short.
const SCRIPT_BATCH: usize = 500;

/// The stream entry field that holds an invalidation message.
pub const STREAM_FIELD: &str = "message";
/// A reply slower than this means Redis is in trouble; the pipeline fails and the caller retries.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The first connection failed.
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// A command or pipeline failed.
    #[error("Redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// Stale-set protection refused a batch: the read lease its data was read under had ended (the run timed out or
    /// gave up, or outlived its lease). Nothing of the batch was written; reading again is the remedy.
    #[error(
        "the read lease ended before its writes landed; the batch was refused so that it cannot install stale data"
    )]
    LeaseEnded,
    /// With `[ha]`: this instance does not hold the lease (it is the standby, or lost the lease), so Redis refuses
    /// its writes. Nothing was written; the leader writes instead.
    #[error("this instance does not hold the HA lease; its writes are refused")]
    Fenced,
    /// The server is a Redis Cluster (ElastiCache with cluster mode enabled), but `[redis] cluster` is not set.
    #[error(
        "the server is a Redis Cluster (ElastiCache: cluster mode enabled): set `cluster = true` in [redis] (or \
         CACHEWARDEN_REDIS__CLUSTER=true), with url = the configuration endpoint; as a single node, keys would land \
         on the wrong shard"
    )]
    ClusterMode,
    /// `[redis] cluster = true`, but the server is a single node (or cluster mode disabled).
    #[error(
        "[redis] cluster = true, but the server is not a Redis Cluster (cluster_enabled:0; ElastiCache: cluster mode \
         disabled): remove `cluster = true`, or point url at the cluster's configuration endpoint"
    )]
    NotCluster,
    /// The CA file configured for TLS could not be read.
    #[error("cannot read Redis CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl CacheError {
    /// Whether trying again later may succeed (a dropped connection rather than, say, a refused password).
    pub fn is_transient(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => !matches!(
                error.kind(),
                redis::ErrorKind::AuthenticationFailed
                    | redis::ErrorKind::InvalidClientConfig
                    // An ACL refusal: the user may not touch that key or run that command, however often we ask.
                    | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
            ),
            // Reading again, under a new lease, is the remedy.
            CacheError::LeaseEnded => true,
            // Only a new term as leader (which starts its work afresh) may write again.
            CacheError::Fenced | CacheError::ClusterMode | CacheError::NotCluster | CacheError::CaFile { .. } => false,
        }
    }

    /// Whether Redis refused the user or password (`WRONGPASS`, `NOAUTH`): rotated credentials, maybe.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => {
                error.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
            }
            _ => false,
        }
    }

    /// Whether Redis refused a write for memory (`OOM`: `maxmemory` reached under `noeviction`). Deletes are still
    /// allowed then, and free memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, CacheError::Command(error) if error.code() == Some("OOM"))
    }

    /// Whether Redis could not be reached at all (refused, timed out, TLS), as opposed to refusing us: exit 69.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CacheError::Connect(_)) && self.is_transient()
    }

    /// Whether the server answered with an error reply (an unknown command, a refusal) rather than not answering.
    pub fn is_server_reply(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => {
                matches!(error.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension)
            }
            CacheError::LeaseEnded
            | CacheError::Fenced
            | CacheError::ClusterMode
            | CacheError::NotCluster
            | CacheError::CaFile { .. } => false,
        }
    }
}

/// The cache. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct Cache {
    /// The current user and password, when the URL has one: every connection takes them from here.
    auth: Option<Arc<auth::RedisAuth>>,
    conn: Conn,
    /// On a Redis Cluster (`[redis] cluster = true`): the slot map and what goes with it.
    cluster: Option<Arc<cluster::Cluster>>,
    /// Whether stale-set protection is on.
    protected: bool,
    scripts: Arc<Scripts>,
    dedicated: Arc<Dedicated>,
    /// With `[ha]`: the lease every value write must still hold.
    fence: Option<Arc<Fence>>,
}

impl Cache {
    /// Deletes `keys` as invalidated: with protection, takes a new version (returned) so that values read before now
    /// can no longer be written; without, a plain UNLINK (returns 0).
    ///
    /// A full Redis (`OOM` under `noeviction`) refuses the protection's bookkeeping but never a delete: the keys are
    /// then unlinked plainly — the invalidation happens, its protection against a slower read in flight does not
    /// (counted in `cachewarden_protection_degraded_total{reason="out_of_memory"}`).
    pub async fn invalidate<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<u64, CacheError> {
        if !self.protected {
            return self.unlink(keys).await.map(|()| 0);
        }
        match self.invalidate_guarded(keys).await {
            Err(error) if error.is_out_of_memory() => {
                tracing::warn!(
                    keys = keys.len(),
                    "Redis is out of memory (maxmemory under noeviction): deleting the keys without stale-set \
                     protection."
                );
                crate::metrics::record_protection_degraded("out_of_memory", keys.len() as u64);
                self.unlink(keys).await.map(|()| 0)
            }
            outcome => outcome,
        }
    }

    /// Plain UNLINK of `keys` (per master on a cluster).
    async fn unlink<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<(), CacheError> {
        if let Some(cluster) = &self.cluster {
            let commands: Vec<_> = keys
                .iter()
                .map(|key| {
                    (
                        cluster::slot::key_slot(key.as_ref()),
                        redis::cmd("UNLINK").arg(key).clone(),
                    )
                })
                .collect();
            return cluster.send(&commands).await.map(drop);
        }
        if !keys.is_empty() {
            let mut conn = self.conn.clone();
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<u64>(&mut conn)
                .await
                .map_err(command_failed)?;
        }
        Ok(())
    }

    /// [`Cache::invalidate`] under stale-set protection.
    async fn invalidate_guarded<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(
        &self,
        keys: &[K],
    ) -> Result<u64, CacheError> {
        if self.cluster.is_some() {
            return self.cluster_invalidate(keys, None).await;
        }
        let mut version = 0;
        for chunk in keys.chunks(SCRIPT_BATCH) {
            let mut invocation = self.invalidation(false)?;
            for key in chunk {
                invocation.key(key);
            }
            version = self.run(&invocation).await?;
        }
        Ok(version)
    }

    /// Writes values that supersede anything read so far (row images from the binlog, in binlog order): like
    /// [`Cache::invalidate`] followed by the sets, in one script, so no older read can land in between. `Delete` ops
    /// are unlinked; stamps are ignored. A full Redis refusing the values gets the keys deleted instead (a miss, never
    /// the old value).
    pub async fn supersede(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        match self.supersede_values(ops).await {
            Err(error) if error.is_out_of_memory() => {
                let keys: Vec<&str> = ops.iter().map(KeyOp::key).collect();
                tracing::warn!(
                    keys = keys.len(),
                    "Redis is out of memory (maxmemory under noeviction): deleting the keys instead of writing them."
                );
                crate::metrics::record_protection_degraded("out_of_memory", keys.len() as u64);
                self.unlink(&keys).await
            }
            outcome => outcome,
        }
    }

    async fn supersede_values(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if !self.protected {
            return self.apply(ops).await;
        }
        if self.cluster.is_some() {
            let keys: Vec<&[u8]> = ops.iter().map(|op| op.key().as_bytes()).collect();
            return self.cluster_invalidate(&keys, Some(ops)).await.map(drop);
        }
        for run in ops.chunk_by(|a, b| matches!(a, KeyOp::Set { .. }) == matches!(b, KeyOp::Set { .. })) {
            for chunk in run.chunks(SCRIPT_BATCH) {
                let mut invocation = self.invalidation(true)?;
                for op in chunk {
                    match op {
                        KeyOp::Set { key, value, ttl, .. } => {
                            invocation.key(key).arg(value.as_slice()).arg(ttl_millis(*ttl));
                        }
                        KeyOp::Delete { key } => {
                            invocation.key(key);
                        }
                    }
                }
                if self.run::<i64>(&invocation).await? == FENCED {
                    return Err(CacheError::Fenced);
                }
            }
        }
        Ok(())
    }

    /// The invalidation script, fenced when it will set values.
    fn invalidation(&self, fenced: bool) -> Result<redis::ScriptInvocation<'_>, CacheError> {
        // Unfenced, the fence slot holds the version counter with an empty token (no check), as `fence_args` does
        // without `[ha]`: an ACL checks every declared key, and an empty key name is one no key pattern allows.
        let (fence, token) = if fenced {
            self.fence_args()?
        } else {
            (VERSION_KEY.to_string(), String::new())
        };
        let mut invocation = self.scripts.invalidate.prepare_invoke();
        for key in script_head(&fence) {
            invocation.key(key);
        }
        invocation.arg(token).arg(LEASE_PREFIX).arg(counter_seed());
        Ok(invocation)
    }

    /// Makes every value write carry `fence`'s token (`[ha]`); the clones made afterwards share it.
    pub fn fenced(mut self, fence: Arc<Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The fence key and token a value-writing script checks. Without `[ha]` the token is empty (no check) and the
    /// key is the version counter, which the Redis user may touch anyway (an ACL checks every declared key).
    /// [`CacheError::Fenced`] when this instance may not write.
    fn fence_args(&self) -> Result<(String, String), CacheError> {
        match &self.fence {
            None => Ok((VERSION_KEY.to_string(), String::new())),
            Some(fence) => match fence.token() {
                Some(token) => Ok((fence.key().to_string(), token.to_string())),
                None => Err(CacheError::Fenced),
            },
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(command_failed)
    }

    /// Applies `ops` in one pipeline, in order. Either every reply arrives or the whole batch is reported failed
    /// (some ops may have been applied; every op is idempotent, so the caller simply retries the batch).
    pub async fn apply(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.protected && ops.iter().any(|op| matches!(op, KeyOp::Set { read: Some(_), .. })) {
            return self.apply_guarded(ops).await;
        }
        // Deletes are safe from anyone (at worst a miss); values only from the lease holder.
        if self.fence.is_some() && ops.iter().any(|op| matches!(op, KeyOp::Set { .. })) {
            return self.apply_fenced(ops).await;
        }
        if let Some(cluster) = &self.cluster {
            let commands: Vec<_> = ops
                .iter()
                .map(|op| (cluster::slot::key_slot(op.key().as_bytes()), op_command(op)))
                .collect();
            return cluster.send(&commands).await.map(drop);
        }
        let mut pipe = redis::Pipeline::with_capacity(ops.len());
        for op in ops {
            pipe.add_command(op_command(op)).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(command_failed)
    }

    /// `apply` under the HA fence, without stale-set protection: one script per chunk, refused whole when the lease
    /// is lost.
    async fn apply_fenced(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if self.cluster.is_some() {
            return self.cluster_apply_fenced(ops).await;
        }
        let (fence, token) = self.fence_args()?;
        for chunk in ops.chunks(SCRIPT_BATCH) {
            let mut invocation = self.scripts.fenced_apply.key(&fence);
            invocation.arg(&token);
            for op in chunk {
                match op {
                    KeyOp::Set { key, value, ttl, .. } => {
                        invocation.key(key).arg(value.as_slice()).arg(ttl_millis(*ttl));
                    }
                    KeyOp::Delete { key } => {
                        invocation.key(key).arg("").arg("-");
                    }
                }
            }
            if self.run::<i64>(&invocation).await? == FENCED {
                return Err(CacheError::Fenced);
            }
        }
        Ok(())
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
        match &self.cluster {
            None => "a single node (cluster mode disabled)".into(),
            Some(cluster) => format!("a Redis Cluster of {} masters", cluster.masters()),
        }
    }

    /// How many nodes a SCAN of the whole keyspace visits: 1, or a cluster's masters.
    fn nodes(&self) -> usize {
        self.cluster.as_ref().map_or(1, |cluster| cluster.masters())
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

/// The command that applies `op`: `SET` or `UNLINK`.
pub(crate) fn op_command(op: &KeyOp) -> redis::Cmd {
    match op {
        // A hash is replaced in one step, as the scripts do it.
        KeyOp::Set { key, value, ttl, .. } if value.starts_with(crate::codec::HASH_TAG) => redis::cmd("EVAL")
            .arg(scripts::set_value_script())
            .arg(1)
            .arg(key)
            .arg(value.as_slice())
            .arg(ttl_millis(*ttl))
            .clone(),
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
    crate::metrics::redis_error();
    CacheError::Command(error)
}
