//! The status page's memory: the last hour of the daemon's figures, sampled every [`SAMPLE_EVERY`] from its own
//! metrics and warm runs, for the page's charts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::exec::warm::Warmer;
use crate::telemetry::metrics::Exporter;

/// How often the history takes a sample.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
const KEEP: usize = 360;

/// One sample of the history.
#[derive(Debug, Clone, Default)]
pub(super) struct Sample {
    /// Seconds since the epoch.
    pub(super) at: f64,
    pub(super) binlog_lag: Option<f64>,
    /// Keys changed by invalidations (channel and binlog) since the start, and channel messages applied.
    pub(super) invalidated: f64,
    pub(super) messages: f64,
    /// Warm runs that finished since the previous sample: (job, seconds).
    pub(super) runs: Vec<(String, f64)>,
    /// Redis's own running totals (server-wide, since it started): reads that hit, that missed, keys evicted.
    pub(super) hits: f64,
    pub(super) misses: f64,
    pub(super) evicted: f64,
}

/// The last hour, sampled from the daemon's own metrics and its warm runs.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Samples every [`SAMPLE_EVERY`] until `shutdown`.
    pub(crate) async fn run(
        self: Arc<Self>,
        metrics: Exporter,
        warmer: Arc<std::sync::OnceLock<Arc<Warmer>>>,
        jobs: tokio::sync::watch::Receiver<Arc<[crate::pure::model::WarmJob]>>,
        shutdown: CancellationToken,
    ) {
        let mut seen: HashMap<String, SystemTime> = HashMap::new();
        loop {
            let readings = metrics.readings();
            let mut runs = Vec::new();
            if let Some(warmer) = warmer.get() {
                for job in jobs.borrow().iter() {
                    let stats = warmer.stats(&job.name);
                    let Some(last) = stats.last else { continue };
                    let (Some(summary), true) = (&last.summary, seen.get(&*job.name) != Some(&last.finished_at)) else {
                        continue;
                    };
                    seen.insert(job.name.to_string(), last.finished_at);
                    runs.push((job.name.to_string(), summary.duration.as_secs_f64()));
                }
            }
            self.push(Sample {
                at: epoch_seconds(SystemTime::now()),
                binlog_lag: readings.max("cachewarden_binlog_lag_seconds"),
                invalidated: readings.sum("cachewarden_invalidated_keys_total"),
                messages: readings
                    .get("cachewarden_channel_messages_total", &[("outcome", "applied")])
                    .unwrap_or(0.0),
                runs,
                hits: readings.sum("cachewarden_redis_keyspace_hits_total"),
                misses: readings.sum("cachewarden_redis_keyspace_misses_total"),
                evicted: readings.sum("cachewarden_redis_evicted_keys_total"),
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub(super) fn snapshot(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

pub(super) fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Per-second rates between consecutive samples of a running total.
pub(super) fn rates(samples: &[Sample], total: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|pair| pair[1].at > pair[0].at)
        .map(|pair| {
            (
                pair[1].at,
                ((total(&pair[1]) - total(&pair[0])) / (pair[1].at - pair[0].at)).max(0.0),
            )
        })
        .collect()
}
