//! One Redis node (cluster mode disabled): every operation as one pipeline or one Lua script per batch on one
//! connection; stale-set protection's read leases and guarded writes are in `guard`.

mod guard;

use std::sync::Arc;
use std::time::Duration;

use super::operations::{Operations, ReadCommand};
use super::policy::WritePolicy;
use super::scripts::{FENCED, Scripts};
use super::{
    CacheError, Conn, LEASE_PREFIX, LeaseAttempt, ReadLease, SCRIPT_BATCH, VERSION_KEY, command_failed, op_command,
    script_head, ttl_millis,
};
use crate::pure::model::{KeyOp, ReadStamp};

pub(super) use guard::Dedicated;
use guard::counter_seed;

/// A single node: the shared connection, the connections of its own the optimistic write path needs, the scripts.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) conn: Conn,
    pub(super) dedicated: Arc<Dedicated>,
    pub(super) scripts: Arc<Scripts>,
}

impl Node {
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(command_failed)
    }

    /// Runs a script that writes values, reporting the keys it found holding another type (see `replies`).
    pub(super) async fn write(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<i64, CacheError> {
        let reply = super::replies::written(self.run(invocation).await?);
        redis::from_redis_value(reply).map_err(|error| command_failed(error.into()))
    }

    /// The invalidation script, fenced by `policy` when it will set values.
    fn invalidation(&self, fenced: bool, policy: &WritePolicy) -> Result<redis::ScriptInvocation<'_>, CacheError> {
        // Unfenced, the fence slot holds the version counter with an empty token (no check), as `policy.token` does
        // without `[ha]`: an ACL checks every declared key, and an empty key name is one no key pattern allows.
        let (fence, token) = if fenced {
            policy.token()?
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
}

/// Adds `ops` to a script call as its scripts take them: per op a key, and its value and ttl in ms (or `""` and `"-"`
/// to unlink).
fn with_ops(invocation: &mut redis::ScriptInvocation<'_>, ops: &[KeyOp]) {
    for op in ops {
        match op {
            KeyOp::Set { key, value, ttl, .. } => {
                invocation.key(key).arg(value.as_slice()).arg(ttl_millis(*ttl));
            }
            KeyOp::Delete { key } => {
                invocation.key(key).arg("").arg("-");
            }
        }
    }
}

impl Operations for Node {
    async fn apply_plain(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if ops.iter().any(crate::exec::cache::is_scripted) {
            for chunk in ops.chunks(SCRIPT_BATCH) {
                let mut invocation = self.scripts.plain_apply.prepare_invoke();
                with_ops(&mut invocation, chunk);
                self.write(&invocation).await?;
            }
            return Ok(());
        }
        let mut pipe = redis::Pipeline::with_capacity(ops.len());
        for op in ops {
            pipe.add_command(op_command(op)).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(command_failed)
    }

    async fn unlink<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<(), CacheError> {
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

    async fn invalidate_guarded<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(
        &self,
        keys: &[K],
        policy: &WritePolicy,
    ) -> Result<u64, CacheError> {
        let mut version = 0;
        for chunk in keys.chunks(SCRIPT_BATCH) {
            let mut invocation = self.invalidation(false, policy)?;
            for key in chunk {
                invocation.key(key);
            }
            version = self.run(&invocation).await?;
        }
        Ok(version)
    }

    async fn supersede_guarded(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        for run in ops.chunk_by(|a, b| matches!(a, KeyOp::Set { .. }) == matches!(b, KeyOp::Set { .. })) {
            for chunk in run.chunks(SCRIPT_BATCH) {
                let mut invocation = self.invalidation(true, policy)?;
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
                if self.write(&invocation).await? == FENCED {
                    return Err(CacheError::Fenced);
                }
            }
        }
        Ok(())
    }

    async fn set_guarded(&self, read: &ReadStamp, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        self.guarded_set(read, ops, policy).await
    }

    async fn apply_fenced(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        let (fence, token) = policy.token()?;
        for chunk in ops.chunks(SCRIPT_BATCH) {
            let mut invocation = self.scripts.fenced_apply.key(&fence);
            invocation.arg(&token);
            with_ops(&mut invocation, chunk);
            if self.write(&invocation).await? == FENCED {
                return Err(CacheError::Fenced);
            }
        }
        Ok(())
    }

    async fn begin_read(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        self.open_lease(timeout).await
    }

    async fn end_read(&self, id: &str) {
        self.close_lease(id).await
    }

    async fn take_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<LeaseAttempt, CacheError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        if taken.is_some() {
            return Ok(LeaseAttempt::Taken { epoch: 0 });
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(LeaseAttempt::HeldBy(holder.unwrap_or_default()))
    }

    async fn read(&self, keys: &[String], command: &ReadCommand) -> Result<Vec<redis::Value>, CacheError> {
        let mut pipe = redis::Pipeline::with_capacity(keys.len());
        for key in keys {
            pipe.add_command(command(key));
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(command_failed)
    }

    fn nodes(&self) -> usize {
        1
    }

    async fn scan_page<K: redis::FromRedisValue>(
        &self,
        _node: usize,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<K>), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    async fn on_node_pipeline(&self, _node: usize, pipe: redis::Pipeline) -> Result<Vec<redis::Value>, CacheError> {
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(command_failed)
    }

    async fn info(&self, section: &str) -> Result<String, CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    fn shape(&self) -> String {
        "a single node (cluster mode disabled)".into()
    }
}
