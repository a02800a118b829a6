//! Stale-set protection on one node (the design is in `cache::guard`): a read lease's script, and the guarded write
//! path — the optimistic WATCH/MULTI path for big batches on connections of their own, else the script that checks
//! the lease's evidence.

use std::sync::Arc;
use std::time::Duration;

use super::Node;
use crate::exec::cache::guard::{LEASE_MARGIN, ReadLease, read_lease_keys};
use crate::exec::cache::policy::WritePolicy;
use crate::exec::cache::scripts::FENCED;
use crate::exec::cache::{
    CacheError, LEASE_PREFIX, READERS_KEY, SCRIPT_BATCH, VERSION_KEY, command_failed, ttl_millis,
};
use crate::pure::model::{KeyOp, ReadStamp};

/// Guarded batches at least this big try the optimistic path first (see [`Node::set_if_unmoved`]).
const OPTIMISTIC_MIN_KEYS: usize = 64;

/// Idle connections kept for the optimistic path.
const DEDICATED_IDLE: usize = 8;

/// Connections of their own for the optimistic path, which WATCHes a key (connection state the shared connection
/// cannot hold), opened on demand and kept when idle.
pub(in crate::exec::cache) struct Dedicated {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    idle: std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>,
}

impl Dedicated {
    pub(in crate::exec::cache) fn new(
        client: redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
        auth: Option<&crate::exec::cache::auth::RedisAuth>,
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

impl Node {
    /// [`Cache::begin_read`](crate::exec::cache::Cache::begin_read) under protection: registers the lease and takes the current version in one script.
    pub(super) async fn open_lease(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        let id: Arc<str> = format!("{}-{:016x}", std::process::id(), fastrand::u64(..)).into();
        let read_at = self
            .run(
                self.scripts
                    .begin_read
                    .key(&read_lease_keys(&id)[..])
                    .arg(&*id)
                    .arg((timeout + LEASE_MARGIN).as_millis() as u64)
                    .arg(counter_seed())
                    .arg(LEASE_PREFIX),
            )
            .await?;
        Ok(ReadLease::new(id, read_at))
    }

    /// [`Cache::end_read`](crate::exec::cache::Cache::end_read): drops the lease and its evidence.
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
            crate::telemetry::metrics::redis_error();
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
        // Scripted values (hashes, documents, sets) go through the guard script, many per call, in any case.
        if ops.len() >= OPTIMISTIC_MIN_KEYS && !ops.iter().any(crate::exec::cache::is_scripted) {
            match self.set_if_unmoved(read, ops, policy).await {
                Ok(true) => {
                    crate::telemetry::metrics::record_guarded_batch("optimistic");
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
            for key in crate::exec::cache::script_head(&fence) {
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
            match self.write(&invocation).await? {
                FENCED => return Err(CacheError::Fenced),
                refused if refused < 0 => {
                    crate::telemetry::metrics::record_guarded_batch("refused");
                    return Err(CacheError::LeaseEnded);
                }
                _ => {}
            }
            crate::telemetry::metrics::record_guarded_batch("script");
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
                    pipe.add_command(crate::exec::cache::set_command(key, value, *ttl))
                        .ignore();
                }
            }
            // `None`: EXEC was discarded because the counter moved after WATCH.
            let written = pipe.query_async::<Option<()>>(&mut conn).await?.is_some();
            if !written {
                crate::telemetry::metrics::record_guarded_batch("discarded");
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
