//! The scheduler: fires each enabled warm job on its cron schedule by sending a [`Trigger`]; it never runs a job
//! itself, so a slow or panicking job cannot disturb the clock. Built on tokio-cron-scheduler (UTC schedules).
//!
//! Follows the job set through a `watch` channel: on reload, removed and rescheduled jobs are unscheduled, new and
//! rescheduled ones are added, unchanged ones keep their place. Runs in progress are the executor's business and
//! are never touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use crate::pure::model::{Trigger, TriggerReason, WarmJob};
use crate::pure::trigger::send;

/// Sends warm triggers on schedule.
pub(crate) struct Scheduler {
    jobs: watch::Receiver<Arc<[WarmJob]>>,
    triggers: mpsc::Sender<Trigger>,
    /// Job name → (cron expression, scheduler id) of what is scheduled now.
    scheduled: HashMap<Arc<str>, (String, Uuid)>,
    run_on_start: bool,
}

impl Scheduler {
    /// A scheduler for the enabled jobs in `jobs`, now and after every reload.
    pub(crate) fn new(jobs: watch::Receiver<Arc<[WarmJob]>>, triggers: mpsc::Sender<Trigger>) -> Self {
        Self {
            jobs,
            triggers,
            scheduled: HashMap::new(),
            run_on_start: true,
        }
    }

    /// Whether `run_on_start` jobs fire when the scheduler starts (not when an HA standby takes over: the cache is
    /// already warm). Jobs added by a reload always do.
    pub(crate) fn run_on_start(mut self, fire: bool) -> Self {
        self.run_on_start = fire;
        self
    }

    /// Fires `run_on_start` jobs, then each job on its schedule, until `shutdown` is cancelled.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Result<(), JobSchedulerError> {
        let mut scheduler = JobScheduler::new().await?;
        let mut current = self.jobs.borrow_and_update().clone();
        // Jobs counted as known fire only on their schedule.
        let known = if self.run_on_start {
            HashSet::new()
        } else {
            jobs_names(&current)
        };
        self.sync(&mut scheduler, &current, &known).await?;
        scheduler.start().await?;
        info!(jobs = self.scheduled.len(), "Scheduler started.");
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = self.jobs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let known = jobs_names(&current);
                    current = self.jobs.borrow_and_update().clone();
                    self.sync(&mut scheduler, &current, &known).await?;
                    info!(jobs = self.scheduled.len(), "Schedule updated.");
                }
            }
        }
        scheduler.shutdown().await?;
        Ok(())
    }

    /// Makes the scheduled set match `jobs`. Jobs not in `known` (all of them at start) fire now if `run_on_start`.
    async fn sync(
        &mut self,
        scheduler: &mut JobScheduler,
        jobs: &[WarmJob],
        known: &HashSet<Arc<str>>,
    ) -> Result<(), JobSchedulerError> {
        let wanted: HashMap<&Arc<str>, &WarmJob> = jobs
            .iter()
            .filter(|job| job.enabled)
            .map(|job| (&job.name, job))
            .collect();
        let stale: Vec<Arc<str>> = self
            .scheduled
            .iter()
            .filter(|(name, (cron, _))| wanted.get(name).is_none_or(|job| &job.schedule.cron != cron))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, id)) = self.scheduled.remove(&name) {
                scheduler.remove(&id).await?;
            }
        }
        for job in wanted.values() {
            if self.scheduled.contains_key(&job.name) {
                continue;
            }
            let id = scheduler.add(self.cron_job(job)?).await?;
            self.scheduled.insert(job.name.clone(), (job.schedule.cron.clone(), id));
            if job.run_on_start && !known.contains(&job.name) {
                send(&self.triggers, job.name.clone(), TriggerReason::Startup);
            }
        }
        Ok(())
    }

    fn cron_job(&self, job: &WarmJob) -> Result<Job, JobSchedulerError> {
        let triggers = self.triggers.clone();
        let name = job.name.clone();
        Job::new_async(job.schedule.cron.as_str(), move |_id, _scheduler| {
            let triggers = triggers.clone();
            let name = name.clone();
            Box::pin(async move {
                send(&triggers, name, TriggerReason::Schedule);
            })
        })
    }
}

fn jobs_names(jobs: &[WarmJob]) -> HashSet<Arc<str>> {
    jobs.iter().map(|job| job.name.clone()).collect()
}
