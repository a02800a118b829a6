//! Running warm jobs: stream a query's rows, render keys and values, write them to Redis in pipelined batches.
//!
//! [`Warmer`] executes one run of one job (used by both the daemon and `run --once`) and guards against a job
//! overlapping itself and against too many jobs querying the database at once. [`WarmRunner`] is the daemon's
//! executor task: it takes [`Trigger`]s from the scheduler (and other producers), runs each in its own task so a
//! panic is caught and reported, and retries transient failures with backoff.
//!
//! # Memory
//! Rows are streamed, never fetched whole; at most `MAX_IN_FLIGHT` + 1 batches (`BATCH_KEYS` keys or `BATCH_BYTES`
//! bytes each) are held at a time, some being written while the next is read, so a million-row job runs in the same
//! memory as a thousand-row one. A single-key job holds its one value,
//! which `max_value_bytes` bounds.
//!
//! # Shutdown
//! On cancellation the runner takes no new triggers and gives in-flight runs `grace` to finish their writes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::exec::cache::{Cache, CacheError};
use crate::exec::database::{Database, DatabaseError};
use crate::pure::backoff::Backoff;
use crate::pure::model::{KeyOp, ReadStamp, Trigger, TriggerReason, WarmJob};
use crate::pure::render::{ColumnError, RowRenderer};
use crate::pure::value::Cell;
use crate::telemetry::health::Liveness;
use crate::telemetry::metrics;

mod batch;
mod members;
mod pieces;
pub mod prune;
mod stream;

use batch::BatchWriter;
pub(crate) use pieces::{PieceWorker, Pieces, board_key};
pub(crate) use stream::{Sink, render_query, render_rows};

/// How often the executor loop proves it is alive, for the systemd watchdog.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Attempts per triggered run when failures are transient (database or Redis unreachable).
const MAX_ATTEMPTS: u32 = 5;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("job is already running; this run was skipped")]
    AlreadyRunning,
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Columns(#[from] ColumnError),
    #[error("shape = \"object\" needs exactly one row, but the query returned {0}")]
    NotOneRow(String),
    #[error("run exceeded its timeout of {}", crate::pure::words::duration(*.0))]
    TimedOut(Duration),
    #[error("partition_by column \"{0}\" is not an integer column of the query's result: {1}")]
    PartitionColumn(String, String),
    #[error("{failed} of {pieces} pieces failed (each tried {} times)", pieces::ATTEMPTS)]
    PiecesFailed { failed: usize, pieces: usize },
}

impl From<crate::exec::refresh::KeyReadError> for WarmError {
    fn from(error: crate::exec::refresh::KeyReadError) -> Self {
        match error {
            crate::exec::refresh::KeyReadError::Database(error) => WarmError::Database(error),
            crate::exec::refresh::KeyReadError::Columns(error) => WarmError::Columns(error),
        }
    }
}

impl WarmError {
    /// Whether trying again soon may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            WarmError::Database(error) => error.is_transient(),
            WarmError::Cache(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Rows the query returned.
    pub rows: u64,
    /// Keys written (or, in a dry run, that would have been).
    pub keys_written: u64,
    /// Bytes of values written, as stored (compressed where the job compresses).
    pub bytes_written: u64,
    /// The same values' bytes as rendered JSON, before compression.
    pub bytes_rendered: u64,
    /// Keys Redis evicted (any keys: it does not say which) while the run wrote: some of the run's may be gone.
    pub evicted_keys: u64,
    /// Values larger than `max_value_bytes`, not written.
    pub skipped_oversize: u64,
    /// Rows whose key column was NULL.
    pub skipped_null_key: u64,
    /// Rows with a value that could not be decoded (invalid JSON in a JSON column, ...).
    pub skipped_invalid: u64,
    /// Keys of the job's template its query no longer returned, deleted after a run a change asked for.
    pub keys_pruned: u64,
    /// Wall time of the run.
    pub duration: Duration,
}

impl RunSummary {
    /// The figures the metrics record.
    pub(crate) fn figures(&self) -> metrics::RunFigures {
        metrics::RunFigures {
            duration: self.duration,
            rows: self.rows,
            keys_written: self.keys_written,
            keys_pruned: self.keys_pruned,
            bytes_written: self.bytes_written,
            bytes_rendered: self.bytes_rendered,
            skipped_oversize: self.skipped_oversize,
            skipped_null_key: self.skipped_null_key,
            skipped_invalid: self.skipped_invalid,
        }
    }

    /// All skipped rows and values.
    pub fn skipped(&self) -> u64 {
        self.skipped_oversize + self.skipped_null_key + self.skipped_invalid
    }
}

/// Live counters of a run in progress, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub keys: AtomicU64,
}

