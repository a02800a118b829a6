//! A warm run's writing side: rendered values gathered into pipelined batches (bounded in keys and bytes, a few in
//! flight while the next is read), whole-result keys built in bounded memory, skips counted and logged, and the
//! dry run's listing.

use super::*;

/// Keys per pipeline: large enough to amortise round trips, small enough to keep Redis responsive to others.
pub(super) const BATCH_KEYS: usize = 1000;
/// Pipelines in flight at once on the (multiplexed) connection: enough to keep Redis busy while the next batch is
/// rendered, few enough that memory stays a handful of batches.
pub(super) const MAX_IN_FLIGHT: usize = 4;
/// Bytes per pipeline, for jobs with large values.
pub(super) const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Per run, at most this many skipped rows are logged one by one; the rest are only counted.
pub(super) const SKIP_LOG_LIMIT: u64 = 10;

/// The single value of a job whose key has no placeholders: `[` then comma-separated row objects.
pub(super) struct Aggregate {
    pub(super) key: String,
    pub(super) value: Vec<u8>,
    pub(super) rows: usize,
    pub(super) oversize: bool,
}

impl Aggregate {
    pub(super) fn push(&mut self, renderer: &RowRenderer, cells: &[Cell<'_>], limit: usize) {
        self.rows += 1;
        if self.oversize {
            return;
        }
        if self.rows > 1 {
            self.value.push(b',');
        }
        renderer.render_object(cells, &mut self.value);
        // Stop growing once over the limit: the value will be skipped, and memory stays bounded.
        if self.value.len() > limit + 1 {
            self.oversize = true;
            self.value = Vec::new();
        }
    }
}

/// Collects a run's key operations and writes them in pipelined batches. Batches are written while the next is
/// read from the database, so the query and the writes overlap; at most `MAX_IN_FLIGHT` are in flight.
pub(super) struct BatchWriter<'a> {
    pub(super) cache: &'a Cache,
    pub(super) job: &'a WarmJob,
    pub(super) mode: Mode,
    pub(super) ops: Vec<KeyOp>,
    pub(super) bytes: usize,
    /// The same values' rendered sizes, before compression.
    pub(super) rendered: usize,
    /// In a dry run, each collected value's rendered size (printed beside its stored size).
    pub(super) rendered_sizes: Vec<usize>,
    pub(super) summary: RunSummary,
    pub(super) progress: &'a Progress,
    /// The run's read (version and lease; `None` without protection): its writes lose to later invalidations.
    pub(super) read: Option<ReadStamp>,
    /// Batches being written, oldest first, with their key counts.
    pub(super) in_flight: std::collections::VecDeque<(tokio::task::JoinHandle<Result<(), CacheError>>, u64)>,
    /// In a dry run, each set being built: its members and their bytes (printed for its key instead of the chunks).
    pub(super) dry_sets: std::collections::HashMap<String, (u64, usize)>,
}

impl<'a> BatchWriter<'a> {
    /// A writer for one run of `job`; `read` is its read stamp (`None` without protection or in a dry run).
    pub(super) fn new(
        cache: &'a Cache,
        job: &'a WarmJob,
        mode: Mode,
        progress: &'a Progress,
        read: Option<ReadStamp>,
    ) -> Self {
        Self {
            cache,
            job,
            mode,
            ops: Vec::with_capacity(BATCH_KEYS),
            bytes: 0,
            rendered: 0,
            rendered_sizes: Vec::new(),
            summary: RunSummary::default(),
            progress,
            read,
            in_flight: std::collections::VecDeque::new(),
            dry_sets: std::collections::HashMap::new(),
        }
    }

