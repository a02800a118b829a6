//! Redis: the one place cachewarden writes to the cache.
//!
//! Every write — warm jobs, invalidations, refreshes, binlog projections — goes through [`Cache::apply`] (batches of
//! [`KeyOp`]s), [`Cache::invalidate`] or [`Cache::supersede`]. Owns the connection (a redis-rs `ConnectionManager`,
//! which reconnects by itself); knows nothing of jobs or SQL.
//!
//! # Stale-set protection
//! The race it closes: a warm job reads row v1; the application commits v2; the binlog (or a message) invalidates or
//! refreshes the key; then the warm job's SET of v1 lands, stale until its TTL. With `[redis] stale_set_protection`
//! (on by default):
//!
//! - a global counter, `cachewarden:version`, orders events;
//! - a read whose result will be written holds a *read lease* ([`Cache::begin_read`] .. [`Cache::end_read`]): an
//!   entry in the sorted set `cachewarden:readers`, scored by its expiry (Redis clock), and its *evidence* hash
//!   `cachewarden:lease:<id>`, created with a sentinel field, registered in the same script that takes the version
//!   current before the read;
//! - [`Cache::invalidate`] increments the counter and unlinks the keys in one Lua script, first recording the new
//!   version for each key in the evidence hash of every live lease (never recreating a hash that is gone);
//! - every write of read data carries a [`ReadStamp`] (version and lease). A big batch first tries the optimistic
//!   path: WATCH the counter and, if it still holds the read's version, send plain SETs in MULTI/EXEC, which Redis
//!   discards if anything is invalidated before EXEC runs. Otherwise the batch goes through a Lua script (EVALSHA)
//!   that refuses it whole unless the lease is live and, when the counter has moved since the read, unless its
//!   evidence hash is intact; and skips each SET whose key the evidence names with a newer version.
//!
//! So a value read before an invalidation can never land after it: the optimistic path writes only if no
//! invalidation at all happened between the read and the write; otherwise an invalidation either came before the
//! lease (the read saw its data) or recorded itself in the lease's evidence, and the script writes only while the
//! lease and its evidence exist. Lost evidence means "refuse", never "nothing happened": under any maxmemory policy a
//! hash (or the lease set, or the counter) that Redis evicts turns the batch into a refusal
//! ([`CacheError::LeaseEnded`]: the caller reads again), never into a stale write. The lease is the fence: once it
//! is ended or expired — a run cut short by its timeout, a write task still queued after its run gave up, a process
//! paused past its lease — its writes are refused unless nothing has been invalidated since the read. Refreshes
//! invalidate first and read after, so two refreshes that finish out of order keep the newer one; row images from
//! the binlog ([`Cache::supersede`]) are written in the script that invalidates, so nothing can come between. A
//! refused write leaves the key absent (a miss), never stale.
//!
//! Cost: with no read in flight an invalidation is an INCR, a ZRANGEBYSCORE and an UNLINK; with L reads in flight it
//! also writes L hash fields per key. A quiet warm run's batches are plain SETs (plus a WATCH round trip each);
//! after an invalidation, one Lua call per batch, reading the evidence of its keys.
//!
//! Limits: writes made by the application itself are not versioned; a pattern delete records the keys it finds, not
//! keys a concurrent warm run has not written yet. If Redis loses its state (a flush, a restart without
//! persistence), reads in flight have their writes refused, and a new counter starts at a random point
//! (`counter_seed`). Cluster mode needs the evidence hash-tagged and a per-slot counter (not done).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;
use crate::model::{KeyOp, ReadStamp};

mod fence;
mod lease;
mod scripts;

pub use fence::Fence;
use scripts::{FENCED, Scripts};

/// Keys SCAN looks at per call during a pattern delete: big enough to be quick, small enough not to stall Redis.
const SCAN_COUNT: usize = 1000;
/// The counter that orders invalidations and reads (stale-set protection).
pub const VERSION_KEY: &str = "cachewarden:version";
/// The sorted set of read leases: member = lease id, score = expiry in Redis milliseconds.
pub const READERS_KEY: &str = "cachewarden:readers";
/// Prefix of the read leases' evidence hashes (`cachewarden:lease:<id>`: key → the version that invalidated it).
pub const LEASE_PREFIX: &str = "cachewarden:lease:";
/// Keys per Lua call: one script run blocks Redis, so keep each short.
const SCRIPT_BATCH: usize = 500;
/// A read lease outlives the read's own timeout by this much, so that its writes can land.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// Guarded batches at least this big try the optimistic path first (see [`Cache::set_if_unmoved`]).
const OPTIMISTIC_MIN_KEYS: usize = 64;
/// Idle connections kept for the optimistic path.
const DEDICATED_IDLE: usize = 8;

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
            CacheError::Fenced | CacheError::CaFile { .. } => false,
        }
    }

    /// Whether the server answered with an error reply (an unknown command, a refusal) rather than not answering.
    pub fn is_server_reply(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => {
                matches!(error.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension)
            }
            CacheError::LeaseEnded | CacheError::Fenced | CacheError::CaFile { .. } => false,
        }
    }
}

