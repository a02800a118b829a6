//! Partitioned warm runs (`partitions = K`): a run split by ranges of a numeric column into pieces that every
//! instance sharing the Redis claims and runs, coordinated through a board in Redis (`exec::cache` keeps it).
//!
//! The instance a trigger reaches (the leader, the source's holder, `run --once`) finds the column's range, starts
//! the run on the board (or joins the one in progress) and works on it: it claims a piece, runs the job's query
//! restricted to that range, records it done, and claims the next, until none is left; then it waits for the pieces
//! others hold and reports the run when every piece is done. Every instance's [`PieceWorker`] looks at the boards
//! every [`POLL`] and, for a run in progress it has no part in yet, claims pieces the same way. A claim lasts
//! [`CLAIM_TTL`] and is renewed while its piece runs, so the piece of an instance that dies is claimed again by
//! another within that time and a poll (a stop gives its claims back at once, so another takes them at its next
//! look); a piece is recorded done once, by the instance that holds its
//! claim. A piece that fails is given back and tried again, [`ATTEMPTS`] times in all, then the run fails.
//!
//! Pieces write through the unfenced cache: a piece is not the leader's work but anyone's, and stale-set protection
//! (each piece reads under its own read lease) is what keeps a late write from installing old data.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use super::{Mode, Progress, RunSummary, WarmError, Warmer};
use crate::exec::cache::{Cache, Claimed};
use crate::pure::model::{Board, Partitions, PieceFigures, WarmJob};
use crate::telemetry::metrics;

/// How often a worker looks at the boards, and a waiting run at its pieces.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// How long a claim lasts unless renewed: the piece of an instance that died is claimed again after it.
pub(crate) const CLAIM_TTL: Duration = Duration::from_secs(10);
/// Times a piece is claimed before it counts as failed.
pub(crate) const ATTEMPTS: u32 = 3;
/// A piece that failed here is given back; this instance waits this long before claiming again.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Where this instance coordinates partitioned runs, and the boards it saw last (for `/jobs`).
pub(crate) struct Pieces {
    /// Unfenced: the board and the pieces' writes.
    cache: Cache,
    prefix: String,
    instance: Arc<str>,
    boards: Mutex<HashMap<String, Board>>,
    /// The claims this instance holds (board, run, piece): given back at a stop.
    held: Mutex<HashSet<(String, String, u32)>>,
}

/// The board of `job`'s runs: `<prefix>:pieces:{<job>}` (one hash, one slot).
pub(crate) fn board_key(prefix: &str, job: &str) -> String {
    format!("{prefix}:pieces:{{{job}}}")
}

impl Pieces {
    /// Boards under `prefix`, this instance named `instance` on them.
    pub(crate) fn new(cache: Cache, prefix: String, instance: Arc<str>) -> Self {
        Self {
            cache,
            prefix,
            instance,
            boards: Mutex::default(),
            held: Mutex::default(),
        }
    }

    fn key(&self, job: &str) -> String {
        board_key(&self.prefix, job)
    }

    /// The board of `job` as this instance saw it last.
    pub(crate) fn board(&self, job: &str) -> Option<Board> {
        self.boards.lock().unwrap_or_else(|p| p.into_inner()).get(job).cloned()
    }

    /// Reads `job`'s board (and keeps it for [`board`](Self::board)).
    async fn look(&self, job: &str) -> Result<Option<Board>, crate::exec::cache::CacheError> {
        let board = self.cache.read_board(&self.key(job)).await?;
        let mut boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        match &board {
            Some(board) => boards.insert(job.to_string(), board.clone()),
            None => boards.remove(job),
        };
        Ok(board)
    }

    fn holding(&self, claim: (String, String, u32), held: bool) {
        let mut claims = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held {
            claims.insert(claim);
        } else {
            claims.remove(&claim);
        }
    }

    /// Gives back every claim this instance holds (a stop: their pieces are taken at the others' next look).
    async fn give_back(&self) {
        let claims: Vec<_> = self.held.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for (board, run, piece) in claims {
            match self.cache.release_piece(&board, &run, piece, &self.instance).await {
                Ok(()) => info!(board, piece, "Gave the piece back at the stop."),
                Err(error) => warn!(board, piece, %error, "Could not give the piece back; its claim runs out."),
            }
        }
    }
}

