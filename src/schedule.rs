//! The scheduler: fires each enabled warm job on its cron schedule by sending a [`Trigger`]; it never runs a job
//! itself, so a slow or panicking job cannot disturb the clock. Built on tokio-cron-scheduler (UTC schedules).

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::model::{Trigger, TriggerReason, WarmJob};

/// Sends warm triggers on schedule.
pub struct Scheduler {
    jobs: Vec<WarmJob>,
    triggers: mpsc::Sender<Trigger>,
}

impl Scheduler {
    /// A scheduler for the enabled jobs among `jobs`.
    pub fn new(jobs: &[WarmJob], triggers: mpsc::Sender<Trigger>) -> Self {
        Self {
            jobs: jobs.iter().filter(|job| job.enabled).cloned().collect(),
            triggers,
        }
    }

    /// Fires `run_on_start` jobs, then each job on its schedule, until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JobSchedulerError> {
        let mut scheduler = JobScheduler::new().await?;
        for job in &self.jobs {
            let triggers = self.triggers.clone();
            let name = job.name.clone();
            let cron_job = Job::new_async(job.schedule.cron.as_str(), move |_id, _scheduler| {
                let triggers = triggers.clone();
                let name = name.clone();
                Box::pin(async move { send(&triggers, name, TriggerReason::Schedule) })
            })?;
            scheduler.add(cron_job).await?;
        }
        scheduler.start().await?;
        info!(jobs = self.jobs.len(), "Scheduler started.");
        for job in self.jobs.iter().filter(|job| job.run_on_start) {
            send(&self.triggers, job.name.clone(), TriggerReason::Startup);
        }
        shutdown.cancelled().await;
        scheduler.shutdown().await?;
        Ok(())
    }
}

/// Sends without waiting: when the executor is backed up, the fire is dropped (the next one comes soon) rather
/// than queued without bound.
fn send(triggers: &mpsc::Sender<Trigger>, job: std::sync::Arc<str>, reason: TriggerReason) {
    if let Err(error) = triggers.try_send(Trigger::Warm {
        job: job.clone(),
        reason,
    }) {
        warn!(job = %job, %reason, %error, "Could not queue a warm trigger; this fire was dropped.");
    }
}