/// Whether a run writes to Redis or only reports what it would write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    /// Print `job, key, ttl, bytes` per key to stdout and write nothing.
    DryRun,
}

/// Outcome counts per job since the process started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStats {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped_overlap: u64,
    /// The most recent finished run.
    pub last: Option<LastRun>,
    /// When a run last succeeded.
    pub last_success: Option<std::time::SystemTime>,
    /// Runs that failed since the last success (0 after a success).
    pub failure_streak: u64,
}

impl JobStats {
    /// A run ended well.
    fn success(&mut self, finished_at: std::time::SystemTime, summary: RunSummary) {
        self.succeeded += 1;
        self.failure_streak = 0;
        self.last_success = Some(finished_at);
        self.last = Some(LastRun {
            finished_at,
            summary: Some(summary),
            error: None,
        });
    }

    /// A run failed (or panicked) for `error`.
    fn failure(&mut self, finished_at: std::time::SystemTime, error: String) {
        self.failed += 1;
        self.failure_streak += 1;
        self.last = Some(LastRun {
            finished_at,
            summary: None,
            error: Some(error),
        });
    }
}

/// How the most recent run of a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRun {
    /// When it ended.
    pub finished_at: std::time::SystemTime,
    /// Its figures, for a success.
    pub summary: Option<RunSummary>,
    /// Why it failed, for a failure.
    pub error: Option<String>,
}

/// Proof that a job is claimed for one run; released on drop (also when the run panics).
pub struct RunGuard {
    running: Arc<Mutex<HashSet<Arc<str>>>>,
    name: Arc<str>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        running.remove(&self.name);
    }
}

/// Executes warm job runs.
pub struct Warmer {
    db: Database,
    cache: Cache,
    /// Bounds how many jobs query the database at once.
    limiter: Semaphore,
    running: Arc<Mutex<HashSet<Arc<str>>>>,
    stats: Mutex<HashMap<Arc<str>, JobStats>>,
    /// Where partitioned jobs' pieces are coordinated; without it they run whole.
    pieces: Option<Arc<Pieces>>,
}

impl Warmer {
    /// A warmer letting at most `max_concurrent_jobs` runs query the database at once.
    pub fn new(db: Database, cache: Cache, max_concurrent_jobs: usize) -> Self {
        Self {
            db,
            cache,
            limiter: Semaphore::new(max_concurrent_jobs.max(1)),
            running: Arc::default(),
            stats: Mutex::default(),
            pieces: None,
        }
    }

    /// This warmer runs partitioned jobs in pieces, coordinated through `pieces` with the other instances.
    pub(crate) fn with_pieces(mut self, pieces: Arc<Pieces>) -> Self {
        self.pieces = Some(pieces);
        self
    }

    /// The latest run of a partitioned job, as the pieces' board showed it last.
    pub(crate) fn board(&self, job: &str) -> Option<crate::pure::model::Board> {
        self.pieces.as_ref()?.board(job)
    }

    /// Claims `job` for one run, or `None` (counted) when a run of it is already in progress.
    pub fn claim(&self, job: &Arc<str>) -> Option<RunGuard> {
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if running.insert(job.clone()) {
            Some(RunGuard {
                running: self.running.clone(),
                name: job.clone(),
            })
        } else {
            drop(running);
            self.record(job, |stats| stats.skipped_overlap += 1);
            metrics::record_run(job, metrics::Outcome::Skipped, None);
            None
        }
    }

    /// Whether a run of `job` is in progress.
    pub fn is_running(&self, job: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        running.contains(job)
    }

    /// Outcome counts for `job`.
    pub fn stats(&self, job: &str) -> JobStats {
        let stats = self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        stats.get(job).cloned().unwrap_or_default()
    }

