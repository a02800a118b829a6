//! Key misses Redis reports (`[misses]`): keyspace notifications of class `m` (`__keyevent@<db>__:keymiss`, on every
//! master of a cluster), counted per job whose key template the key fits, and for jobs with `fill_on_miss` loaded
//! through the job's refresh path — lazy loading done by the daemon instead of by each application.
//!
//! A producer: reading never waits for filling. Each miss is matched and counted as it arrives; a key to fill joins a
//! queue of at most [`MAX_QUEUED`] distinct keys (past that it is dropped and counted: the next miss asks again).
//! One filler takes keys in batches, as fast as `max_fills_per_second` allows, and loads them through
//! `Invalidator::fill` (the same rendering, stale-set protection, fence and allow-list as a channel refresh). A key
//! filled is not filled again for [`REFILL_AFTER`], and a key whose row does not exist not for `negative_ttl`, so a
//! scan of absent ids costs the database at most one read per id per `negative_ttl`, within the rate.
//!
//! Redis only reports misses when `notify-keyspace-events` holds `E` and `m`. At each subscription the listener
//! reads it and adds what is missing; where it may not (ElastiCache refuses `CONFIG`), it says what to set in the
//! parameter group, and `cachewarden_cache_misses_reported` reads 0.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{MissesSettings, RedisSettings};
use crate::exec::cache::{self, CacheError};
use crate::exec::database::Database;
use crate::exec::invalidate::Invalidator;
use crate::pure::backoff::Backoff;
use crate::pure::glob::glob_match;
use crate::pure::plan::Policy;
use crate::telemetry::metrics;

/// Distinct keys waiting to be filled at most (a burst of 100,000 distinct misses fits; about 15 MB at worst); a miss
/// beyond it is dropped (counted as `queue_full`).
pub(crate) const MAX_QUEUED: usize = 100_000;
/// Keys remembered as recently filled or absent at most (expired ones are dropped first; about 25 MB at worst).
const MAX_REMEMBERED: usize = 200_000;
/// A key filled is not filled again for this long: a miss right after a fill (the daemon's own invalidation of it, a
/// read racing the write) must not start a loop.
pub(crate) const REFILL_AFTER: Duration = Duration::from_secs(1);
/// Keys loaded in one batch at most (each job's keys of a batch are read in one statement).
const FILL_BATCH: usize = 1024;
/// How often the listener compares the nodes it follows with the cluster's masters (a failover or a new shard closes
/// no subscription of ours).
const TOPOLOGY_CHECK: Duration = Duration::from_secs(30);
/// A subscription that ended sooner than this is followed by a pause (backoff) before subscribing again.
const SHORT_SESSION: Duration = Duration::from_secs(1);
/// The token bucket holds this much of a second's allowance: bursts are smoothed into batches every 100 ms.
const BUCKET_SECONDS: f64 = 0.1;
/// What `notify-keyspace-events` must hold for key misses to be published: keyevent channels and the miss class.
const NEEDED_FLAGS: [char; 2] = ['E', 'm'];

/// Follows key misses until shutdown.
pub(crate) struct MissListener {
    pub redis: RedisSettings,
    pub settings: MissesSettings,
    pub invalidator: Arc<Invalidator>,
    /// Where fills read instead of `[mysql]`: `[binlog] refresh_fallback` (the writer) when set, because a miss
    /// right after a change is exactly when a lagging reader still has the old row.
    pub writer: Option<Database>,
    /// The channel's allow-list: a fill writes only what a channel refresh may.
    pub policy: watch::Receiver<Arc<Policy>>,
}

/// Keys waiting to be filled, and those recently filled or found absent.
#[derive(Default)]
struct Fills {
    queue: VecDeque<(String, Instant)>,
    /// The keys in `queue` and those being filled: a miss of one of them is already answered.
    queued: HashSet<String>,
    /// Key → until when a miss of it is not filled (and why).
    remembered: HashMap<String, (Instant, &'static str)>,
    /// When expired entries were last swept out of a full `remembered` (at most once a second: a sweep is O(n)).
    swept: Option<Instant>,
}

impl Fills {
    /// Queues `key` unless it is queued, remembered or the queue is full; the reason when it is not.
    fn offer(&mut self, key: &str, now: Instant) -> Result<bool, &'static str> {
        if let Some(&(until, reason)) = self.remembered.get(key) {
            if until > now {
                return Err(reason);
            }
            self.remembered.remove(key);
        }
        if self.queued.contains(key) {
            return Ok(false);
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err("queue_full");
        }
        self.queued.insert(key.to_string());
        self.queue.push_back((key.to_string(), now));
        Ok(true)
    }

