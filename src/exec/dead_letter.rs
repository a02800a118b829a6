//! Dead letters: refused channel messages and binlog rule errors kept, with their source, reason and time, in a capped
//! Redis stream (`[daemon] dead_letter`, `cachewarden:dead` by default, `dead_letter_length` entries at most), so an
//! operator can see them after the log has rolled and send channel messages again (`cachewarden dead-letters`).
//!
//! Keeping one never waits: producers hand it to a bounded queue ([`DeadLetters::keep`]) that one writer task empties
//! into the stream; a full queue or a failing Redis drops it, counted, and logged at most every ten seconds.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;

use crate::exec::cache::{Cache, CacheError};
use crate::telemetry::metrics;

/// Dead letters waiting for the writer at most; more are dropped (counted).
const QUEUE: usize = 256;
/// A message is kept up to this many bytes (with its whole size): a flood of huge refused messages costs neither
/// the daemon's memory nor Redis's more than this per entry. A cut message cannot be sent again.
pub(crate) const KEPT_BYTES: usize = 8 * 1024;
/// A stream entry's fields.
pub(crate) const FIELDS: [&str; 5] = ["source", "reason", "detail", "payload", "size"];
/// Write failures and drops are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Something refused or failed, to keep.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    /// `channel` or `binlog`.
    pub source: &'static str,
    /// A short machine word: the refusal's reason, `missing_column`.
    pub reason: String,
    /// For people: what was wrong.
    pub detail: String,
    /// The message as it came, up to [`KEPT_BYTES`] (empty for a binlog rule error).
    pub payload: Vec<u8>,
    /// The message's whole size in bytes.
    pub size: usize,
}

impl DeadLetter {
    /// A refused channel message: its first [`KEPT_BYTES`] kept, with its size.
    pub(crate) fn message(reason: &str, detail: String, message: &[u8]) -> Self {
        Self {
            source: "channel",
            reason: reason.to_string(),
            detail,
            payload: message[..message.len().min(KEPT_BYTES)].to_vec(),
            size: message.len(),
        }
    }
}

/// Where producers hand dead letters; cheap to clone. Off: they are only counted.
#[derive(Clone, Default)]
pub(crate) struct DeadLetters {
    sender: Option<mpsc::Sender<DeadLetter>>,
}

impl DeadLetters {
    /// Keeps `letter` if there is room (never waits); counted either way.
    pub(crate) fn keep(&self, letter: DeadLetter) {
        metrics::record_dead_letter(letter.source, &letter.reason);
        if let Some(sender) = &self.sender
            && sender.try_send(letter).is_err()
        {
            metrics::record_dead_letter_dropped();
        }
    }
}

/// Dead letters kept in `stream` (at most about `length` entries) by the returned writer, which runs until every
/// [`DeadLetters`] handle is dropped.
pub(crate) fn writer(cache: Cache, stream: String, length: usize) -> (DeadLetters, impl Future<Output = ()>) {
    let (sender, mut receiver) = mpsc::channel::<DeadLetter>(QUEUE);
    let task = async move {
        let mut warned: Option<Instant> = None;
        while let Some(letter) = receiver.recv().await {
            let mut letters = vec![letter];
            while letters.len() < 100
                && let Ok(more) = receiver.try_recv()
            {
                letters.push(more);
            }
            if let Err(error) = write(&cache, &stream, length, &letters).await {
                for _ in &letters {
                    metrics::record_dead_letter_dropped();
                }
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    warn!(%error, stream, lost = letters.len(), "Could not keep dead letters in Redis.");
                }
            }
        }
    };
    (DeadLetters { sender: Some(sender) }, task)
}

async fn write(cache: &Cache, stream: &str, length: usize, letters: &[DeadLetter]) -> Result<(), CacheError> {
    let sizes: Vec<String> = letters.iter().map(|letter| letter.size.to_string()).collect();
    let entries: Vec<[&[u8]; 5]> = letters
        .iter()
        .zip(&sizes)
        .map(|(letter, size)| {
            [
                letter.source.as_bytes(),
                letter.reason.as_bytes(),
                letter.detail.as_bytes(),
                letter.payload.as_slice(),
                size.as_bytes(),
            ]
        })
        .collect();
    cache.stream_add_capped(stream, length, &FIELDS, &entries).await
}

/// One kept dead letter, as read back.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    /// The stream entry id: milliseconds since the epoch, then a sequence.
    pub id: String,
    pub source: String,
    pub reason: String,
    pub detail: String,
    pub payload: Vec<u8>,
    /// The message's whole size: more than the payload when it was cut.
    pub size: usize,
}

impl Kept {
    /// Whether the whole message was kept (so it can be sent again).
    pub(crate) fn whole(&self) -> bool {
        self.size <= self.payload.len()
    }

    /// When it was kept, from its entry id.
    pub(crate) fn at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let millis: i64 = self.id.split('-').next()?.parse().ok()?;
        chrono::DateTime::from_timestamp_millis(millis)
    }
}

/// The dead letters in `stream` kept at or after `since`, oldest first, at most `count`.
pub(crate) async fn read(
    cache: &Cache,
    stream: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
    count: usize,
) -> Result<Vec<Kept>, CacheError> {
    let start = since.map_or("-".to_string(), |since| since.timestamp_millis().max(0).to_string());
    let entries = cache.stream_range(stream, &start, count).await?;
    Ok(entries
        .into_iter()
        .map(|(id, fields)| {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(field, _)| field == name)
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default()
            };
            let text = |name: &str| String::from_utf8_lossy(&field(name)).into_owned();
            Kept {
                id,
                source: text("source"),
                reason: text("reason"),
                detail: text("detail"),
                size: text("size").parse().unwrap_or_else(|_| field("payload").len()),
                payload: field("payload"),
            }
        })
        .collect())
}
