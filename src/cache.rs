//! Redis: the one place cachewarden writes to the cache.
//!
//! Every write (warm jobs today; invalidations, refreshes and versioned stale-set protection as they arrive) goes
//! through [`Cache::apply`] as a batch of [`KeyOp`]s sent in one pipeline. Owns the connection (a redis-rs
//! `ConnectionManager`, which reconnects by itself); knows nothing of jobs or SQL.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;
use crate::model::KeyOp;

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
}

impl CacheError {
    /// Whether trying again later may succeed (a dropped connection rather than, say, a refused password).
    pub fn is_transient(&self) -> bool {
        let (CacheError::Connect(error) | CacheError::Command(error)) = self;
        !matches!(
            error.kind(),
            redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig
        )
    }
}

/// The cache. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
}

impl Cache {
    /// Connects, failing if Redis cannot be reached now; later outages are reconnected transparently.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, CacheError> {
        let client = redis::Client::open(settings.url.expose()).map_err(CacheError::Connect)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(CacheError::Connect)?;
        Ok(Self { conn })
    }

    /// Applies `ops` in one pipeline, in order. Either every reply arrives or the whole batch is reported failed
    /// (some ops may have been applied; every op is idempotent, so the caller simply retries the batch).
    pub async fn apply(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for op in ops {
            match op {
                KeyOp::Set { key, value, ttl } => {
                    let cmd = pipe.cmd("SET").arg(key).arg(value);
                    if let Some(ttl) = ttl {
                        cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
                    }
                    cmd.ignore();
                }
                KeyOp::Delete { key } => {
                    pipe.cmd("UNLINK").arg(key).ignore();
                }
            }
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(CacheError::Command)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(CacheError::Command)
    }
}
