//! Applying invalidation [`Action`]s: deletes (coalesced and pipelined), pattern deletes (SCAN + UNLINK), refreshes
//! of single keys from the database, and on-demand warm runs.
//!
//! The executor behind the channel and stream sources. It writes only through `cache::Cache` and reads rows only
//! through `database::Database`; what a message may ask for was settled by `plan` before anything reaches here.
//!
//! # Refresh
//! A key is refreshed through the first job (in file order) whose key template it fits. With a `refresh_query`, the
//! key's placeholder values are bound to it and the row is rendered exactly as the warm job would; no row means the
//! key is deleted. A job without `refresh_query` cannot render one key, so the key is deleted (the application's
//! cache-aside read repopulates it). A key of a single-key job (`dashboard:stats`) runs that job. A key no job fits
//! is deleted.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::cache::{Cache, CacheError, ReadLease};
use crate::database::{self, Database, DatabaseError};
use crate::metrics;
use crate::model::{KeyOp, Trigger, TriggerReason, WarmJob};
use crate::plan::Action;
use crate::render::{PlanError, RowRenderer};

/// Why one key could not be rendered from the database.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// What `job` renders for `key` from the database now, through its `refresh_query` with the key's placeholder
/// values bound: `Ok(None)` when no row renders that key (or the job has no refresh query). Used by refreshes and by
/// the audit, so both see exactly what a warm run would write.
pub async fn render_from_database(db: &Database, job: &WarmJob, key: &str) -> Result<Option<Vec<u8>>, RenderError> {
    let (Some(query), Some(values)) = (&job.refresh_query, job.key.capture(key)) else {
        return Ok(None);
    };
    let binds: Vec<&str> = job
        .refresh_params
        .iter()
        .map(|param| {
            values
                .iter()
                .find(|(name, _)| name == param)
                .map_or("", |(_, value)| *value)
        })
        .collect();
    let rows = db.fetch_bound(query, &binds, job.timeout).await?;
    for row in &rows {
        let renderer = RowRenderer::new(job, &database::columns(row))?;
        let mut raw = Vec::new();
        database::raw_values(row, &mut raw)?;
        let Ok(cells) = renderer.decode(&raw) else { continue };
        let mut rendered_key = String::new();
        if renderer.render_key(&cells, &mut rendered_key).is_ok() && rendered_key == key {
            let mut value = Vec::with_capacity(256);
            renderer.render_object(&cells, &mut value);
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Refreshes run at once within a batch; each holds a database connection while it queries.
const CONCURRENT_REFRESHES: usize = 4;

/// Why a batch could not be applied. Every error leaves the batch safe to apply again.
#[derive(Debug, thiserror::Error)]
pub enum InvalidateError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys unlinked by plain deletes.
    pub deleted: u64,
    /// Keys unlinked by pattern deletes.
    pub pattern_deleted: u64,
    /// Keys rewritten from the database.
    pub refreshed: u64,
    /// Refreshed keys whose row is gone, or that no job can render, hence deleted.
    pub refresh_deleted: u64,
    /// Warm runs requested.
    pub warms: u64,
    /// Keys written from binlog row images.
    pub projected: u64,
}

/// Applies actions.
pub struct Invalidator {
    pub cache: Cache,
    pub db: Database,
    pub jobs: watch::Receiver<Arc<[WarmJob]>>,
    pub triggers: mpsc::Sender<Trigger>,
    pub max_keys_per_pattern: u64,
}

impl Invalidator {
    /// Applies `actions` in order. Runs of consecutive actions of one kind are coalesced: a key deleted or refreshed
    /// twice in a row is deleted or refreshed once, and deletes go out in one pipeline.
    pub async fn apply(&self, actions: &[Action]) -> Result<Applied, InvalidateError> {
        let mut applied = Applied::default();
        let mut index = 0;
        while index < actions.len() {
            let kind = std::mem::discriminant(&actions[index]);
            let end = actions[index..]
                .iter()
                .position(|a| std::mem::discriminant(a) != kind)
                .map_or(actions.len(), |n| index + n);
            let mut seen = HashSet::new();
            let run: Vec<&Action> = actions[index..end].iter().filter(|a| seen.insert(*a)).collect();
            match run[0] {
                Action::Delete(_) => {
                    let keys: Vec<String> = run
                        .iter()
                        .filter_map(|a| match a {
                            Action::Delete(key) => Some(key.clone()),
                            _ => None,
                        })
                        .collect();
                    self.cache.invalidate(&keys).await?;
                    applied.deleted += keys.len() as u64;
                }
                Action::Set { .. } => {
                    // Row images are as fresh as their event: they supersede every read in flight.
                    let ops: Vec<KeyOp> = run
                        .iter()
                        .filter_map(|a| match a {
                            Action::Set { key, value, ttl } => Some(KeyOp::Set {
                                key: key.clone(),
                                value: value.clone(),
                                ttl: *ttl,
                                read: None,
                            }),
                            _ => None,
                        })
                        .collect();
                    self.cache.supersede(&ops).await?;
                    applied.projected += ops.len() as u64;
                }
                Action::DeletePattern(_) => {
                    for action in &run {
                        if let Action::DeletePattern(pattern) = action {
                            applied.pattern_deleted += self.delete_pattern(pattern).await?;
                        }
                    }
                }
                Action::Refresh(_) => {
                    // Different keys (a run is deduplicated) are independent: refresh a few at once, each with its
                    // own connection round trips, instead of one after another.
                    let keys: Vec<String> = run
                        .iter()
                        .filter_map(|a| match a {
                            Action::Refresh(key) => Some(key.clone()),
                            _ => None,
                        })
                        .collect();
                    for chunk in keys.chunks(CONCURRENT_REFRESHES) {
                        let mut pending = Vec::with_capacity(chunk.len());
                        for key in chunk {
                            pending.push(self.refresh_one(key.clone()));
                        }
                        for one in futures_util::future::join_all(pending).await {
                            let one = one?;
                            applied.refreshed += one.refreshed;
                            applied.refresh_deleted += one.refresh_deleted;
                            applied.warms += one.warms;
                        }
                    }
                }
                Action::Warm(_) => {
                    for action in &run {
                        if let Action::Warm(job) = action {
                            self.warm(job);
                            applied.warms += 1;
                        }
                    }
                }
            }
            index = end;
        }
        metrics::record_invalidations(&applied);
        Ok(applied)
    }

    /// SCAN + UNLINK, stopping at `max_keys_per_pattern`.
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        let (deleted, cut_short) = self.cache.delete_matching(pattern, self.max_keys_per_pattern).await?;
        if cut_short {
            warn!(
                pattern,
                deleted,
                limit = self.max_keys_per_pattern,
                "Pattern delete stopped at max_keys_per_pattern; the remaining keys were left alone."
            );
        }
        Ok(deleted)
    }

    fn warm(&self, job: &str) {
        let trigger = Trigger::Warm {
            job: Arc::from(job),
            reason: TriggerReason::Manual,
        };
        if self.triggers.try_send(trigger).is_err() {
            warn!(job, "Trigger queue is full; the requested warm run was dropped.");
        }
    }

    async fn refresh_one(&self, key: String) -> Result<Applied, InvalidateError> {
        let mut applied = Applied::default();
        self.refresh(&key, &mut applied).await?;
        Ok(applied)
    }

    async fn refresh(&self, key: &str, applied: &mut Applied) -> Result<(), InvalidateError> {
        let jobs = self.jobs.borrow().clone();
        if let Some(job) = jobs.iter().find(|job| job.key.single_key().as_deref() == Some(key)) {
            // The whole result is one key: refreshing it is running the job.
            self.warm(&job.name);
            applied.warms += 1;
            return Ok(());
        }
        let Some(job) = jobs.iter().find(|job| job.key.capture(key).is_some()) else {
            debug!(key, "No job renders this key; deleting it instead of refreshing.");
            return self.delete_for_refresh(key, applied).await;
        };
        if job.refresh_query.is_none() {
            debug!(key, job = %job.name, "Job has no refresh_query; deleting the key instead.");
            return self.delete_for_refresh(key, applied).await;
        }
        // The read holds a lease until its write has landed, so that invalidations meanwhile leave markers.
        let lease = self.cache.begin_read(job.timeout).await?;
        let refreshed = self.refresh_from_database(job, key, &lease, applied).await;
        self.cache.end_read(lease).await;
        refreshed
    }

    async fn refresh_from_database(
        &self,
        job: &WarmJob,
        key: &str,
        lease: &ReadLease,
        applied: &mut Applied,
    ) -> Result<(), InvalidateError> {
        // Invalidate first, read after: a value read before this point can no longer land, and ours carries the
        // version of this invalidation, so a later refresh of the same key wins over it.
        let read_at = self.cache.invalidate(&[key.to_string()]).await?;
        let rendered = match render_from_database(&self.db, job, key).await {
            Ok(rendered) => rendered,
            Err(RenderError::Plan(error)) => return self.refresh_failed(key, job, error, applied).await,
            Err(RenderError::Database(error)) => return Err(error.into()),
        };
        match rendered {
            Some(value) if value.len() <= job.max_value_bytes => {
                let ttl = job.ttl.pick(job.jitter, fastrand::f64());
                self.cache
                    .apply(&[KeyOp::Set {
                        key: key.to_string(),
                        value,
                        ttl,
                        read: lease.stamp(read_at),
                    }])
                    .await?;
                applied.refreshed += 1;
                Ok(())
            }
            Some(value) => {
                warn!(
                    key,
                    size = value.len(),
                    limit = job.max_value_bytes,
                    "Refreshed value exceeds max_value_bytes; deleting the key."
                );
                self.delete_for_refresh(key, applied).await
            }
            // The row is gone (or no longer renders this key): the key must go too.
            None => self.delete_for_refresh(key, applied).await,
        }
    }

    async fn refresh_failed(
        &self,
        key: &str,
        job: &WarmJob,
        error: PlanError,
        applied: &mut Applied,
    ) -> Result<(), InvalidateError> {
        warn!(key, job = %job.name, %error, "refresh_query cannot render this key; deleting it instead.");
        self.delete_for_refresh(key, applied).await
    }

    async fn delete_for_refresh(&self, key: &str, applied: &mut Applied) -> Result<(), InvalidateError> {
        self.cache.invalidate(&[key.to_string()]).await?;
        applied.refresh_deleted += 1;
        Ok(())
    }
}
