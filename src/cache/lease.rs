//! The HA lease's Redis side: take it if free, renew it and release it only while it holds our token (see `ha`;
//! the two scripts are `scripts::RENEW_LEASE` and `RELEASE_LEASE`).

use std::time::Duration;

use super::{Cache, CacheError, command_failed};

impl Cache {
    /// `SET key token NX PX ttl`: `Ok(None)` when taken, else the token of whoever holds it (empty if it vanished
    /// between the two commands).
    pub async fn take_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Option<String>, CacheError> {
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
            return Ok(None);
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(Some(holder.unwrap_or_default()))
    }

    /// Extends the lease by `ttl` if it still holds `token`; whether it did.
    pub async fn renew_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
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
    pub async fn release_lease(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        self.scripts
            .release_lease
            .key(key)
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(command_failed)
    }
}
