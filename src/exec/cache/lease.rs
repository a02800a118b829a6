//! The leases' Redis side (`ha`'s, and each binlog source's under `share`): take one if free, renew and release it
//! only while it holds our token (`scripts::RENEW_LEASE`, `RELEASE_LEASE`), and the instances alive (`beat`, by
//! `scripts::MEMBERS`; `leave`, a plain `ZREM`).

use std::time::Duration;

use super::operations::Operations;
use super::topology::on_topology;
use super::{Cache, CacheError, LeaseAttempt, command_failed};

impl Cache {
    /// `SET key token NX PX ttl`. On a cluster it also takes a new epoch and claims every slot's copy of the fence
    /// with it before answering (see `cluster::fence`); on a single node the epoch is 0.
    pub async fn take_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<LeaseAttempt, CacheError> {
        on_topology!(&self.topology, t => t.take_lease(key, token, ttl).await)
    }

    /// Extends the lease by `ttl` if it still holds `token`; whether it did.
    pub(crate) async fn renew_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut conn = self.conn();
        let renewed: i64 = self
            .scripts
            .renew_lease
            .key(key)
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(renewed == 1)
    }

    /// Deletes the lease if it still holds `token`.
    pub(crate) async fn release_lease(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let mut conn = self.conn();
        self.scripts
            .release_lease
            .key(key)
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(command_failed)
    }

    /// This instance (`member` of the sorted set `key`) is alive for another `ttl`; how many instances are (those
    /// whose time has not run out, by Redis' clock).
    pub(crate) async fn beat(&self, key: &str, member: &str, ttl: Duration) -> Result<usize, CacheError> {
        let mut conn = self.conn();
        self.scripts
            .members
            .key(key)
            .arg(member)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// This instance leaves `key` (a graceful stop): the others share its work out at their next beat.
    pub(crate) async fn leave(&self, key: &str, member: &str) -> Result<(), CacheError> {
        let mut conn = self.conn();
        redis::cmd("ZREM")
            .arg(key)
            .arg(member)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(command_failed)
    }
}
