//! Redis: the one place cachewarden writes to the cache.
//!
//! Every write (warm jobs today; invalidations, refreshes and versioned stale-set protection as they arrive) goes
//! through [`Cache::apply`] as a batch of [`KeyOp`]s sent in one pipeline. Owns the connection (a redis-rs
//! `ConnectionManager`, which reconnects by itself); knows nothing of jobs or SQL.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;
use crate::model::KeyOp;

/// Keys SCAN looks at per call during a pattern delete: big enough to be quick, small enough not to stall Redis.
const SCAN_COUNT: usize = 1000;
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
        let (CacheError::Connect(error) | CacheError::Command(error)) = self else {
            return false;
        };
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
        let client = client(settings)?;
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
        pipe.query_async::<()>(&mut conn).await.map_err(command_failed)
    }

    /// Deletes the keys matching a Redis glob `pattern` with SCAN MATCH + UNLINK in batches (never KEYS, which
    /// blocks Redis), stopping after `limit` keys. Returns how many were deleted and whether the limit cut it short.
    pub async fn delete_matching(&self, pattern: &str, limit: u64) -> Result<(u64, bool), CacheError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(command_failed)?;
            let room = usize::try_from(limit - deleted).unwrap_or(usize::MAX);
            let batch = &keys[..keys.len().min(room)];
            if !batch.is_empty() {
                redis::cmd("UNLINK")
                    .arg(batch)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(command_failed)?;
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

fn command_failed(error: redis::RedisError) -> CacheError {
    crate::metrics::redis_error();
    CacheError::Command(error)
}