    /// Up to `count` keys, oldest first, with when each was missed (still counted as queued until [`Fills::done`]).
    fn take(&mut self, count: usize) -> Vec<(String, Instant)> {
        self.queue.drain(..count.min(self.queue.len())).collect()
    }

    /// `key`'s fill ended: not filled again until `until` (`reason`: the skip's label meanwhile).
    fn done(&mut self, key: &str, until: Instant, reason: &'static str, now: Instant) {
        self.queued.remove(key);
        self.remember(key.to_string(), until, reason, now);
    }

    fn remember(&mut self, key: String, until: Instant, reason: &'static str, now: Instant) {
        if self.remembered.len() >= MAX_REMEMBERED {
            if self
                .swept
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
            {
                self.remembered.retain(|_, (until, _)| *until > now);
                self.swept = Some(now);
            }
            if self.remembered.len() >= MAX_REMEMBERED {
                // Every entry is live: forgetting one only costs a read, within the rate limit.
                return;
            }
        }
        self.remembered.insert(key, (until, reason));
    }
}

/// The queue between the reader and the filler.
#[derive(Default)]
struct Shared {
    fills: Mutex<Fills>,
    ready: Notify,
}

impl Shared {
    fn fills(&self) -> std::sync::MutexGuard<'_, Fills> {
        self.fills.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MissListener {
    /// Subscribes on every node and fills what is missed, until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let shared = Arc::new(Shared::default());
        // A task of its own: reading misses never waits for a fill's read or its rendering.
        let filler = tokio::spawn(fill(
            self.invalidator.clone(),
            self.writer.clone(),
            self.settings.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
        self.listen(&shared, &shutdown).await;
        let _ = filler.await;
    }

    /// Subscribes and reads, resubscribing with backoff whenever a node's subscription ends.
    async fn listen(&self, shared: &Shared, shutdown: &CancellationToken) {
        let mut backoff = Backoff::redis();
        loop {
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                subscribed = self.subscribe() => subscribed,
            };
            let (streams, nodes) = match subscribed {
                Ok(subscribed) => subscribed,
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, "Cannot subscribe to key misses; will retry.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let started = Instant::now();
            // One stream for all nodes, each ending in a `None`: when any node's subscription ends (a failover, a
            // resharding), every node is subscribed again.
            let mut messages = futures_util::stream::select_all(
                streams
                    .into_iter()
                    .map(|stream| stream.map(Some).chain(futures_util::stream::iter([None])).boxed()),
            );
            let mut heard = false;
            let mut check = tokio::time::interval_at(tokio::time::Instant::now() + TOPOLOGY_CHECK, TOPOLOGY_CHECK);
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = messages.next() => message,
                    _ = check.tick() => {
                        if self.nodes_changed(&nodes).await {
                            info!("The nodes to follow changed (a failover, a resharding); subscribing again.");
                            break;
                        }
                        continue;
                    }
                };
                match message.flatten() {
                    Some(message) => {
                        if !heard {
                            // Heard from Redis: it reports misses, whatever reading its settings said (ElastiCache
                            // refuses CONFIG even once the parameter group is right).
                            heard = true;
                            metrics::record_misses_reported(true);
                        }
                        self.missed(message.get_payload_bytes(), shared);
                    }
                    None => {
                        warn!("A key-miss subscription ended; subscribing again on every node.");
                        break;
                    }
                }
            }
            let lasted = started.elapsed();
            backoff.session_ended(lasted);
            if lasted < SHORT_SESSION {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }

    /// Whether the nodes misses must be heard from are no longer `nodes` (an error reads as "no change": the next
    /// check, or a dropped subscription, will tell).
    async fn nodes_changed(&self, nodes: &[String]) -> bool {
        match self.invalidator.cache().node_clients(&self.redis).await {
            Ok(clients) => {
                let now: Vec<String> = clients
                    .iter()
                    .map(|c| c.get_connection_info().addr().to_string())
                    .collect();
                now != nodes
            }
            Err(_) => false,
        }
    }

    /// A subscription to `__keyevent@<db>__:keymiss` on each node, after making sure the node reports misses; and
    /// the nodes' addresses.
    #[allow(clippy::type_complexity)]
    async fn subscribe(
        &self,
    ) -> Result<(Vec<futures_util::stream::BoxStream<'static, redis::Msg>>, Vec<String>), CacheError> {
        let cache = self.invalidator.cache();
        let channel = format!("__keyevent@{}__:keymiss", cache::db_of(&self.redis));
        let mut streams = Vec::new();
        let mut nodes = Vec::new();
        let mut reported = true;
        for client in cache.node_clients(&self.redis).await? {
            let node = client.get_connection_info().addr().to_string();
            nodes.push(node.clone());
            let connect = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                let reports = ensure_reported(&mut conn, &node).await;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel.as_str()).await?;
                Ok::<_, redis::RedisError>((reports, pubsub))
            };
            let (node_reports, pubsub) = tokio::time::timeout(self.redis.connect_timeout, connect)
                .await
                .map_err(|_| {
                    CacheError::Connect(redis::RedisError::from((redis::ErrorKind::Io, "connection timed out")))
                })?
                .map_err(CacheError::Connect)?;
            reported &= node_reports;
            streams.push(pubsub.into_on_message().boxed());
        }
        if streams.is_empty() {
            return Err(CacheError::Connect(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the cluster's slot map names no master",
            ))));
        }
        metrics::record_misses_reported(reported);
        info!(channel, nodes = streams.len(), "Following key misses.");
        Ok((streams, nodes))
    }

    /// Counts a miss of `key` against the first job whose template fits it, and queues it when that job fills.
    fn missed(&self, key: &[u8], shared: &Shared) {
        let Ok(key) = std::str::from_utf8(key) else {
            metrics::record_miss_ignored();
            return;
        };
        let jobs = self.invalidator.jobs();
        let Some(job) = jobs.iter().find(|job| job.key.capture(key).is_some()) else {
            metrics::record_miss_ignored();
            return;
        };
        metrics::record_miss(&job.name);
        if !job.fill_on_miss {
            return;
        }
        if !self.policy.borrow().allow.iter().any(|allow| glob_match(allow, key)) {
            metrics::record_fill_skipped("not_allowed");
            return;
        }
        match shared.fills().offer(key, Instant::now()) {
            Ok(true) => shared.ready.notify_one(),
            Ok(false) => {}
            Err(reason) => metrics::record_fill_skipped(reason),
        }
    }
}