    /// Adds the rendered `value` of `key`, stored as the job's encoding says (the size limit is on what is stored).
    async fn push_value(&mut self, key: String, value: Vec<u8>) -> Result<(), CacheError> {
        // A set's writes are bounded apart (its members are checked one by one, see `members`).
        let member_write = crate::pure::members::is_member_write(&value);
        if self.mode == Mode::DryRun && member_write {
            self.dry_run_set(key, &value);
            return Ok(());
        }
        let rendered = value.len();
        let value = self.job.encoding.encode(value);
        let size = self.job.encoding.stored_len(&value);
        if size > self.job.max_value_bytes && !member_write {
            let limit = self.job.max_value_bytes;
            self.skip_value(
                |s| &mut s.skipped_oversize,
                || format!("key {key}: value of {size} bytes exceeds max_value_bytes ({limit})"),
            );
            return Ok(());
        }
        let ttl = self.job.ttl.pick(self.job.jitter, fastrand::f64());
        self.bytes += size;
        self.rendered += rendered;
        if self.mode == Mode::DryRun {
            self.rendered_sizes.push(rendered);
        }
        self.ops.push(KeyOp::Set {
            key,
            value,
            ttl,
            read: self.read.clone(),
        });
        if self.ops.len() >= BATCH_KEYS || self.bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands the collected batch to Redis (after the previous one finished) without waiting for it.
    pub(super) async fn flush(&mut self) -> Result<(), CacheError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_oldest().await?;
        }
        let ops = std::mem::replace(&mut self.ops, Vec::with_capacity(BATCH_KEYS));
        // A set's chunks (and the drop of what they built) write a key the rename at the end writes: only that counts.
        let keys = ops
            .iter()
            .filter(|op| !matches!(op, KeyOp::Set { value, .. } if crate::pure::members::is_build_write(value)))
            .count() as u64;
        self.summary.bytes_written += self.bytes as u64;
        self.summary.bytes_rendered += self.rendered as u64;
        self.bytes = 0;
        self.rendered = 0;
        match self.mode {
            Mode::Write => {
                let cache = self.cache.clone();
                // Awaited by the next flush or by `finish`, and aborted on drop: it never outlives the run.
                let write = tokio::spawn(async move { cache.apply(&ops).await });
                self.in_flight.push_back((write, keys));
            }
            Mode::DryRun => {
                print_dry_run(&self.job.name, &ops, &std::mem::take(&mut self.rendered_sizes));
                self.count_written(keys);
            }
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight, if any.
    pub(super) async fn settle_oldest(&mut self) -> Result<(), CacheError> {
        if let Some((write, keys)) = self.in_flight.pop_front() {
            write.await.expect("a batch write does not panic")?;
            self.count_written(keys);
        }
        Ok(())
    }

    /// Writes what is left and waits for every write.
    async fn finish_writes(&mut self) -> Result<(), CacheError> {
        self.flush().await?;
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// A dry run's set: its chunks counted, and at its rename one line for its key: `job, key, ttl, bytes of members,
    /// bytes of members, N members`.
    fn dry_run_set(&mut self, key: String, value: &[u8]) {
        use crate::pure::members::{chunk_members, moved_from};
        if let Some(members) = chunk_members(value) {
            let entry = self.dry_sets.entry(key).or_default();
            entry.0 += members.len() as u64;
            entry.1 += members.iter().map(|(member, _)| member.len()).sum::<usize>();
        } else if let Some(build) = moved_from(value) {
            let (members, bytes) = self.dry_sets.remove(&build).unwrap_or_default();
            let ttl = self.job.ttl.pick(self.job.jitter, fastrand::f64());
            let ttl = ttl.map_or_else(|| "none".to_string(), crate::pure::words::duration);
            println!("{}\t{key}\t{ttl}\t{bytes}\t{bytes}\t{members} members", self.job.name);
            self.summary.bytes_written += bytes as u64;
            self.summary.bytes_rendered += bytes as u64;
            self.count_written(1);
        }
    }

    pub(super) fn count_written(&mut self, keys: u64) {
        self.summary.keys_written += keys;
        self.progress.keys.fetch_add(keys, Ordering::Relaxed);
    }

    fn skip_value(&mut self, counter: impl FnOnce(&mut RunSummary) -> &mut u64, describe: impl FnOnce() -> String) {
        *counter(&mut self.summary) += 1;
        if self.summary.skipped() <= SKIP_LOG_LIMIT {
            warn!(job = %self.job.name, detail = %describe(), "Skipped a value; the rest of the job goes on.");
        }
    }
}

impl super::Sink for BatchWriter<'_> {
    async fn push(&mut self, key: String, value: Vec<u8>) -> Result<(), CacheError> {
        self.push_value(key, value).await
    }

    fn summary(&mut self) -> &mut RunSummary {
        &mut self.summary
    }

    fn skip(&mut self, counter: impl FnOnce(&mut RunSummary) -> &mut u64, describe: impl FnOnce() -> String) {
        self.skip_value(counter, describe);
    }

    async fn finish(&mut self) -> Result<(), CacheError> {
        self.finish_writes().await
    }

    async fn settle(&mut self) -> Result<(), CacheError> {
        self.finish_writes().await
    }
}

impl Drop for BatchWriter<'_> {
    fn drop(&mut self) {
        // A run that failed or timed out leaves no write behind it.
        for (write, _) in self.in_flight.drain(..) {
            write.abort();
        }
    }
}

/// One line per key: `job, key, ttl, stored bytes, rendered bytes`.
fn print_dry_run(job: &str, ops: &[KeyOp], rendered: &[usize]) {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (op, rendered) in ops.iter().zip(rendered) {
        if let KeyOp::Set { key, value, ttl, .. } = op {
            let ttl = ttl.map_or_else(|| "none".to_string(), crate::pure::words::duration);
            let _ = writeln!(out, "{job}\t{key}\t{ttl}\t{}\t{rendered}", value.len());
        }
    }
}
