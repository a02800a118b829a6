//! The lossless mode of the invalidation channel: a Redis stream read with a consumer group, entries acknowledged
//! only after what they asked for was applied, pending entries re-read and claimed (see the parent module's "Gaps").

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{BATCH_MESSAGES, Intake, apply_with_retry, replication_id, resync};
use crate::config::{OnGap, RedisSettings, StreamSettings};
use crate::exec::cache::{self, CacheError};
use crate::exec::dead_letter::DeadLetters;
use crate::exec::invalidate::Invalidator;
use crate::pure::backoff::Backoff;
use crate::pure::plan::Policy;
use crate::telemetry::metrics;

/// How long a blocking stream read waits for entries before looking round (shutdown, claims).
const STREAM_BLOCK: Duration = Duration::from_millis(1000);
/// How much longer than [`STREAM_BLOCK`] a stream reply may take before the connection is deemed dead.
const STREAM_REPLY_MARGIN: Duration = Duration::from_secs(5);

/// Reads a stream with a consumer group: the lossless mode.
pub(crate) struct StreamListener {
    pub redis: RedisSettings,
    pub stream: StreamSettings,
    /// What to do when the server is not the one it was (see [`StreamListener::run`]).
    pub on_gap: OnGap,
    pub invalidator: Arc<Invalidator>,
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Where refused messages are kept.
    pub dead_letters: DeadLetters,
}

/// One stream entry: its id and its `message` field.
type Entry = (String, Option<Vec<u8>>);

