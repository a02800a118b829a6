//! Where the listener's sessions start and how far its checkpoint goes: the start position (a saved checkpoint,
//! the position in memory, or the current one after a gap), saving the checkpoint as far as the warm runs it waits
//! for allow, and noticing when Redis lost or rolled it back (see the `# Failure` notes of the module above).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::checkpoint::{self, Position};
use super::{BinlogError, BinlogListener, SessionState, Verdict};
use crate::config::BinlogStart;

/// The checkpoint in Redis is compared with the position last saved at most this often (an idle stream: at each
/// heartbeat): one GET, so that a Redis that lost writes is noticed within a second or a heartbeat.
const CHECKPOINT_VERIFY_EVERY: Duration = Duration::from_secs(1);

impl BinlogListener {
    /// Where a session starts reading, saving it when it is new. After a purge, or with no checkpoint, the current
    /// position is taken (and saved) *before* the `on_gap` recovery starts, so every change committed during the
    /// recovery is read afterwards. `None` when shutdown interrupted the recovery.
    pub(super) async fn start_position(
        &self,
        current: Position,
        shutdown: &CancellationToken,
        state: &mut SessionState,
    ) -> Result<Option<Position>, BinlogError> {
        if state.resume_from_current {
            self.checkpoints.save(&current).await?;
            state.resume_from_current = false;
            state.applied = Some(current.clone());
            return Ok(self.recover(shutdown).await.then_some(current));
        }
        let saved = self.checkpoints.load().await?;
        if let Some(start) = checkpoint::resume_from(saved, state.applied.take(), &self.series) {
            if start.lost {
                // Saved again at once: the next Redis loss must not find it missing as well.
                self.checkpoints.save(&start.position).await?;
            }
            state.applied = Some(start.position.clone());
            return Ok(Some(start.position));
        }
        let start = match &self.settings.start {
            BinlogStart::At { file, pos } => Position::at(file.clone(), *pos),
            BinlogStart::Current => current,
        };
        self.checkpoints.save(&start).await?;
        state.applied = Some(start.clone());
        if matches!(self.settings.start, BinlogStart::Current) {
            warn!(
                position = %start,
                "No binlog checkpoint: starting at the current position; recovering what the rules cover."
            );
            self.series.gap();
            if !self.recover(shutdown).await {
                return Ok(None);
            }
        }
        Ok(Some(start))
    }

    /// How readiness names this source's checkpoint waiting (`stalled`: `redis_full`, `checkpoint_file`): as it is
    /// for a `[binlog]` table, with the source for one of `[[binlog]]` (`redis_full (binlog orders)`).
    fn stalled_as(&self, stalled: &str) -> String {
        match &*self.settings.label {
            "binlog" => stalled.to_string(),
            label => format!("{stalled} ({label})"),
        }
    }

    /// Saves the checkpoint as far as it may go: the newest applied position, held back before every change whose
    /// warm run has not ended (`holds`). A full Redis or a full disk refuses it: it waits (readiness and
    /// `cachewarden_binlog_checkpoint_failing` say so), the stream goes on.
    pub(super) async fn advance(&self, state: &mut SessionState) -> Result<(), BinlogError> {
        let Some(latest) = state.latest.clone() else {
            return Ok(());
        };
        let position = state.holds.bound(latest);
        if state.applied.as_ref().map(ToString::to_string) == Some(position.to_string()) {
            return Ok(());
        }
        let error = match self.checkpoints.save(&position).await {
            Ok(()) => {
                if let Some(stalled) = state.checkpoint_waits.take() {
                    info!(%position, "The binlog checkpoint is saved again.");
                    self.health.set_stalled(&self.stalled_as(stalled), None);
                    self.series.checkpoint_failing(false);
                }
                state.applied = Some(position);
                return Ok(());
            }
            Err(error) => error,
        };
        // The batch's invalidations went through (a full Redis still deletes, and they free memory; a full disk does
        // not concern Redis); the checkpoint waits for the next batch that can save one. A restart meanwhile resumes
        // from the last saved checkpoint and applies the changes since again.
        let Verdict::CheckpointWaits(stalled) = error.verdict() else {
            return Err(error);
        };
        if state.checkpoint_waits.is_none() {
            warn!(%error, "Cannot save the binlog checkpoint: it waits until it can be saved.");
        }
        state.checkpoint_waits = Some(stalled);
        self.health
            .set_stalled(&self.stalled_as(stalled), Some(error.to_string()));
        self.series.checkpoint_failing(true);
        Ok(())
    }

    /// Compares the checkpoint in Redis with the position this listener last saved. A missing or different one means
    /// Redis lost writes — a restart without persistence, an evicted key, a failover to a replica that was behind —
    /// and with them, maybe, invalidations: the session ends, and the next resumes from the earlier of the two
    /// ([`resume_from`]), applying again what Redis may have lost.
    pub(super) async fn verify_checkpoint(&self, state: &mut SessionState) -> Result<(), BinlogError> {
        if !self.checkpoints.in_redis() || state.verified.is_some_and(|at| at.elapsed() < CHECKPOINT_VERIFY_EVERY) {
            return Ok(());
        }
        state.verified = Some(Instant::now());
        let Some(applied) = &state.applied else { return Ok(()) };
        let saved = self.checkpoints.load().await?;
        // Compared as saved (text): a GTID set read back need not be built the same way as the one in memory.
        if saved.as_ref().map(ToString::to_string) == Some(applied.to_string()) {
            return Ok(());
        }
        let holds = saved.map_or_else(|| "none".to_string(), |saved| saved.to_string());
        Err(BinlogError::Interrupted(format!(
            "Redis no longer holds the checkpoint saved at {applied} (it holds {holds}): it lost writes; \
             resuming from the earlier of the two"
        )))
    }
}
