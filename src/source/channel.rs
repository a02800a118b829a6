//! The invalidation channel: Redis pub/sub (the seed's `cache_invalidation`) and, for a lossless mode, a Redis
//! stream read with a consumer group.
//!
//! Both read fast and apply in batches: after one message arrives, whatever else is already buffered (up to
//! [`BATCH_MESSAGES`]) joins the same batch, so a burst becomes a few large pipelines and Redis never has to buffer
//! output for us (its pub/sub output-buffer limit would disconnect a slow subscriber). Pub/sub is read by its own
//! loop that never waits for applying: refused messages are dropped as they are parsed, accepted ones are queued up
//! to [`QUEUE_BYTES`]; past that the subscription is dropped and resynced (a gap), so memory stays bounded whatever
//! is published. A stream is read only when the previous read was applied. Parsing and checking is `plan`'s;
//! applying is `invalidate`'s.
//!
//! # Gaps
//! Pub/sub drops whatever is published while the subscriber is away. After every reconnect the listener logs a WARN,
//! counts a gap and runs the `on_gap` resync. Streams lose nothing: entries are acknowledged only after the Redis
//! operations they asked for succeeded; a restart first re-reads this consumer's pending entries, and entries left
//! pending by a dead consumer are claimed after `claim_idle`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{OnGap, RedisSettings, StreamSettings};
use crate::exec::cache::{self, CacheError};
use crate::exec::dead_letter::{DeadLetter, DeadLetters};
use crate::exec::invalidate::Invalidator;
use crate::pure::backoff::Backoff;
use crate::pure::plan::{self, Action, Policy};
use crate::telemetry::metrics;

/// Messages gathered into one batch at most.
pub(crate) const BATCH_MESSAGES: usize = 5000;
/// Bytes of accepted pub/sub messages (with their actions) waiting to be applied at most; beyond it the subscription
/// is dropped and resynced as after a disconnect. About 1.2 million single-key messages: a burst of a million
/// published at once (faster than any applier) is absorbed, while hostile or runaway publishers cannot grow the
/// daemon without bound. (Redis' own default limit for a subscriber it must buffer for is 32 MB of output.)
pub(crate) const QUEUE_BYTES: usize = 128 * 1024 * 1024;
/// Bytes of accepted messages gathered into one batch at most (a batch is charged to the queue as a whole).
const BATCH_BYTES: usize = QUEUE_BYTES / 16;
/// What each queued action costs beyond the payload that named it (the action and its key's allocation), in bytes.
const ACTION_OVERHEAD: usize = 96;
/// Refusals logged one by one; after that, every 1000th is logged with the running count.
const REFUSAL_LOG_LIMIT: u64 = 20;
/// A logged message is cut to this many bytes.
const LOG_PAYLOAD_BYTES: usize = 200;
/// How long a blocking stream read waits for entries before looking round (shutdown, claims).
const STREAM_BLOCK: Duration = Duration::from_millis(1000);
/// How much longer than [`STREAM_BLOCK`] a stream reply may take before the connection is deemed dead.
const STREAM_REPLY_MARGIN: Duration = Duration::from_secs(5);

/// Turns payloads into actions, counting and logging refusals.
struct Intake {
    policy: watch::Receiver<Arc<Policy>>,
    refused: u64,
    dead_letters: DeadLetters,
}

impl Intake {
    /// Adds what `payload` asks for to `actions`; `false` (counted and logged) when it is refused.
    fn accept(&mut self, payload: &[u8], actions: &mut Vec<Action>) -> bool {
        let policy = self.policy.borrow().clone();
        match plan::parse_message(payload, &policy) {
            Ok(parsed) => {
                actions.extend(parsed);
                true
            }
            Err(refusal) => {
                metrics::record_message_refused(refusal.reason());
                self.dead_letters
                    .keep(DeadLetter::message(refusal.reason(), refusal.to_string(), payload));
                self.refused += 1;
                if self.refused <= REFUSAL_LOG_LIMIT || self.refused.is_multiple_of(1000) {
                    let shown = String::from_utf8_lossy(&payload[..payload.len().min(LOG_PAYLOAD_BYTES)]);
                    warn!(
                        reason = refusal.reason(),
                        refused_so_far = self.refused,
                        payload = %shown,
                        truncated = payload.len() > LOG_PAYLOAD_BYTES,
                        "Refused an invalidation message: {refusal}"
                    );
                }
                false
            }
        }
    }
}

