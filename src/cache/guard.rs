//! Stale-set protection: read leases and the guarded write path.
//!
//! The race it closes: a warm job reads row v1; the application commits v2; the binlog (or a message) invalidates or
//! refreshes the key; then the warm job's SET of v1 lands, stale until its TTL. With `[redis] stale_set_protection`
//! (on by default):
//!
//! - a global counter, `cachewarden:version`, orders events;
//! - a read whose result will be written holds a *read lease* ([`Cache::begin_read`](super::Cache::begin_read) .. [`Cache::end_read`](super::Cache::end_read)): an
//!   entry in the sorted set `cachewarden:readers`, scored by its expiry (Redis clock), and its *evidence* hash
//!   `cachewarden:lease:<id>`, created with a sentinel field, registered in the same script that takes the version
//!   current before the read;
//! - [`Cache::invalidate`](super::Cache::invalidate) increments the counter and unlinks the keys in one Lua script, first recording the new
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
//! the binlog ([`Cache::supersede`](super::Cache::supersede)) are written in the script that invalidates, so nothing can come between. A
//! refused write leaves the key absent (a miss), never stale.
//!
//! Cost: with no read in flight an invalidation is an INCR, a ZRANGEBYSCORE and an UNLINK; with L reads in flight it
//! also writes L hash fields per key. A quiet warm run's batches are plain SETs (plus a WATCH round trip each);
//! after an invalidation, one Lua call per batch, reading the evidence of its keys.
//!
//! Limits: writes made by the application itself are not versioned; a pattern delete records the keys it finds, not
//! keys a concurrent warm run has not written yet. If Redis loses its state (a flush, a restart without
//! persistence), reads in flight have their writes refused, and a new counter starts at a random point
//! (`counter_seed`). On a Redis Cluster the same design runs cut along slots (`cluster::guard`).

use std::sync::Arc;
use std::time::Duration;

use super::node::Node;
use super::policy::WritePolicy;
use super::scripts::FENCED;
use super::{
    CacheError, LEASE_PREFIX, READERS_KEY, SCRIPT_BATCH, VERSION_KEY, command_failed, set_command, ttl_millis,
};
use crate::model::{KeyOp, ReadStamp};

/// A read lease outlives the read's own timeout by this much, so that its writes can land.
pub(super) const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Guarded batches at least this big try the optimistic path first (see [`Node::set_if_unmoved`]).
const OPTIMISTIC_MIN_KEYS: usize = 64;

/// Idle connections kept for the optimistic path.
const DEDICATED_IDLE: usize = 8;

/// Connections of their own for the optimistic path, which WATCHes a key (connection state the shared connection
/// cannot hold), opened on demand and kept when idle.
pub(super) struct Dedicated {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    idle: std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>,
}

impl Dedicated {
    pub(super) fn new(
        client: redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
        auth: Option<&super::auth::RedisAuth>,
    ) -> Self {
        let mut config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        if let Some(auth) = auth {
            config = config.set_credentials_provider(auth.provider());
        }
        Self {
            client,
            config,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// A read whose result will be written, registered so that invalidations meanwhile leave evidence. End it with
/// [`Cache::end_read`](super::Cache::end_read) once its writes have landed (or it gave up); if the process dies it expires by itself.
#[derive(Debug)]
#[must_use = "a read lease must be ended, or invalidations keep recording evidence for it until it expires"]
pub struct ReadLease {
    id: Option<Arc<str>>,
    /// The version current before the read (0 without protection).
    pub read_at: u64,
}

impl ReadLease {
    pub(super) fn new(id: Arc<str>, read_at: u64) -> Self {
        Self { id: Some(id), read_at }
    }

    /// The lease of a read without protection: nothing registered, `read_at` 0.
    pub(super) fn unprotected() -> Self {
        Self { id: None, read_at: 0 }
    }

    /// The lease's id (`None` without protection).
    pub(super) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

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

/// The keys the script that opens read lease `id` declares: the version counter, the read-lease set and the lease's
/// evidence hash. The call and the ACL check at start (`access`) both use this list.
pub fn read_lease_keys(id: &str) -> [String; 3] {
    [
        VERSION_KEY.to_string(),
        READERS_KEY.to_string(),
        format!("{LEASE_PREFIX}{id}"),
    ]
}

impl Node {
    /// [`Cache::begin_read`](super::Cache::begin_read) under protection: registers the lease and takes the current version in one script.
    pub(super) async fn open_lease(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        let id: Arc<str> = format!("{}-{:016x}", std::process::id(), fastrand::u64(..)).into();
        let read_at = self
            .run(
                self.scripts
                    .begin_read
                    .key(&read_lease_keys(&id)[..])
                    .arg(&*id)
                    .arg((timeout + LEASE_MARGIN).as_millis() as u64)
                    .arg(counter_seed()),
            )
            .await?;
        Ok(ReadLease::new(id, read_at))
    }

    /// [`Cache::end_read`](super::Cache::end_read): drops the lease and its evidence.
    pub(super) async fn close_lease(&self, id: &str) {
        let mut conn = self.conn.clone();
        let removed = redis::pipe()
            .cmd("ZREM")
            .arg(READERS_KEY)
            .arg(id)
            .ignore()
            .cmd("UNLINK")
            .arg(format!("{LEASE_PREFIX}{id}"))
            .ignore()
            .query_async::<()>(&mut conn)
            .await;
        if let Err(error) = removed {
            crate::metrics::redis_error();
            tracing::warn!(lease = id, %error, "Cannot end a read lease; it will expire by itself.");
        }
    }

    /// The sets of one read (`ops` all carry `read`): the optimistic path for a big batch, else the guard script,
    /// batch by batch, in order.
    pub(super) async fn guarded_set(
        &self,
        read: &ReadStamp,
        ops: &[KeyOp],
        policy: &WritePolicy,
    ) -> Result<(), CacheError> {
        if ops.len() >= OPTIMISTIC_MIN_KEYS {
            match self.set_if_unmoved(read, ops, policy).await {
                Ok(true) => {
                    crate::metrics::record_guarded_batch("optimistic");
                    return Ok(());
                }
                Ok(false) => {}
                // The script path below goes through the shared connection, which reconnects by itself; this
                // batch's EXEC, if it still lands, can only land while nothing was invalidated.
                Err(error) => tracing::debug!(%error, "Optimistic write failed; using the guard script."),
            }
        }
        let (fence, token) = policy.token()?;
        for chunk in ops.chunks(SCRIPT_BATCH) {
            let mut invocation = self.scripts.guarded_set.prepare_invoke();
            for key in super::script_head(&fence) {
                invocation.key(key);
            }
            invocation
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
        Ok(())
    }

    /// The optimistic path for a big batch: on a connection of its own, WATCH the version counter; if it still holds
    /// the read's version, nothing has been invalidated since the read, and the sets go out as plain SETs in one
    /// MULTI/EXEC, which Redis discards if anything is invalidated before it runs. Plain SETs cost Redis about half
    /// the CPU of the guard script; the price is a round trip. Returns whether the batch was written (if not, the
    /// caller goes through the guard script).
    async fn set_if_unmoved(&self, read: &ReadStamp, ops: &[KeyOp], policy: &WritePolicy) -> Result<bool, CacheError> {
        let (fence, token) = policy.token()?;
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
}

/// Where a missing version counter starts: a random number, so that a counter lost with a flushed or restarted
/// Redis does not count through the versions of reads still in flight (which would make them look unmoved). Below
/// 2^52, so that Lua's doubles stay exact for a long time after.
pub(super) fn counter_seed() -> u64 {
    fastrand::u64(1..1 << 52)
}
