//! Redis: the one place cachewarden writes to the cache.
//!
//! Every write — warm jobs, invalidations, refreshes, binlog projections — goes through [`Cache::apply`] (batches of
//! [`KeyOp`]s) or [`Cache::invalidate`]. Owns the connection (a redis-rs `ConnectionManager`, which reconnects by
//! itself); knows nothing of jobs or SQL.
//!
//! # Stale-set protection
//! The race it closes: a warm job reads row v1; the application commits v2; the binlog (or a message) invalidates or
//! refreshes the key; then the warm job's SET of v1 lands, stale until its TTL. With `[redis] stale_set_protection`
//! (on by default):
//!
//! - a global counter, `cachewarden:version`, orders events;
//! - [`Cache::invalidate`] increments it and, in the same Lua script, leaves a short-lived marker
//!   `cachewarden:marker:<key>` holding that version before it unlinks the key;
//! - every write says which version was current when its data was read (`read_at`, from [`Cache::version`] taken
//!   before the query), and goes through a Lua script (EVALSHA) that skips the SET when the key's marker is newer.
//!
//! So a value read before an invalidation can never land after it. Refreshes invalidate first and read after, so
//! two refreshes that finish out of order keep the newer one. A refused write leaves the key absent (a miss), never
//! stale. Markers live `marker_ttl` (the longest job timeout plus a minute), longer than any read-to-write gap.
//! Limits: writes made by the application itself are not versioned; a pattern delete marks the keys it finds, not
//! keys a concurrent warm run has not written yet; cluster mode needs the markers hash-tagged with their keys and a
//! per-slot counter (not done). Cost: one marker per invalidated key for `marker_ttl`, and a Lua call per batch.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;
use crate::model::KeyOp;

/// Keys SCAN looks at per call during a pattern delete: big enough to be quick, small enough not to stall Redis.
const SCAN_COUNT: usize = 1000;
/// The counter that orders invalidations and reads (stale-set protection).
pub const VERSION_KEY: &str = "cachewarden:version";
/// Prefix of the per-key invalidation markers.
pub const MARKER_PREFIX: &str = "cachewarden:marker:";
/// Keys per Lua call: one script run blocks Redis, so keep each short.
const SCRIPT_BATCH: usize = 500;

/// SET each key unless its invalidation marker is newer than the version its value was read at.
/// KEYS: the data keys. ARGV[1]: the marker prefix; then per key: value, ttl in ms (0 = none), read_at.
const GUARDED_SET: &str = r"
local prefix = ARGV[1]
local written = 0
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  local marker = redis.call('GET', prefix .. key)
  if (not marker) or tonumber(marker) <= tonumber(ARGV[base + 2]) then
    local ttl = tonumber(ARGV[base + 1])
    if ttl > 0 then
      redis.call('SET', key, ARGV[base], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[base])
    end
    written = written + 1
  end
end
return written
";

/// Take a new version, mark every key with it, unlink them. KEYS[1]: the version counter; KEYS[2..]: data keys.
/// ARGV[1]: the marker prefix; ARGV[2]: marker ttl in ms. Returns the version.
const MARKED_DELETE: &str = r"
local version = redis.call('INCR', KEYS[1])
for i = 2, #KEYS do
  redis.call('SET', ARGV[1] .. KEYS[i], version, 'PX', ARGV[2])
  redis.call('UNLINK', KEYS[i])
end
return version
";

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
    /// Stale-set protection: how long invalidation markers live, or `None` when it is off.
    marker_ttl: Option<Duration>,
    scripts: std::sync::Arc<(redis::Script, redis::Script)>,
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
        Ok(Self {
            conn,
            marker_ttl: settings.stale_set_protection.then_some(settings.marker_ttl),
            scripts: std::sync::Arc::new((redis::Script::new(GUARDED_SET), redis::Script::new(MARKED_DELETE))),
        })
    }

    /// The current version, to take before reading data that will be written (0 without protection).
    pub async fn version(&self) -> Result<u64, CacheError> {
        if self.marker_ttl.is_none() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let version: Option<u64> = redis::cmd("GET")
            .arg(VERSION_KEY)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(version.unwrap_or(0))
    }

    /// Deletes `keys` as invalidated: with protection, marks them with a new version (returned) so that values read
    /// before now can no longer be written; without, a plain UNLINK (returns 0).
    pub async fn invalidate<K: redis::ToRedisArgs + Sync>(&self, keys: &[K]) -> Result<u64, CacheError> {
        if keys.is_empty() {
            return self.version().await;
        }
        let Some(marker_ttl) = self.marker_ttl else {
            let mut conn = self.conn.clone();
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<u64>(&mut conn)
                .await
                .map_err(command_failed)?;
            return Ok(0);
        };
        let mut conn = self.conn.clone();
        let mut version = 0;
        for chunk in keys.chunks(SCRIPT_BATCH) {
            let mut invocation = self.scripts.1.key(VERSION_KEY);
            for key in chunk {
                invocation.key(key);
            }
            invocation.arg(MARKER_PREFIX).arg(marker_ttl.as_millis() as u64);
            version = invocation.invoke_async(&mut conn).await.map_err(command_failed)?;
        }
        Ok(version)
    }

    /// Applies `ops` in one pipeline, in order. Either every reply arrives or the whole batch is reported failed
    /// (some ops may have been applied; every op is idempotent, so the caller simply retries the batch).
    pub async fn apply(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.marker_ttl.is_some() && ops.iter().any(|op| matches!(op, KeyOp::Set { read_at: Some(_), .. })) {
            return self.apply_guarded(ops).await;
        }
        let mut pipe = redis::pipe();
        for op in ops {
            match op {
                KeyOp::Set { key, value, ttl, .. } => {
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

    /// `apply` with stale-set protection: versioned sets through the guard script (in order, batch by batch), the
    /// rest as usual.
    async fn apply_guarded(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let mut start = 0;
        while start < ops.len() {
            let guarded = matches!(ops[start], KeyOp::Set { read_at: Some(_), .. });
            let end = ops[start..]
                .iter()
                .position(|op| matches!(op, KeyOp::Set { read_at: Some(_), .. }) != guarded)
                .map_or(ops.len(), |n| start + n)
                .min(start + SCRIPT_BATCH);
            if guarded {
                let mut invocation = self.scripts.0.prepare_invoke();
                invocation.arg(MARKER_PREFIX);
                for op in &ops[start..end] {
                    if let KeyOp::Set {
                        key,
                        value,
                        ttl,
                        read_at: Some(read_at),
                    } = op
                    {
                        invocation.key(key);
                        invocation
                            .arg(value.as_slice())
                            .arg(ttl.map_or(0, |t| t.as_millis().max(1) as u64))
                            .arg(*read_at);
                    }
                }
                invocation
                    .invoke_async::<u64>(&mut conn)
                    .await
                    .map_err(command_failed)?;
            } else {
                let mut unguarded = self.clone();
                unguarded.marker_ttl = None;
                Box::pin(unguarded.apply(&ops[start..end])).await?;
            }
            start = end;
        }
        Ok(())
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
        let mut sample = Vec::with_capacity(count);
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