    fn record(&self, job: &Arc<str>, update: impl FnOnce(&mut JobStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        update(stats.entry(job.clone()).or_default());
    }

    /// Runs `job` once: waits for a database slot, then queries and writes within `job.timeout`.
    pub async fn run(
        &self,
        claimed: &RunGuard,
        job: &WarmJob,
        mode: Mode,
        progress: &Progress,
    ) -> Result<RunSummary, WarmError> {
        self.run_pruning(claimed, job, mode, progress, None).await
    }

    /// [`run`](Self::run), and with `prune` (the configuration's jobs) it then deletes the job's keys the query no
    /// longer returned (see [`prune`]).
    pub(crate) async fn run_pruning(
        &self,
        _claimed: &RunGuard,
        job: &WarmJob,
        mode: Mode,
        progress: &Progress,
        prune: Option<&[WarmJob]>,
    ) -> Result<RunSummary, WarmError> {
        let started = Instant::now();
        let result = match (&self.pieces, &job.partitions, mode) {
            // Pieces are not pruned: a piece cannot tell a key another piece returned from one no piece did.
            (Some(pieces), Some(partitions), Mode::Write) => {
                self.run_in_pieces(pieces, job, partitions, progress).await
            }
            _ => {
                let _slot = self.limiter.acquire().await.expect("the limiter is never closed");
                let prune = prune.filter(|_| mode == Mode::Write);
                self.execute(&self.cache, job, mode, progress, prune).await
            }
        };
        let finished_at = std::time::SystemTime::now();
        match result {
            Ok(mut summary) => {
                summary.duration = started.elapsed();
                metrics::record_attempt(&job.name, true);
                self.record(&job.name, |stats| stats.success(finished_at, summary.clone()));
                Ok(summary)
            }
            Err(error) => {
                metrics::record_attempt(&job.name, false);
                self.record(&job.name, |stats| stats.failure(finished_at, error.to_string()));
                Err(error)
            }
        }
    }

    /// The run within `job.timeout`, under a read lease when it writes: taken before the query starts, so any
    /// invalidation from then on is newer than the data read, and ended afterwards, so that a write task still
    /// queued when the run timed out or failed cannot land once anything has been invalidated (see `cache`).
    async fn execute(
        &self,
        cache: &Cache,
        job: &WarmJob,
        mode: Mode,
        progress: &Progress,
        prune: Option<&[WarmJob]>,
    ) -> Result<RunSummary, WarmError> {
        let lease = match mode {
            Mode::Write => Some(cache.begin_read(job.timeout).await?),
            Mode::DryRun => None,
        };
        let read = lease.as_ref().and_then(|lease| lease.stamp(lease.read_at));
        let evicted_before = match mode {
            Mode::Write => cache.evicted_keys().await,
            Mode::DryRun => None,
        };
        let mut run = match tokio::time::timeout(
            job.timeout,
            self.read_and_write(cache, job, mode, progress, read, prune),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(WarmError::TimedOut(job.timeout)),
        };
        if let Some(lease) = lease {
            cache.end_read(lease).await;
        }
        if let (Ok(summary), Some(before)) = (&mut run, evicted_before)
            && let Some(after) = cache.evicted_keys().await
            && after > before
        {
            summary.evicted_keys = after - before;
            warn!(
                job = %job.name,
                evicted = summary.evicted_keys,
                written = summary.keys_written,
                "Redis evicted keys while this run wrote (maxmemory): some of the keys it wrote may be gone already."
            );
        }
        run
    }

    /// Streams the query's rows into the batch writer (see [`stream::render_rows`]).
    async fn read_and_write(
        &self,
        cache: &Cache,
        job: &WarmJob,
        mode: Mode,
        progress: &Progress,
        read: Option<ReadStamp>,
        prune: Option<&[WarmJob]>,
    ) -> Result<RunSummary, WarmError> {
        let mut writer = BatchWriter::new(cache, job, mode, progress, read);
        let Some(others) = prune else {
            stream::render_rows(&self.db, job, progress, &mut writer).await?;
            return Ok(std::mem::take(&mut writer.summary));
        };
        let mut remembering = prune::Remembering::new(&mut writer);
        stream::render_rows(&self.db, job, progress, &mut remembering).await?;
        let seen = remembering.seen.take();
        let mut summary = std::mem::take(&mut writer.summary);
        summary.keys_pruned = prune::prune(cache, &self.db, job, others, seen).await?;
        Ok(summary)
    }
}

/// The daemon's warm executor: turns triggers into runs.
pub struct WarmRunner {
    warmer: Arc<Warmer>,
    /// The current jobs; replaced on reload. A run keeps the definition it started with.
    jobs: watch::Receiver<Arc<[WarmJob]>>,
    triggers: mpsc::Receiver<Trigger>,
    grace: Duration,
    liveness: Liveness,
}

impl WarmRunner {
    /// A runner for the jobs in `jobs`, fed by `triggers`; in-flight runs get `grace` to finish at shutdown.
    pub fn new(
        warmer: Arc<Warmer>,
        jobs: watch::Receiver<Arc<[WarmJob]>>,
        triggers: mpsc::Receiver<Trigger>,
        grace: Duration,
        liveness: Liveness,
    ) -> Self {
        Self {
            warmer,
            jobs,
            triggers,
            grace,
            liveness,
        }
    }