impl StreamListener {
    /// Consumes the stream until `shutdown`, reconnecting with backoff.
    ///
    /// A stream loses nothing while its server lives. A reconnect that finds another server behind the endpoint —
    /// a failover to a replica that was behind, a restart without persistence: its replication id changed — may
    /// find entries missing that the old server had and never replicated. That is a gap: counted, logged and
    /// resynced per `on_gap`, as a pub/sub reconnect is.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut intake = Intake {
            policy: self.policy.clone(),
            refused: 0,
            dead_letters: self.dead_letters.clone(),
        };
        let mut backoff = Backoff::redis();
        let mut server: Option<String> = None;
        loop {
            let started = Instant::now();
            let ended = self.session(&mut intake, &mut server, &shutdown).await;
            backoff.session_ended(started.elapsed());
            match ended {
                Ok(()) => return,
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(stream = %self.stream.name, %error, retry_in = ?delay, "Stream read failed; will reconnect.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection's worth of reading; `Ok` only at shutdown. `server` is the replication id of the server the
    /// last session read from.
    async fn session(
        &self,
        intake: &mut Intake,
        server: &mut Option<String>,
        shutdown: &CancellationToken,
    ) -> Result<(), CacheError> {
        // A blocking read must not outlast the connection's response timeout (redis-rs defaults to 500 ms), or every
        // idle read fails and reconnects. On a cluster, the stream's commands go to the stream's slot.
        let mut conn = self
            .invalidator
            .cache()
            .own_connection(&self.redis, STREAM_BLOCK + STREAM_REPLY_MARGIN)
            .await?;
        if !self.resync_after_failover(&mut conn, server, shutdown).await {
            return Ok(());
        }
        self.create_group(&mut conn).await?;

        // Entries this consumer read but never acknowledged (a crash, a kill -9) come first.
        loop {
            let entries = self.read(&mut conn, "0", None).await?;
            if entries.is_empty() {
                break;
            }
            if !self.handle(&mut conn, intake, entries, shutdown).await? {
                return Ok(());
            }
        }
        let mut last_claim: Option<Instant> = None;
        loop {
            if last_claim.is_none_or(|at| at.elapsed() >= self.stream.claim_idle / 2) {
                last_claim = Some(Instant::now());
                if !self.claim_all(&mut conn, intake, shutdown).await? {
                    return Ok(());
                }
            }
            let entries = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                entries = self.read(&mut conn, ">", Some(STREAM_BLOCK)) => entries?,
            };
            if !entries.is_empty() && !self.handle(&mut conn, intake, entries, shutdown).await? {
                return Ok(());
            }
        }
    }

    /// When Redis is not the server the stream was last read from (`server`, its replication id), applies
    /// `on_gap`: entries it never replicated may be lost. `false` when shutdown interrupted the recovery.
    async fn resync_after_failover(
        &self,
        conn: &mut cache::Conn,
        server: &mut Option<String>,
        shutdown: &CancellationToken,
    ) -> bool {
        let now = replication_id(conn).await;
        if let (Some(before), Some(now)) = (server.as_ref(), now.as_ref())
            && before != now
        {
            metrics::record_gap();
            warn!(
                stream = %self.stream.name,
                on_gap = ?self.on_gap,
                "Redis is not the server the stream was read from (a failover, or a restart): entries it never \
                 replicated may be lost; resyncing."
            );
            if !resync(self.on_gap, &self.invalidator, &self.policy, shutdown).await {
                return false;
            }
        }
        if now.is_some() {
            *server = now;
        }
        true
    }

    /// Creates the consumer group (and the stream) unless it exists.
    async fn create_group(&self, conn: &mut cache::Conn) -> Result<(), CacheError> {
        let StreamSettings {
            name, group, consumer, ..
        } = &self.stream;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(name)
            .arg(group)
            // From the stream's start, not `$`: when Redis lost the group (a restart without persistence), entries
            // added since it came back would otherwise be skipped without a word.
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        if let Err(error) = created
            && error.code() != Some("BUSYGROUP")
        {
            return Err(CacheError::Command(error));
        }
        info!(stream = %name, %group, %consumer, "Reading invalidations from the stream.");
        Ok(())
    }

    /// Claims and applies every entry another consumer left pending past `claim_idle`. `false` when shutdown
    /// interrupted the apply.
    async fn claim_all(
        &self,
        conn: &mut cache::Conn,
        intake: &mut Intake,
        shutdown: &CancellationToken,
    ) -> Result<bool, CacheError> {
        let mut start = "0-0".to_string();
        loop {
            let (next, claimed) = self.claim(conn, &start).await?;
            if !claimed.is_empty() {
                info!(
                    entries = claimed.len(),
                    "Claimed stream entries left pending by another consumer."
                );
                if !self.handle(conn, intake, claimed, shutdown).await? {
                    return Ok(false);
                }
            }
            if next == "0-0" {
                return Ok(true);
            }
            start = next;
        }
    }

    /// Applies the entries' messages, then acknowledges every entry (refused ones too: they can never succeed).
    /// `false` when shutdown interrupted the apply; those entries stay pending for the next start.
    async fn handle(
        &self,
        conn: &mut cache::Conn,
        intake: &mut Intake,
        entries: Vec<Entry>,
        shutdown: &CancellationToken,
    ) -> Result<bool, CacheError> {
        let mut actions = Vec::new();
        let mut accepted = 0;
        for (_, payload) in &entries {
            accepted += u64::from(intake.accept(payload.as_deref().unwrap_or_default(), &mut actions));
        }
        if !actions.is_empty() && !apply_with_retry(&self.invalidator, &actions, accepted, shutdown).await {
            return Ok(false);
        }
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        redis::cmd("XACK")
            .arg(&self.stream.name)
            .arg(&self.stream.group)
            .arg(&ids)
            .query_async::<u64>(conn)
            .await
            .map_err(CacheError::Command)?;
        Ok(true)
    }

    async fn read(
        &self,
        conn: &mut cache::Conn,
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, CacheError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.stream.group)
            .arg(&self.stream.consumer)
            .arg("COUNT")
            .arg(BATCH_MESSAGES);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.stream.name).arg(from);
        let reply: redis::Value = cmd.query_async(conn).await.map_err(CacheError::Command)?;
        // [[stream, [[id, [field, value, ...]], ...]]], or nil when BLOCK timed out.
        let mut entries = Vec::new();
        if let redis::Value::Array(streams) = reply {
            for stream in streams {
                if let redis::Value::Array(mut parts) = stream
                    && parts.len() == 2
                {
                    entries.extend(parse_entries(parts.remove(1)));
                }
            }
        }
        Ok(entries)
    }

    async fn claim(&self, conn: &mut cache::Conn, start: &str) -> Result<(String, Vec<Entry>), CacheError> {
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream.name)
            .arg(&self.stream.group)
            .arg(&self.stream.consumer)
            .arg(self.stream.claim_idle.as_millis() as u64)
            .arg(start)
            .arg("COUNT")
            .arg(BATCH_MESSAGES)
            .query_async(conn)
            .await
            .map_err(CacheError::Command)?;
        // [next-start-id, [[id, [field, value, ...]], ...], [deleted ids]]
        let redis::Value::Array(mut parts) = reply else {
            return Ok(("0-0".into(), Vec::new()));
        };
        if parts.len() < 2 {
            return Ok(("0-0".into(), Vec::new()));
        }
        let entries = parse_entries(parts.remove(1));
        let next = value_string(&parts[0]).unwrap_or_else(|| "0-0".into());
        Ok((next, entries))
    }
}

fn parse_entries(value: redis::Value) -> Vec<Entry> {
    let redis::Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let redis::Value::Array(pair) = item else { return None };
            let id = value_string(pair.first()?)?;
            let payload = match pair.get(1) {
                Some(redis::Value::Array(fields)) => fields.chunks(2).find_map(|kv| match kv {
                    [field, redis::Value::BulkString(value)]
                        if value_string(field).as_deref() == Some(cache::STREAM_FIELD) =>
                    {
                        Some(value.clone())
                    }
                    _ => None,
                }),
                _ => None,
            };
            Some((id, payload))
        })
        .collect()
}

fn value_string(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}
