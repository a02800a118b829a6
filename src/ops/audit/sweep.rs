//! The daemon's continuous audit: every key of every job checked once per `audit_period`, one job at a time, the jobs
//! spread evenly over the period (so the database sees one warm run's reading per job per period, as if each job
//! were warmed once more). What it finds is exported per job and, with `audit_repair`, repaired on the leader through
//! the invalidator: a wrong key refreshed (or, for a job that cannot read one key, deleted and the job run once more),
//! an orphaned key deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{FullAudit, Slicing, audit_sliced};
use crate::exec::cache::Cache;
use crate::exec::database::Database;
use crate::exec::invalidate::Invalidator;
use crate::pure::model::WarmJob;
use crate::pure::plan::Action;

/// Findings logged one by one per job and sweep; the rest are only counted.
const LOG_FINDINGS: usize = 10;

/// The sweep, as the daemon runs it.
pub(crate) struct Sweeper {
    pub cache: Cache,
    pub db: Database,
    pub jobs: watch::Receiver<Arc<[WarmJob]>>,
    pub period: Duration,
    /// Keys per slice (see `full::Slicing`).
    pub slice: usize,
    /// Repairs go through this; `None`: report only.
    pub repair: Option<Arc<Invalidator>>,
    /// With `[ha]`: this instance's role (only the leader repairs).
    pub role: Option<watch::Receiver<crate::ops::ha::Status>>,
}

impl Sweeper {
    /// Sweeps until `shutdown`: job after job, each given an equal share of the period, within which a job that
    /// returns one row per key is read in slices spread over that share (the first after one share).
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut next = 0usize;
        // Keys each job had at its last sweep: how many slices to spread over its share.
        let mut sizes: HashMap<Arc<str>, u64> = HashMap::new();
        let mut rest = self.period / u32::try_from(self.jobs.borrow().len().max(1)).unwrap_or(u32::MAX);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(rest) => {}
            }
            let jobs = self.jobs.borrow().clone();
            let share = self.period / u32::try_from(jobs.len().max(1)).unwrap_or(u32::MAX);
            rest = share;
            if jobs.is_empty() {
                continue;
            }
            let job = &jobs[next % jobs.len()];
            next = next.wrapping_add(1);
            let expected = match sizes.get(&job.name) {
                Some(keys) => *keys,
                None => self.db.of(job).estimate_rows(&job.query).await.unwrap_or(0),
            };
            let slices = expected.div_ceil(self.slice.max(1) as u64).max(1);
            let slicing = Slicing {
                size: self.slice.max(1),
                pause: share / u32::try_from(slices + 1).unwrap_or(u32::MAX),
            };
            let started = Instant::now();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                audited = audit_sliced(&self.cache, &self.db, job, &jobs, Some(slicing)) => match audited {
                    Ok(audit) => {
                        sizes.insert(job.name.clone(), audit.checked);
                        self.report(job, &audit, started.elapsed()).await
                    }
                    Err(error) => {
                        crate::telemetry::metrics::record_audit_failed(&job.name);
                        warn!(job = %job.name, %error, "The audit of this job failed; it is tried again next period.");
                    }
                },
            }
            rest = share.saturating_sub(started.elapsed());
        }
    }

    async fn report(&self, job: &WarmJob, audit: &FullAudit, took: Duration) {
        crate::telemetry::metrics::record_sweep(&crate::telemetry::metrics::AuditFigures {
            job: &audit.job,
            checked: audit.checked,
            wrong: audit.wrong_count,
            orphaned: audit.orphaned_count,
            missing: audit.missing_count,
            orphans_checked: audit.orphans_unchecked.is_none(),
        });
        if let Some(why) = &audit.orphans_unchecked {
            info!(job = %job.name, why, "Audit: orphaned keys were not (all) looked for.");
        }
        let found = audit.wrong_count + audit.orphaned_count;
        if found == 0 {
            info!(job = %job.name, checked = audit.checked, missing = audit.missing_count, slices = audit.slices, took_ms = took.as_millis() as u64, "Audit: every cached key of the job is right.");
            return;
        }
        let leads = self
            .role
            .as_ref()
            .is_none_or(|role| role.borrow().role == crate::ops::ha::Role::Leader);
        let repair = self.repair.as_ref().filter(|_| leads);
        for finding in audit.wrong.iter().chain(&audit.orphaned).take(LOG_FINDINGS) {
            warn!(
                job = %job.name,
                key = %finding.key,
                cached = finding.cached.as_deref().unwrap_or("(nothing)"),
                database = finding.expected.as_deref().unwrap_or("(no row: the key should not exist)"),
                repaired = repair.is_some(),
                "Audit: a cached key is stale."
            );
        }
        warn!(job = %job.name, checked = audit.checked, wrong = audit.wrong_count, orphaned = audit.orphaned_count, repaired = repair.is_some(), "Audit: stale keys found.");
        let Some(invalidator) = repair else { return };
        let refreshable = job.refresh_query.is_some() && !job.key.is_single_key();
        let mut actions: Vec<Action> = audit
            .wrong
            .iter()
            .map(|finding| {
                if refreshable {
                    Action::Refresh(finding.key.clone())
                } else {
                    Action::Delete(finding.key.clone())
                }
            })
            .collect();
        // Without a refresh path for one key (none, or the job's one key is its whole result), the wrong keys are
        // deleted and the job runs once more to write them right: a miss until the next scheduled run could be hours.
        if !refreshable && !audit.wrong.is_empty() {
            actions.push(Action::Warm(job.name.to_string()));
        }
        actions.extend(audit.orphaned.iter().map(|finding| Action::Delete(finding.key.clone())));
        match invalidator.apply(&actions, &Default::default()).await {
            Ok(_) => {
                crate::telemetry::metrics::record_repaired(&job.name, (audit.wrong.len() + audit.orphaned.len()) as u64)
            }
            Err(error) => {
                warn!(job = %job.name, %error, "Audit: the repairs failed; the next sweep finds the keys again.")
            }
        }
    }
}
