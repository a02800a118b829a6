//! A batch applied: its actions through the invalidator, the warm runs its changes asked for requested after them,
//! its checkpoint saved, and refreshes whose read did not show their change deferred or read from the writer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::batch::{self, Batch};
use super::{BinlogError, BinlogListener, SessionState};
use crate::exec::database::Database;
use crate::pure::model::TriggerReason;
use crate::telemetry::metrics;

impl BinlogListener {
    /// Applies the batch and then saves its checkpoint; refreshes whose read did not show their change are deferred
    /// (see `batch`). `false` when shutdown interrupted it (nothing is saved: the batch is read again next time).
    pub(super) async fn flush(
        &self,
        batch: &mut Batch,
        state: &mut SessionState,
        shutdown: &CancellationToken,
    ) -> Result<bool, BinlogError> {
        let ready = batch.take_actions();
        let (transactions, rows, checkpoint) = (batch.transactions, batch.rows, batch.checkpoint.take());
        batch.reset();
        let mut unverified = Vec::new();
        if !ready.actions.is_empty() {
            match self
                .invalidator
                .apply_with_retry(
                    &self.settings.label,
                    Some(&self.series),
                    &ready.actions,
                    &ready.seen,
                    shutdown,
                )
                .await
            {
                Some(applied) => {
                    unverified = applied.unverified;
                    // Sets the batch left short: their runs are asked for as the batch's changes' are, the checkpoint
                    // held before the batch, but at once (one run at a time, one queued: a short set is wrong until
                    // its run).
                    let before = state.latest.clone().or_else(|| state.applied.clone());
                    for job in applied.short {
                        match &before {
                            Some(before) => {
                                super::rows::warm_asked(job.to_string(), Duration::ZERO, Instant::now(), before, state)
                            }
                            None => self.invalidator.warm(&job, TriggerReason::Change),
                        }
                    }
                }
                None => return Ok(false),
            }
        }
        for job in std::mem::take(&mut state.warms_after_apply) {
            self.invalidator.warm(&job, TriggerReason::Change);
        }
        if let Some(position) = checkpoint {
            state.latest = Some(position);
            self.advance(state).await?;
        }
        self.series.batch(transactions, rows, ready.actions.len() as u64);
        let unix_now = metrics::unix_now().as_secs();
        let wait = self.settings.refresh_wait;
        let mut unverified = ready.defer_unverified(&unverified, batch, Instant::now(), unix_now, wait);
        if let Some(writer) = &self.fallback {
            self.read_from_writer(writer, &mut unverified).await;
        }
        for _ in &unverified.outdated {
            metrics::record_refresh_given_up("outdated");
        }
        let given_up = unverified.given_up;
        if let Some(first) = given_up.first() {
            for _ in &given_up {
                metrics::record_refresh_given_up("unverified");
            }
            warn!(
                keys = given_up.len(),
                first = %first,
                waited = ?wait,
                fallback = self.fallback.is_some(),
                "Refresh reads kept returning rows other than their binlog event's (a lagging [mysql] replica?); \
                 leaving those keys deleted."
            );
        }
        Ok(true)
    }

    /// Reads the refreshes the reader did not show in time once more from the writer (`refresh_fallback`): what the
    /// writer shows is written, and leaves `unverified`; the rest stays deleted (a newer row there means a later
    /// event refreshes the key). A failed read leaves them all deleted, with a WARN: never stale, at worst missing.
    async fn read_from_writer(&self, writer: &Database, unverified: &mut batch::Unverified) {
        let keys: Vec<&str> = unverified
            .given_up
            .iter()
            .chain(&unverified.outdated)
            .map(String::as_str)
            .collect();
        if keys.is_empty() {
            return;
        }
        match self.invalidator.refresh_from(writer, &keys, &unverified.seen).await {
            Ok(applied) => {
                metrics::record_refresh_fallback(applied.refreshed as usize);
                let still: HashSet<&String> = applied.unverified.iter().collect();
                unverified.given_up.retain(|key| still.contains(key));
                unverified.outdated.retain(|key| still.contains(key));
            }
            Err(error) => warn!(
                %error,
                keys = keys.len(),
                "Could not read refreshes from [binlog] refresh_fallback; leaving those keys deleted."
            ),
        }
    }
}
