//! Keys and memory per warm job, estimated from a sample of the keyspace once a minute: per Redis node, up to
//! [`PER_NODE`] keys (every key of a smaller node, else drawn at random), each matched against the jobs' key patterns
//! and measured with `MEMORY USAGE`; a job's share of the sample times the node's key count is its estimate. A job
//! with one fixed key is measured exactly. Exported as gauges and shown on the status page.
//!
//! A job whose keys are fewer than about one in [`PER_NODE`] of a node's keys may be missed by a sample; the page
//! says how many keys the estimate rests on. Redis's ACL may refuse `DBSIZE`, `RANDOMKEY` or `MEMORY USAGE`: then it
//! is said once, and nothing is estimated (the rest of the daemon is not concerned).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::exec::cache::{Cache, NodeSample};
use crate::pure::glob::{allow_pattern, glob_match};
use crate::pure::model::WarmJob;
use crate::telemetry::metrics;

/// Keys drawn per node and sample.
pub(crate) const PER_NODE: usize = 1000;
/// How often the keyspace is sampled.
const PERIOD: Duration = Duration::from_secs(60);
/// The first sample, after start-up's warm runs have begun.
const FIRST_AFTER: Duration = Duration::from_secs(5);

/// One job's estimate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobFootprint {
    pub job: Arc<str>,
    pub keys: f64,
    pub bytes: f64,
}

/// The sampler, as the daemon runs it.
pub(crate) struct Footprint {
    pub cache: Cache,
    pub jobs: watch::Receiver<Arc<[WarmJob]>>,
}

impl Footprint {
    /// Samples every [`PERIOD`] until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut wait = FIRST_AFTER;
        let mut refused_said = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = PERIOD;
            let jobs = self.jobs.borrow().clone();
            match self.sample(&jobs).await {
                Ok((estimates, drawn)) => {
                    metrics::record_footprint(estimates.iter().map(|e| (&*e.job, e.keys, e.bytes)), drawn)
                }
                Err(error) if error.is_server_reply() => {
                    if !refused_said {
                        info!(%error, "Keys and memory per job are not estimated: Redis refuses DBSIZE, RANDOMKEY or MEMORY USAGE (an ACL user needs +dbsize +randomkey +memory|usage for them).");
                        refused_said = true;
                    }
                }
                Err(error) => debug!(%error, "Sampling the keyspace failed; trying again in a minute."),
            }
        }
    }

    /// One sample: the estimates and how many keys were drawn.
    async fn sample(&self, jobs: &[WarmJob]) -> Result<(Vec<JobFootprint>, usize), crate::exec::cache::CacheError> {
        let patterns: Vec<String> = jobs.iter().map(|job| allow_pattern(&job.key)).collect();
        let wanted = |key: &str| patterns.iter().any(|pattern| glob_match(pattern, key));
        let samples = self.cache.sample_keyspace(PER_NODE, wanted).await?;
        let mut estimates = estimate(jobs, &patterns, &samples);
        for (estimate, job) in estimates.iter_mut().zip(jobs) {
            // The key itself (its pattern would escape a literal `*` or `?`).
            if let Some(key) = job.key.single_key() {
                let bytes = self.cache.memory_usage(&key).await?;
                estimate.keys = if bytes.is_some() { 1.0 } else { 0.0 };
                estimate.bytes = bytes.unwrap_or(0) as f64;
            }
        }
        Ok((estimates, samples.iter().map(|sample| sample.drawn).sum()))
    }
}

/// Each job's keys and bytes from `samples`: per node, every measured key matching the job's pattern stands for
/// `keys / drawn` of the node's keys. A key two jobs' patterns match counts for both.
fn estimate(jobs: &[WarmJob], patterns: &[String], samples: &[NodeSample]) -> Vec<JobFootprint> {
    let mut estimates: Vec<JobFootprint> = jobs
        .iter()
        .map(|job| JobFootprint {
            job: job.name.clone(),
            keys: 0.0,
            bytes: 0.0,
        })
        .collect();
    for sample in samples.iter().filter(|sample| sample.drawn > 0) {
        let weight = sample.keys as f64 / sample.drawn as f64;
        for (key, bytes) in &sample.measured {
            for (estimate, pattern) in estimates.iter_mut().zip(patterns) {
                if glob_match(pattern, key) {
                    estimate.keys += weight;
                    estimate.bytes += weight * bytes.unwrap_or(0) as f64;
                }
            }
        }
    }
    estimates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, key: &str) -> WarmJob {
        WarmJob::example(name, key)
    }

    #[test]
    fn each_sampled_key_stands_for_its_share_of_the_nodes_keys() {
        let jobs = [job("products", "product:{id}"), job("users", "user:{id}")];
        let patterns: Vec<String> = jobs.iter().map(|job| allow_pattern(&job.key)).collect();
        let measured = |keys: &[(&str, u64)]| keys.iter().map(|(k, b)| (k.to_string(), Some(*b))).collect();
        let samples = [
            // 4 of 10,000 keys drawn: each stands for 2,500.
            NodeSample {
                keys: 10_000,
                drawn: 4,
                measured: measured(&[("product:1", 100), ("product:2", 60), ("user:7", 40)]),
            },
            // A small node, read whole: each key is itself.
            NodeSample {
                keys: 2,
                drawn: 2,
                measured: measured(&[("user:8", 50)]),
            },
            NodeSample::default(),
        ];
        let estimates = estimate(&jobs, &patterns, &samples);
        assert_eq!(estimates[0].keys, 5_000.0);
        assert_eq!(estimates[0].bytes, 2_500.0 * 160.0);
        assert_eq!(estimates[1].keys, 2_501.0);
        assert_eq!(estimates[1].bytes, 2_500.0 * 40.0 + 50.0);
    }
}