    /// Runs until `shutdown` is cancelled or every trigger sender is gone.
    ///
    /// A job that fires while it runs is skipped — unless a change, a message or a gap asked for the run: the
    /// running one may have read before that change, so the job runs once more when it ends (one rerun however many
    /// asked meanwhile).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut runs = JoinSet::new();
        let mut names = HashMap::new();
        let mut reruns: HashMap<Arc<str>, TriggerReason> = HashMap::new();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = heartbeat.tick() => self.liveness.beat("warm"),
                Some(joined) = runs.join_next_with_id(), if !runs.is_empty() => {
                    if let Some(job) = report_join(&self.warmer, joined, &mut names)
                        && let Some(reason) = reruns.remove(&job)
                    {
                        self.start(&mut runs, &mut names, &job, reason, &mut reruns, &shutdown);
                    }
                }
                trigger = self.triggers.recv() => match trigger {
                    Some(Trigger::Warm { job, reason }) => {
                        self.start(&mut runs, &mut names, &job, reason, &mut reruns, &shutdown)
                    }
                    None => break,
                },
            }
        }
        let drain = async {
            while let Some(joined) = runs.join_next_with_id().await {
                // Reruns are not started at shutdown: the binlog replays the changes that asked for them.
                report_join(&self.warmer, joined, &mut names);
            }
        };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            warn!(grace = ?self.grace, "Warm runs did not finish within the shutdown grace period; aborting them.");
            runs.abort_all();
        }
    }

    fn start(
        &self,
        runs: &mut JoinSet<()>,
        names: &mut HashMap<tokio::task::Id, Arc<str>>,
        name: &Arc<str>,
        reason: TriggerReason,
        reruns: &mut HashMap<Arc<str>, TriggerReason>,
        shutdown: &CancellationToken,
    ) {
        let Some(job) = self.jobs.borrow().iter().find(|job| &job.name == name).cloned() else {
            warn!(job = %name, "Trigger names no configured warm job; ignored.");
            return;
        };
        let Some(guard) = self.warmer.claim(&job.name) else {
            if matches!(
                reason,
                TriggerReason::Change | TriggerReason::Message | TriggerReason::Resync
            ) {
                info!(job = %job.name, %reason, "Warm job is running; it runs again when this run ends.");
                // A change's rerun prunes: another reason asking meanwhile does not take that away.
                let rerun = reruns.entry(job.name.clone()).or_insert(reason);
                if *rerun != TriggerReason::Change {
                    *rerun = reason;
                }
            } else if reason == TriggerReason::Startup {
                // At a fresh start the binlog's gap recovery may have started it first: that run warms it.
                info!(job = %job.name, "Warm job is already running at start; that run serves run_on_start.");
            } else {
                warn!(job = %job.name, %reason, "Warm job is still running; this fire was skipped.");
            }
            return;
        };
        let warmer = self.warmer.clone();
        let shutdown = shutdown.clone();
        let name = job.name.clone();
        // A run a row change asked for also deletes the keys its query no longer returns (see `prune`).
        let prune = (reason == TriggerReason::Change).then(|| self.jobs.borrow().clone());
        let span = info_span!("warm", job = %job.name, %reason);
        let handle = runs.spawn(
            async move {
                let mut backoff = Backoff::attempts();
                for attempt in 1..=MAX_ATTEMPTS {
                    let progress = Progress::default();
                    match warmer
                        .run_pruning(&guard, &job, Mode::Write, &progress, prune.as_deref())
                        .await
                    {
                        Ok(summary) => {
                            info!(
                                rows = summary.rows,
                                keys = summary.keys_written,
                                pruned = summary.keys_pruned,
                                skipped = summary.skipped(),
                                bytes = summary.bytes_written,
                                duration_ms = summary.duration.as_millis() as u64,
                                "Warm job finished."
                            );
                            metrics::record_run(&job.name, metrics::Outcome::Success, Some(&summary.figures()));
                            return;
                        }
                        Err(error) if error.is_transient() && attempt < MAX_ATTEMPTS => {
                            let delay = backoff.next_delay();
                            warn!(%error, attempt, retry_in = ?delay, "Warm job failed; will retry.");
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(delay) => {}
                            }
                        }
                        Err(error) => {
                            error!(%error, attempt, "Warm job failed.");
                            metrics::record_run(&job.name, metrics::Outcome::Failure, None);
                            return;
                        }
                    }
                }
            }
            .instrument(span),
        );
        names.insert(handle.id(), name);
    }
}

/// Reports a run that ended (a panic as a failure); the job's name.
fn report_join(
    warmer: &Warmer,
    joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    names: &mut HashMap<tokio::task::Id, Arc<str>>,
) -> Option<Arc<str>> {
    match joined {
        Ok((id, ())) => names.remove(&id),
        Err(error) => {
            let job = names.remove(&error.id())?;
            if error.is_panic() {
                let panic = panic_message(error.into_panic());
                error!(job = %job, %panic, "Warm job panicked; other jobs go on.");
                metrics::record_run(&job, metrics::Outcome::Failure, None);
                warmer.record(&job, |stats| {
                    stats.failure(std::time::SystemTime::now(), format!("panicked: {panic}"))
                });
            }
            Some(job)
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => text.to_string(),
            Err(_) => "(non-text panic payload)".into(),
        },
    }
}