/// Applies `actions`, asked for by `messages` messages, through the shared retry loop (see
/// [`Invalidator::apply_with_retry`]), and counts the messages applied. `false` if shutdown came first.
async fn apply_with_retry(
    invalidator: &Invalidator,
    actions: &[Action],
    messages: u64,
    shutdown: &CancellationToken,
) -> bool {
    let applied = invalidator
        .apply_with_retry("channel", actions, &HashMap::new(), shutdown)
        .await
        .is_some();
    if applied {
        metrics::record_messages_applied(messages);
    }
    applied
}

/// Listens on a pub/sub channel.
pub(crate) struct ChannelListener {
    pub redis: RedisSettings,
    pub channel: String,
    pub on_gap: OnGap,
    pub invalidator: Arc<Invalidator>,
    pub policy: watch::Receiver<Arc<Policy>>,
    /// An HA takeover: messages published while no instance listened are lost, so the first subscription resyncs.
    pub took_over: bool,
    /// Where refused messages are kept.
    pub dead_letters: DeadLetters,
}

impl ChannelListener {
    /// Subscribes, applies messages, and resubscribes (then resyncs) after any disconnect, until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut intake = Intake {
            policy: self.policy.clone(),
            refused: 0,
            dead_letters: self.dead_letters.clone(),
        };
        let mut backoff = Backoff::redis();
        let mut subscribed_before = self.took_over;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                connected = self.subscribe() => connected,
            };
            let pubsub = match connected {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(channel = %self.channel, %error, retry_in = ?delay, "Cannot subscribe; will retry.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let subscribed_at = Instant::now();
            if subscribed_before {
                metrics::record_gap();
                warn!(
                    channel = %self.channel,
                    on_gap = ?self.on_gap,
                    "Resubscribed: messages published while disconnected were lost; resyncing."
                );
                self.resync(&shutdown).await;
            } else {
                info!(channel = %self.channel, "Listening for invalidations.");
            }
            subscribed_before = true;

            // Reading never waits for applying: the client library buffers without bound whatever it has read and
            // we have not taken, so we take every message at once and queue what it asks for, up to QUEUE_BYTES.
            let (queue, queued) = mpsc::unbounded_channel();
            let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
            let reading = read(&self.channel, pubsub.into_on_message(), &mut intake, queue, budget);
            let applying = apply_queued(queued, &self.invalidator, &shutdown);
            let (ended, applied) = tokio::select! {
                _ = shutdown.cancelled() => return,
                both = async { tokio::join!(reading, applying) } => both,
            };
            if !applied {
                return;
            }
            // A subscription that keeps dropping at once backs off; one that held for a while starts again quickly.
            backoff.session_ended(subscribed_at.elapsed());
            match ended {
                ReadEnd::Lost => warn!(channel = %self.channel, "Pub/sub connection lost; resubscribing."),
                ReadEnd::Overflow => info!(channel = %self.channel, "The queue was applied; resubscribing."),
            }
        }
    }

    /// Subscribes on the first node that answers: `url`, then a cluster's other seeds (`urls`); on a cluster a
    /// message published on any node reaches every node's subscribers.
    async fn subscribe(&self) -> Result<redis::aio::PubSub, CacheError> {
        let mut failed = None;
        for client in self.invalidator.cache().clients(&self.redis)? {
            let subscribed = async {
                let mut pubsub = tokio::time::timeout(self.redis.connect_timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| timeout_error())?
                    .map_err(CacheError::Connect)?;
                pubsub.subscribe(&self.channel).await.map_err(CacheError::Connect)?;
                Ok(pubsub)
            };
            match subscribed.await {
                Ok(pubsub) => return Ok(pubsub),
                Err(error) => failed = Some(error),
            }
        }
        Err(failed.expect("there is always a url"))
    }

    /// The `on_gap` resync, for what the allow-list covers.
    async fn resync(&self, shutdown: &CancellationToken) {
        let allow = self.policy.borrow().allow.clone();
        let actions = plan::gap_actions(self.on_gap, &self.invalidator.jobs(), &allow, &[]);
        self.invalidator.recover("channel", actions, shutdown).await;
    }
}