/// The cache. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    /// Whether stale-set protection is on.
    protected: bool,
    scripts: Arc<Scripts>,
    dedicated: Arc<Dedicated>,
    /// With `[ha]`: the lease every value write must still hold.
    fence: Option<Arc<Fence>>,
}

/// Connections of their own for the optimistic path, which WATCHes a key (connection state the shared connection
/// cannot hold), opened on demand and kept when idle.
struct Dedicated {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    idle: std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>,
}

/// A read whose result will be written, registered so that invalidations meanwhile leave evidence. End it with
/// [`Cache::end_read`] once its writes have landed (or it gave up); if the process dies it expires by itself.
#[derive(Debug)]
#[must_use = "a read lease must be ended, or invalidations keep recording evidence for it until it expires"]
pub struct ReadLease {
    id: Option<Arc<str>>,
    /// The version current before the read (0 without protection).
    pub read_at: u64,
}

impl ReadLease {
    /// The lease's evidence hash (`cachewarden:lease:<id>`), without protection none.
    pub fn evidence(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("{LEASE_PREFIX}{id}"))
    }

    /// The stamp for values read under this lease at `version` (`None` without protection: writes are plain).
    pub fn stamp(&self, version: u64) -> Option<ReadStamp> {
        self.id.as_ref().map(|lease| ReadStamp {
            version,
            lease: lease.clone(),
        })
    }
}