/// A node's `notify-keyspace-events`.
async fn notification_flags(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<String> {
    let (_, flags): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await?;
    Ok(flags)
}

/// `flags` with `E` and `m` added where missing.
fn with_misses(flags: &str) -> String {
    let mut wanted = flags.to_string();
    for flag in NEEDED_FLAGS {
        if !wanted.contains(flag) {
            wanted.push(flag);
        }
    }
    wanted
}

/// For `check --connect`: per node the daemon would follow, whether it reports key misses now, in words.
pub(crate) async fn describe_nodes(cache: &cache::Cache, redis: &RedisSettings) -> Vec<String> {
    let clients = match cache.node_clients(redis).await {
        Ok(clients) => clients,
        Err(error) => return vec![format!("misses: cannot list the nodes: {error}")],
    };
    let mut notes = Vec::new();
    for client in clients {
        let node = client.get_connection_info().addr().to_string();
        let read = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            notification_flags(&mut conn).await
        };
        let flags = tokio::time::timeout(redis.connect_timeout, read)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "no answer in time"))));
        notes.push(match flags {
            Ok(flags) if with_misses(&flags) == flags => format!("misses: {node} reports key misses"),
            Ok(flags) => format!(
                "misses: {node} does not report key misses yet (notify-keyspace-events is \"{flags}\"): the daemon sets it to \"{}\" at start, or set that yourself (ElastiCache: in the custom parameter group)",
                with_misses(&flags)
            ),
            Err(error) => format!(
                "misses: cannot read notify-keyspace-events on {node} ({error}); make sure it holds E and m                  (ElastiCache: notify-keyspace-events = Em in the custom parameter group)"
            ),
        });
    }
    notes
}

