//! The versions sharing this Redis, as each instance registers itself (see `ops::versions`): one hash, a field per
//! instance, read with Redis' clock so that every instance judges expiry alike.

use std::collections::HashMap;

use super::{Cache, CacheError, command_failed};

impl Cache {
    /// Sets `instance`'s entry in the hash `key`.
    pub(crate) async fn register_version(&self, key: &str, instance: &str, entry: &str) -> Result<(), CacheError> {
        redis::cmd("HSET")
            .arg(key)
            .arg(instance)
            .arg(entry)
            .query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(command_failed)
    }

    /// Removes `instance`'s entry (a stop).
    pub(crate) async fn unregister_version(&self, key: &str, instance: &str) -> Result<(), CacheError> {
        redis::cmd("HDEL")
            .arg(key)
            .arg(instance)
            .query_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(command_failed)
    }

    /// Every entry of the hash `key`, and Redis' clock in milliseconds.
    pub(crate) async fn versions(&self, key: &str) -> Result<(HashMap<String, String>, u64), CacheError> {
        let mut conn = self.conn();
        let entries: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok((entries, seconds * 1000 + micros / 1000))
    }
}