impl Warmer {
    /// One run of a partitioned job, as the instance a trigger reached runs it: the run started (or joined), pieces
    /// run here until none is free, then waited for until every piece is done.
    pub(super) async fn run_in_pieces(
        &self,
        pieces: &Pieces,
        job: &WarmJob,
        partitions: &Partitions,
        progress: &Progress,
    ) -> Result<RunSummary, WarmError> {
        let Some((low, high)) = self.column_range(job, partitions).await? else {
            info!(job = %job.name, "The query returned no rows: nothing to split.");
            return Ok(RunSummary::default());
        };
        let ranges = partitions.ranges(low, high);
        let ours = uuid::Uuid::new_v4().to_string();
        let run = pieces
            .cache
            .start_pieces(&pieces.key(&job.name), &ours, &ranges)
            .await?;
        if run == ours {
            info!(job = %job.name, pieces = ranges.len(), low, high, run, "Partitioned warm run started.");
        } else {
            info!(job = %job.name, run, "A run of this partitioned job is in progress; joining it.");
        }
        self.work_on(pieces, job, partitions, &run, progress, true).await?;
        let board = pieces.look(&job.name).await?;
        let Some(board) = board.filter(|board| board.run == run) else {
            return Ok(RunSummary::default());
        };
        let (totals, failed) = board.totals();
        if failed > 0 {
            return Err(WarmError::PiecesFailed {
                failed,
                pieces: board.pieces.len(),
            });
        }
        Ok(RunSummary {
            rows: totals.rows,
            keys_written: totals.keys,
            bytes_written: totals.bytes,
            ..RunSummary::default()
        })
    }

    /// The smallest and largest value of the partition column over the job's rows (`None`: no rows).
    async fn column_range(&self, job: &WarmJob, partitions: &Partitions) -> Result<Option<(i64, i64)>, WarmError> {
        let query = partitions.range_query(job.run_query());
        let rows = self.db.of(job).fetch_bound(&query, &[], job.timeout).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let column = |index: usize| -> Result<Option<i64>, WarmError> {
            let refused = |error: String| WarmError::PartitionColumn(partitions.column.clone(), error);
            match row.try_get::<Option<i64>, _>(index) {
                Ok(value) => Ok(value),
                Err(signed) => match row.try_get::<Option<u64>, _>(index) {
                    Ok(value) => value
                        .map(|n| {
                            i64::try_from(n).map_err(|_| refused(format!("{n} is beyond a signed 64-bit integer")))
                        })
                        .transpose(),
                    Err(_) => Err(refused(signed.to_string())),
                },
            }
        };
        Ok(column(0)?.zip(column(1)?))
    }

    /// Claims and runs pieces of `run` until none is free; with `wait`, until the run is finished, claiming the
    /// pieces whose claim ran out meanwhile (an instance died).
    pub(super) async fn work_on(
        &self,
        pieces: &Pieces,
        job: &WarmJob,
        partitions: &Partitions,
        run: &str,
        progress: &Progress,
        wait: bool,
    ) -> Result<(), WarmError> {
        let board = pieces.key(&job.name);
        loop {
            match pieces
                .cache
                .claim_piece(&board, run, &pieces.instance, CLAIM_TTL, ATTEMPTS)
                .await?
            {
                Claimed::Piece { piece, low, high } => {
                    let span = info_span!("piece", piece, low, high);
                    let done = self
                        .run_piece(pieces, job, partitions, run, (piece, low, high), progress)
                        .instrument(span)
                        .await;
                    if !done {
                        tokio::time::sleep(AFTER_FAILURE).await;
                    }
                }
                Claimed::AllHeld if wait => {
                    tokio::time::sleep(POLL).await;
                    pieces.look(&job.name).await?;
                }
                Claimed::AllHeld | Claimed::Finished | Claimed::Gone => return Ok(()),
            }
        }
    }