impl Cache {
    /// Connects, failing if Redis cannot be reached now; later outages are reconnected transparently.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, CacheError> {
        let client = client(settings)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(CacheError::Connect)?;
        let dedicated = Dedicated {
            client,
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(RESPONSE_TIMEOUT)),
            idle: std::sync::Mutex::new(Vec::new()),
        };
        Ok(Self {
            conn,
            protected: settings.stale_set_protection,
            scripts: Arc::new(Scripts::new()),
            dedicated: Arc::new(dedicated),
            fence: None,
        })
    }

    /// Registers a read lease and takes the current version; call it before reading data that will be written. The
    /// lease lives `timeout` (the read's own limit) plus a margin for the writes. Without protection it costs nothing
    /// and `read_at` is 0.
    pub async fn begin_read(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        if !self.protected {
            return Ok(ReadLease { id: None, read_at: 0 });
        }
        let id: Arc<str> = format!("{}-{:016x}", std::process::id(), fastrand::u64(..)).into();
        let mut conn = self.conn.clone();
        let read_at = self
            .scripts
            .begin_read
            .key(VERSION_KEY)
            .key(READERS_KEY)
            .key(format!("{LEASE_PREFIX}{id}"))
            .arg(&*id)
            .arg((timeout + LEASE_MARGIN).as_millis() as u64)
            .arg(counter_seed())
            .invoke_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(ReadLease { id: Some(id), read_at })
    }

    /// Ends a read lease: from here on, writes stamped with it are refused, and invalidations stop recording evidence
    /// for it. A failure is only logged: the lease and its evidence then expire by themselves.
    pub async fn end_read(&self, lease: ReadLease) {
        let Some(id) = lease.id else {
            return;
        };
        let mut conn = self.conn.clone();
        let removed = redis::pipe()
            .cmd("ZREM")
            .arg(READERS_KEY)
            .arg(&*id)
            .ignore()
            .cmd("UNLINK")
            .arg(format!("{LEASE_PREFIX}{id}"))
            .ignore()
            .query_async::<()>(&mut conn)
            .await;
        if let Err(error) = removed {
            crate::metrics::redis_error();
            tracing::warn!(lease = &*id, %error, "Cannot end a read lease; it will expire by itself.");
        }
    }

    /// Deletes `keys` as invalidated: with protection, takes a new version (returned) so that values read before now
    /// can no longer be written; without, a plain UNLINK (returns 0).
    pub async fn invalidate<K: redis::ToRedisArgs + Sync>(&self, keys: &[K]) -> Result<u64, CacheError> {
        if !self.protected {
            if !keys.is_empty() {
                let mut conn = self.conn.clone();
                redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(command_failed)?;
            }
            return Ok(0);
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
    /// are unlinked; stamps are ignored.
    pub async fn supersede(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if !self.protected {
            return self.apply(ops).await;
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
        let (fence, token) = if fenced {
            self.fence_args()?
        } else {
            (String::new(), String::new())
        };
        let mut invocation = self.scripts.invalidate.key(fence);
        invocation
            .key(VERSION_KEY)
            .key(READERS_KEY)
            .arg(token)
            .arg(LEASE_PREFIX)
            .arg(counter_seed());
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
        let mut pipe = redis::Pipeline::with_capacity(ops.len());
        for op in ops {
            match op {
                KeyOp::Set { key, value, ttl, .. } => {
                    pipe.add_command(set_command(key, value, *ttl)).ignore();
                }
                KeyOp::Delete { key } => {
                    pipe.cmd("UNLINK").arg(key).ignore();
                }
            }
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(command_failed)
    }

    /// `apply` under the HA fence, without stale-set protection: one script per chunk, refused whole when the lease
    /// is lost.
    async fn apply_fenced(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
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

    /// `apply` with stale-set protection: sets from one read go through the guard script together (in order, batch
    /// by batch), the rest as usual.
    async fn apply_guarded(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        fn stamp(op: &KeyOp) -> Option<&ReadStamp> {
            match op {
                KeyOp::Set { read, .. } => read.as_ref(),
                KeyOp::Delete { .. } => None,
            }
        }
        for run in ops.chunk_by(|a, b| stamp(a) == stamp(b)) {
            let Some(read) = stamp(&run[0]) else {
                let mut unguarded = self.clone();
                unguarded.protected = false;
                Box::pin(unguarded.apply(run)).await?;
                continue;
            };
            if run.len() >= OPTIMISTIC_MIN_KEYS {
                match self.set_if_unmoved(read, run).await {
                    Ok(true) => {
                        crate::metrics::record_guarded_batch("optimistic");
                        continue;
                    }
                    Ok(false) => {}
                    // The script path below goes through the shared connection, which reconnects by itself; this
                    // batch's EXEC, if it still lands, can only land while nothing was invalidated.
                    Err(error) => tracing::debug!(%error, "Optimistic write failed; using the guard script."),
                }
            }
            let (fence, token) = self.fence_args()?;
            for chunk in run.chunks(SCRIPT_BATCH) {
                let mut invocation = self.scripts.guarded_set.key(&fence);
                invocation
                    .key(VERSION_KEY)
                    .key(READERS_KEY)
                    .arg(&token)
                    .arg(LEASE_PREFIX)
                    .arg(read.version)
                    .arg(&*read.lease);
                for op in chunk {
                    if let KeyOp::Set { key, value, ttl, .. } = op {
                        invocation.key(key).arg(value.as_slice()).arg(ttl_millis(*ttl));
                    }
                }
                match self.run::<i64>(&invocation).await? {
                    FENCED => return Err(CacheError::Fenced),
                    refused if refused < 0 => {
                        crate::metrics::record_guarded_batch("refused");
                        return Err(CacheError::LeaseEnded);
                    }
                    _ => {}
                }
                crate::metrics::record_guarded_batch("script");
            }
        }
        Ok(())
    }

    /// The optimistic path for a big batch: on a connection of its own, WATCH the version counter; if it still holds
    /// the read's version, nothing has been invalidated since the read, and the sets go out as plain SETs in one
    /// MULTI/EXEC, which Redis discards if anything is invalidated before it runs. Plain SETs cost Redis about half
    /// the CPU of the guard script; the price is a round trip. Returns whether the batch was written (if not, the
    /// caller goes through the guard script).
    async fn set_if_unmoved(&self, read: &ReadStamp, ops: &[KeyOp]) -> Result<bool, CacheError> {
        let (fence, token) = self.fence_args()?;
        let mut conn = self.dedicated().await?;
        let attempt = async {
            // With [ha], the lease key is watched too: a lost (or merely renewed) lease discards the EXEC, and the
            // batch goes through the fenced script instead.
            let (current, holder): (Option<u64>, Option<String>) = redis::pipe()
                .cmd("UNWATCH")
                .ignore()
                .cmd("WATCH")
                .arg(VERSION_KEY)
                .arg(&fence)
                .ignore()
                .cmd("GET")
                .arg(VERSION_KEY)
                .cmd("GET")
                .arg(&fence)
                .query_async(&mut conn)
                .await?;
            // A missing counter was lost (a flush or restart) since the read: not unmoved.
            if current != Some(read.version) || (!token.is_empty() && holder.as_deref() != Some(token.as_str())) {
                redis::cmd("UNWATCH").exec_async(&mut conn).await?;
                return Ok(false);
            }
            let mut pipe = redis::Pipeline::with_capacity(ops.len());
            pipe.atomic();
            for op in ops {
                if let KeyOp::Set { key, value, ttl, .. } = op {
                    pipe.add_command(set_command(key, value, *ttl)).ignore();
                }
            }
            // `None`: EXEC was discarded because the counter moved after WATCH.
            let written = pipe.query_async::<Option<()>>(&mut conn).await?.is_some();
            if !written {
                crate::metrics::record_guarded_batch("discarded");
            }
            Ok(written)
        };
        match attempt.await {
            Ok(written) => {
                let mut idle = self
                    .dedicated
                    .idle
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if idle.len() < DEDICATED_IDLE {
                    idle.push(conn);
                }
                Ok(written)
            }
            // The connection is dropped, not kept: it may be dead (an idle timeout, a restart, a failover).
            Err(error) => Err(command_failed(error)),
        }
    }

    async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, CacheError> {
        let idle = self
            .dedicated
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self
                .dedicated
                .client
                .get_multiplexed_async_connection_with_config(&self.dedicated.config)
                .await
                .map_err(command_failed),
        }
    }

    /// Deletes the keys matching a Redis glob `pattern` with SCAN MATCH + UNLINK in batches (never KEYS, which
    /// blocks Redis), stopping after `limit` keys. Returns how many were deleted and whether the limit cut it short.
    pub async fn delete_matching(&self, pattern: &str, limit: u64) -> Result<(u64, bool), CacheError> {
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.scan_page(cursor, pattern).await?;
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

    /// `GET key` as text (for cachewarden's own state, such as the binlog checkpoint).
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// One `SCAN cursor MATCH pattern COUNT …` call: the next cursor and the keys of this page.
    async fn scan_page<K: redis::FromRedisValue>(
        &self,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<K>), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// Up to `count` keys matching `pattern`, sampled uniformly from one full SCAN (reservoir sampling), so memory
    /// stays `count` keys whatever the keyspace.
    pub async fn sample_keys(&self, pattern: &str, count: usize) -> Result<Vec<String>, CacheError> {
        let mut cursor: u64 = 0;
        let mut seen = 0usize;
        // Sized as it fills: `count` is a cap, and a job may have far fewer keys.
        let mut sample = Vec::with_capacity(count.min(1024));
        loop {
            let (next, keys): (u64, Vec<String>) = self.scan_page(cursor, pattern).await?;
            for key in keys {
                seen += 1;
                if sample.len() < count {
                    sample.push(key);
                } else {
                    let slot = fastrand::usize(..seen);
                    if slot < count {
                        sample[slot] = key;
                    }
                }
            }
            if next == 0 {
                return Ok(sample);
            }
            cursor = next;
        }
    }

    /// A key's value and remaining TTL in milliseconds (`None` when the key does not exist).
    pub async fn get_with_ttl(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, CacheError> {
        let mut conn = self.conn.clone();
        let (value, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(value.map(|value| (value, ttl)))
    }

    /// `PUBLISH channel message`; returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// `XADD stream * message <message>`; returns the entry id.
    pub async fn stream_add(&self, stream: &str, message: &str) -> Result<String, CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(STREAM_FIELD)
            .arg(message)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// The `INFO stats` section, as Redis writes it.
    pub async fn info_stats(&self) -> Result<String, CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// Keys Redis has evicted since it started (`INFO stats` `evicted_keys`); `None` when it cannot say.
    pub async fn evicted_keys(&self) -> Option<u64> {
        info_field(&self.info_stats().await.ok()?, "evicted_keys")
    }

    /// The connected user's name (`ACL WHOAMI`).
    pub async fn acl_whoami(&self) -> Result<String, CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// Whether `user` may run `command` (`ACL DRYRUN`): `None` when allowed, else the server's reason.
    pub async fn acl_dryrun(&self, user: &str, command: &[String]) -> Result<Option<String>, CacheError> {
        let mut conn = self.conn.clone();
        let answer: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg(user)
            .arg(command)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok((answer != "OK").then_some(answer))
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(command_failed)
    }
}

/// A numeric field of a Redis `INFO` reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

/// A client for `[redis]`: the URL, and the CA file when one is configured. Sources that need connections of their
/// own (pub/sub, blocking stream reads) build them from this too.
pub fn client(settings: &RedisSettings) -> Result<redis::Client, CacheError> {
    match &settings.ca_file {
        None => redis::Client::open(settings.url.expose()),
        // A private CA (self-managed Redis, some ElastiCache setups) instead of the system trust store.
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|source| CacheError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(settings.url.expose(), certificates)
        }
    }
    .map_err(CacheError::Connect)
}

/// Where a missing version counter starts: a random number, so that a counter lost with a flushed or restarted
/// Redis does not count through the versions of reads still in flight (which would make them look unmoved). Below
/// 2^52, so that Lua's doubles stay exact for a long time after.
fn counter_seed() -> u64 {
    fastrand::u64(1..1 << 52)
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