/// The server's replication id (`INFO replication` `master_replid`): it changes when another server takes over the
/// endpoint or the server restarts. `None` on a cluster (one id per shard) or when it cannot be read.
async fn replication_id(conn: &mut cache::Conn) -> Option<String> {
    if matches!(conn, cache::Conn::Cluster(_)) {
        return None;
    }
    let info: String = redis::cmd("INFO").arg("replication").query_async(conn).await.ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("master_replid:"))
        .map(|id| id.trim().to_string())
}

fn timeout_error() -> CacheError {
    CacheError::Connect(redis::RedisError::from((redis::ErrorKind::Io, "connection timed out")))
}

/// Why reading a subscription ended.
enum ReadEnd {
    /// The connection dropped.
    Lost,
    /// More than [`QUEUE_BYTES`] of messages waited to be applied; reading stopped (messages published until the
    /// resubscription are lost: a gap, as after a disconnect).
    Overflow,
}

/// Batches of actions waiting to be applied, with the number of messages that asked for them, each holding its
/// share of the queue's byte budget.
type Queued = (Vec<Action>, u64, OwnedSemaphorePermit);

/// Takes messages as they come, turns them into actions and queues them in batches, charging each accepted
/// message's size to `budget`. Refused messages cost nothing past their parsing.
async fn read(
    channel: &str,
    mut messages: impl futures_util::Stream<Item = redis::Msg> + Unpin,
    intake: &mut Intake,
    queue: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
) -> ReadEnd {
    while let Some(first) = messages.next().await {
        let (mut actions, mut accepted, mut bytes) = (Vec::new(), 0, 0);
        // What an accepted message costs the queue (0 when refused).
        let mut take = |message: redis::Msg, actions: &mut Vec<Action>| {
            let before = actions.len();
            if intake.accept(message.get_payload_bytes(), actions) {
                accepted += 1;
                message.get_payload_bytes().len() + ACTION_OVERHEAD * (actions.len() - before)
            } else {
                0
            }
        };
        bytes += take(first, &mut actions);
        for _ in 1..BATCH_MESSAGES {
            if bytes >= BATCH_BYTES {
                break;
            }
            match messages.next().now_or_never() {
                Some(Some(message)) => bytes += take(message, &mut actions),
                _ => break,
            }
        }
        if actions.is_empty() {
            continue;
        }
        let Ok(permit) = budget.clone().try_acquire_many_owned(bytes.min(QUEUE_BYTES) as u32) else {
            metrics::record_channel_overflow();
            warn!(
                channel,
                queue_bytes = QUEUE_BYTES,
                "Applying fell behind the channel by more than the queue holds; unsubscribed to bound memory. \
                 Resubscribing (and resyncing the gap) once the queue is applied."
            );
            return ReadEnd::Overflow;
        };
        if queue.send((actions, accepted, permit)).is_err() {
            break;
        }
    }
    ReadEnd::Lost
}

/// Applies queued batches until the reading side is done and the queue is empty; `false` at shutdown.
async fn apply_queued(
    mut queued: mpsc::UnboundedReceiver<Queued>,
    invalidator: &Invalidator,
    shutdown: &CancellationToken,
) -> bool {
    while let Some((actions, messages, _permit)) = queued.recv().await {
        if !apply_with_retry(invalidator, &actions, messages, shutdown).await {
            return false;
        }
    }
    true
}

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
            let allow = self.policy.borrow().allow.clone();
            let actions = plan::gap_actions(self.on_gap, &self.invalidator.jobs(), &allow, &[]);
            if !self.invalidator.recover("channel", actions, shutdown).await {
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
