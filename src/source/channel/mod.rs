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
use std::time::Instant;

use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{OnGap, RedisSettings};
use crate::exec::cache::{self, CacheError};
use crate::exec::dead_letter::{DeadLetter, DeadLetters};
use crate::exec::invalidate::Invalidator;
use crate::pure::backoff::Backoff;
use crate::pure::plan::{self, Action, Policy};
use crate::telemetry::metrics;

mod packed;
mod stream;

use packed::Packed;
pub(crate) use stream::StreamListener;

/// Messages gathered into one batch at most.
pub(crate) const BATCH_MESSAGES: usize = 5000;
/// Bytes of accepted pub/sub messages' actions (packed: see [`Packed`]) waiting to be applied at most; beyond it the
/// subscription is dropped and resynced as after a disconnect. About 1.6 million single-key messages of 15-byte keys:
/// a burst of a million published at once (faster than any applier) is absorbed, while hostile or runaway publishers
/// cannot grow the daemon without bound. (Redis' own default limit for a subscriber it must buffer for is 32 MB of
/// output.)
pub(crate) const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of accepted messages gathered into one batch at most (a batch is charged to the queue as a whole).
const BATCH_BYTES: usize = QUEUE_BYTES / 16;
/// Refusals logged one by one; after that, every 1000th is logged with the running count.
const REFUSAL_LOG_LIMIT: u64 = 20;
/// A logged message is cut to this many bytes.
const LOG_PAYLOAD_BYTES: usize = 200;

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
        .apply_with_retry("channel", None, actions, &HashMap::new(), shutdown)
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
                resync(self.on_gap, &self.invalidator, &self.policy, &shutdown).await;
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
}

/// The `on_gap` resync after messages may have been lost, for what the allow-list covers. `false` if shutdown came
/// first.
async fn resync(
    on_gap: OnGap,
    invalidator: &Invalidator,
    policy: &watch::Receiver<Arc<Policy>>,
    shutdown: &CancellationToken,
) -> bool {
    let allow = policy.borrow().allow.clone();
    let actions = plan::gap_actions(on_gap, &invalidator.jobs(), &allow, &[]);
    invalidator.recover("channel", None, actions, shutdown).await
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

/// Batches of actions waiting to be applied (packed), with the number of messages that asked for them, each holding
/// its share of the queue's byte budget.
type Queued = (Packed, u64, OwnedSemaphorePermit);

/// Takes messages as they come, turns them into actions and queues them in packed batches, charging each batch's size
/// to `budget`. Refused messages cost nothing past their parsing.
async fn read(
    channel: &str,
    mut messages: impl futures_util::Stream<Item = redis::Msg> + Unpin,
    intake: &mut Intake,
    queue: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
) -> ReadEnd {
    while let Some(first) = messages.next().await {
        let (mut actions, mut accepted, mut bytes) = (Vec::new(), 0, 0);
        // An accepted message's payload bytes, which the batch is cut by (0 when refused).
        let mut take = |message: redis::Msg, actions: &mut Vec<Action>| {
            if intake.accept(message.get_payload_bytes(), actions) {
                accepted += 1;
                message.get_payload_bytes().len()
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
        let packed = Packed::new(actions);
        let Ok(permit) = budget
            .clone()
            .try_acquire_many_owned(packed.bytes().min(QUEUE_BYTES) as u32)
        else {
            metrics::record_channel_overflow();
            warn!(
                channel,
                queue_bytes = QUEUE_BYTES,
                "Applying fell behind the channel by more than the queue holds; unsubscribed to bound memory. \
                 Resubscribing (and resyncing the gap) once the queue is applied."
            );
            return ReadEnd::Overflow;
        };
        if queue.send((packed, accepted, permit)).is_err() {
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
    while let Some((packed, messages, _permit)) = queued.recv().await {
        if !apply_with_retry(invalidator, &packed.unpack(), messages, shutdown).await {
            return false;
        }
    }
    true
}