    /// Runs one piece under its claim, renewing it meanwhile, and records it done; whether it was.
    async fn run_piece(
        &self,
        pieces: &Pieces,
        job: &WarmJob,
        partitions: &Partitions,
        run: &str,
        (piece, low, high): (u32, i64, i64),
        progress: &Progress,
    ) -> bool {
        let board = pieces.key(&job.name);
        let piece_job = WarmJob {
            query: partitions.piece_query(job.run_query(), low, high),
            partitions: None,
            ..job.clone()
        };
        let started = Instant::now();
        let work = async {
            let _slot = self.limiter.acquire().await.expect("the limiter is never closed");
            self.execute(&pieces.cache, &piece_job, Mode::Write, progress, None)
                .await
        };
        let keep = keep_claim(&pieces.cache, &board, run, piece, &pieces.instance);
        let claim = (board.clone(), run.to_string(), piece);
        pieces.holding(claim.clone(), true);
        let result = tokio::select! {
            result = work => {
                pieces.holding(claim, false);
                result
            }
            () = keep => {
                pieces.holding(claim, false);
                warn!(job = %job.name, "This instance's claim on the piece ran out (another instance takes it); stopped running it.");
                metrics::record_piece(&job.name, "lost");
                return false;
            }
        };
        match result {
            Ok(summary) => {
                let figures = PieceFigures {
                    rows: summary.rows,
                    keys: summary.keys_written,
                    bytes: summary.bytes_written,
                    millis: started.elapsed().as_millis() as u64,
                };
                match pieces
                    .cache
                    .finish_piece(&board, run, piece, &pieces.instance, &figures)
                    .await
                {
                    Ok(true) => {
                        info!(job = %job.name, keys = figures.keys, duration_ms = figures.millis, "Piece done.");
                        metrics::record_piece(&job.name, "done");
                        true
                    }
                    Ok(false) => {
                        warn!(job = %job.name, "The piece finished after its claim went to another instance; not counted.");
                        metrics::record_piece(&job.name, "lost");
                        true
                    }
                    Err(error) => {
                        warn!(job = %job.name, %error, "Could not record the piece done; it runs again once its claim runs out.");
                        metrics::record_piece(&job.name, "lost");
                        false
                    }
                }
            }
            Err(error) => {
                warn!(job = %job.name, %error, "Piece failed; giving it back for another attempt.");
                metrics::record_piece(&job.name, "failed");
                if let Err(error) = pieces.cache.release_piece(&board, run, piece, &pieces.instance).await {
                    warn!(job = %job.name, %error, "Could not give the piece back; it is claimed again once its claim runs out.");
                }
                false
            }
        }
    }
}

/// Renews a piece's claim until it is lost (ends then); a renewal Redis does not answer is tried again at the next.
async fn keep_claim(cache: &Cache, board: &str, run: &str, piece: u32, instance: &str) {
    loop {
        tokio::time::sleep(CLAIM_TTL / 4).await;
        match cache.renew_piece(board, run, piece, instance, CLAIM_TTL).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => warn!(%error, "Could not renew the piece's claim; trying again."),
        }
    }
}

/// Every instance's share in partitioned runs it did not start: it looks at each partitioned job's board every
/// [`POLL`] and works on a run in progress it has no part in yet.
pub(crate) struct PieceWorker {
    warmer: Arc<Warmer>,
    jobs: watch::Receiver<Arc<[WarmJob]>>,
}

impl PieceWorker {
    pub(crate) fn new(warmer: Arc<Warmer>, jobs: watch::Receiver<Arc<[WarmJob]>>) -> Self {
        Self { warmer, jobs }
    }

    /// Works until `shutdown`; pieces in progress then stop and are given back (the run's own pieces too: its
    /// instance is stopping).
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let Some(pieces) = self.warmer.pieces.clone() else {
            return;
        };
        let mut work = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = work.join_next(), if !work.is_empty() => continue,
                () = tokio::time::sleep(POLL) => {}
            }
            let jobs = self.jobs.borrow().clone();
            for job in jobs.iter().filter(|job| job.enabled) {
                let Some(partitions) = job.partitions.clone() else {
                    continue;
                };
                let board = match pieces.look(&job.name).await {
                    Ok(Some(board)) if board.state == "running" => board,
                    Ok(_) => continue,
                    Err(error) => {
                        tracing::debug!(job = %job.name, %error, "Could not read the pieces' board.");
                        continue;
                    }
                };
                if self.warmer.is_running(&job.name) {
                    continue;
                }
                let Some(claimed) = self.warmer.claim(&job.name) else {
                    continue;
                };
                let (warmer, pieces, job) = (self.warmer.clone(), pieces.clone(), job.clone());
                let span = info_span!("warm", job = %job.name, reason = "pieces");
                work.spawn(
                    async move {
                        let _claimed = claimed;
                        let progress = Progress::default();
                        let worked = warmer.work_on(&pieces, &job, &partitions, &board.run, &progress, false);
                        if let Err(error) = worked.await {
                            warn!(%error, "Could not work on the partitioned run.");
                        }
                    }
                    .instrument(span),
                );
            }
        }
        work.abort_all();
        while work.join_next().await.is_some() {}
        pieces.give_back().await;
    }
}