/// Reads `notify-keyspace-events` on a node and adds `E` and `m` when missing. Whether the node reports misses now;
/// when it does not and cannot be made to, says what to set, once per subscription.
async fn ensure_reported(conn: &mut redis::aio::MultiplexedConnection, node: &str) -> bool {
    let current = match notification_flags(conn).await {
        Ok(flags) => flags,
        Err(error) => {
            warn!(
                node,
                %error,
                "Cannot read notify-keyspace-events (CONFIG is refused: ElastiCache, or an ACL without +config|get). \
                 Key misses are counted only if it holds E and m: on ElastiCache set the parameter \
                 notify-keyspace-events to \"Em\" (plus any flags already used) in the cluster's custom parameter \
                 group."
            );
            return false;
        }
    };
    let wanted = with_misses(&current);
    if wanted == current {
        return true;
    }
    let set: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async(conn)
        .await;
    match set {
        Ok(()) => {
            info!(
                node,
                before = current,
                now = wanted,
                "Turned on key-miss notifications (notify-keyspace-events)."
            );
            true
        }
        Err(error) => {
            warn!(
                node,
                %error,
                current,
                "Redis does not report key misses and may not be told to: set notify-keyspace-events to \"{wanted}\" \
                 (CONFIG SET notify-keyspace-events {wanted}; on ElastiCache, the parameter notify-keyspace-events in \
                 the cluster's custom parameter group). Until then no miss is counted or filled."
            );
            false
        }
    }
}

/// Takes queued keys as fast as `settings` allows and loads them, until `shutdown`.
async fn fill(
    invalidator: Arc<Invalidator>,
    writer: Option<Database>,
    settings: MissesSettings,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let rate = settings.max_fills_per_second as f64;
    let capacity = (rate * BUCKET_SECONDS).max(1.0);
    let (mut tokens, mut refilled) = (capacity, Instant::now());
    let mut backoff = Backoff::redis();
    loop {
        let now = Instant::now();
        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate).min(capacity);
        refilled = now;
        if tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - tokens) / rate);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        let batch = shared.fills().take((tokens as usize).min(FILL_BATCH));
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = shared.ready.notified() => continue,
            }
        }
        tokens -= batch.len() as f64;
        let keys: Vec<&str> = batch.iter().map(|(key, _)| key.as_str()).collect();
        match invalidator.fill(&keys, writer.as_ref()).await {
            Ok(applied) => {
                backoff.reset();
                let done = Instant::now();
                let absent: HashSet<&str> = applied.absent.iter().map(String::as_str).collect();
                let mut written = Vec::with_capacity(batch.len());
                {
                    let mut fills = shared.fills();
                    for (key, missed) in &batch {
                        if absent.contains(key.as_str()) {
                            fills.done(key, done + settings.negative_ttl, "absent", done);
                        } else {
                            written.push(done.duration_since(*missed));
                            fills.done(key, done + REFILL_AFTER, "recent", done);
                        }
                    }
                }
                // A key with a row may still be left missing (a value over max_value_bytes): count what was written.
                written.truncate(applied.refreshed as usize);
                metrics::record_fills(&written, absent.len(), 0);
            }
            Err(error) => {
                {
                    let done = Instant::now();
                    let mut fills = shared.fills();
                    for (key, _) in &batch {
                        fills.done(key, done, "recent", done);
                    }
                }
                metrics::record_fills(&[], 0, batch.len());
                let delay = backoff.next_delay();
                warn!(
                    %error,
                    keys = batch.len(),
                    retry_in = ?delay,
                    "Could not fill missed keys; they stay missing (a later miss asks again)."
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_queued_once_until_its_fill_is_done_and_then_remembered() {
        let mut fills = Fills::default();
        let now = Instant::now();
        assert_eq!(fills.offer("k", now), Ok(true));
        assert_eq!(fills.offer("k", now), Ok(false));
        let taken = fills.take(10);
        assert_eq!(taken.len(), 1);
        // Being filled: a miss meanwhile is already answered.
        assert_eq!(fills.offer("k", now), Ok(false));
        fills.done("k", now + Duration::from_secs(5), "absent", now);
        assert_eq!(fills.offer("k", now + Duration::from_secs(1)), Err("absent"));
        assert_eq!(fills.offer("k", now + Duration::from_secs(6)), Ok(true));
    }

    #[test]
    fn the_queue_holds_at_most_max_queued_keys() {
        let mut fills = Fills::default();
        let now = Instant::now();
        for n in 0..MAX_QUEUED {
            assert_eq!(fills.offer(&n.to_string(), now), Ok(true));
        }
        assert_eq!(fills.offer("one more", now), Err("queue_full"));
        assert_eq!(fills.take(FILL_BATCH).len(), FILL_BATCH);
        // Taken keys leave the queue (a batch in flight at most), making room.
        assert_eq!(fills.offer("one more", now), Ok(true));
    }
}
