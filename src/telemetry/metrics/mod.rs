//! Prometheus metrics: their names, what records them, and the exporter `/metrics` renders.
//!
//! Recording goes through the `metrics` facade, which is a no-op until [`install`] sets the global recorder (the
//! daemon does; tests and one-shot commands need not). Every metric name lives here, so the set is reviewable in one
//! place and matches `docs/operations.md`: `describe` holds each one's help text and unit.

mod binlog;
mod describe;
mod initial;
mod process;
mod readings;

pub(crate) use binlog::{BinlogSeries, binlog_checkpoints};
pub(crate) use initial::{Configured, INVALIDATION_ACTIONS, initialise, initialise_jobs};
pub(crate) use process::process_text;
pub(crate) use readings::Readings;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Warm run duration buckets, in seconds: from a 10 ms key lookup to a 10-minute catalog rebuild.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Miss-to-filled buckets, in seconds: from a fill in the same millisecond to one held back by the rate limit.
const FILL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// What the daemon's metrics are read through: the Prometheus text `/metrics` serves, and the same figures in-process
/// for the status page ([`Readings`]).
#[derive(Clone)]
pub struct Exporter {
    prometheus: PrometheusHandle,
    readings: Arc<Readings>,
}

impl Exporter {
    /// The Prometheus text of a scrape, this process's own figures included.
    pub fn render(&self) -> String {
        self.prometheus.run_upkeep();
        let mut text = self.prometheus.render();
        text.push_str(&process_text());
        text
    }

    /// Every counter and gauge, by name and labels.
    pub(crate) fn readings(&self) -> &Readings {
        &self.readings
    }
}

/// Installs the global recorder — the Prometheus exporter and the [`Readings`], fed by the same calls.
pub fn install() -> anyhow::Result<Exporter> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("cachewarden_warm_duration_seconds".into()),
            DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full("cachewarden_cache_fill_seconds".into()), FILL_BUCKETS)?
        .build_recorder();
    let prometheus = recorder.handle();
    let recording = readings::Recording::new(recorder);
    let exporter = Exporter {
        prometheus,
        readings: recording.readings(),
    };
    metrics::set_global_recorder(recording).map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    describe::describe();
    Ok(exporter)
}

/// What a fill did with a key (`cachewarden_cache_fills_total{outcome}`).
pub(crate) const FILL_OUTCOMES: [&str; 3] = ["written", "absent", "failed"];
/// Why a miss was not filled (`cachewarden_cache_fills_skipped_total{reason}`).
pub(crate) const FILL_SKIP_REASONS: [&str; 4] = ["recent", "absent", "queue_full", "not_allowed"];

/// A key of `job` that Redis reported missing.
pub(crate) fn record_miss(job: &str) {
    counter!("cachewarden_cache_misses_total", "warm_job" => job.to_string()).increment(1);
}

/// A reported miss of a key no job's template fits (an application's own key, cachewarden's bookkeeping).
pub(crate) fn record_miss_ignored() {
    counter!("cachewarden_cache_misses_ignored_total").increment(1);
}

/// A miss not filled, and why (one of [`FILL_SKIP_REASONS`]).
pub(crate) fn record_fill_skipped(reason: &'static str) {
    counter!("cachewarden_cache_fills_skipped_total", "reason" => reason).increment(1);
}

/// One batch of fills: keys per outcome (see [`FILL_OUTCOMES`]), and each written key's time from its miss.
pub(crate) fn record_fills(written: &[std::time::Duration], absent: usize, failed: usize) {
    counter!("cachewarden_cache_fill_batches_total").increment(1);
    counter!("cachewarden_cache_fills_total", "outcome" => "written").increment(written.len() as u64);
    counter!("cachewarden_cache_fills_total", "outcome" => "absent").increment(absent as u64);
    counter!("cachewarden_cache_fills_total", "outcome" => "failed").increment(failed as u64);
    let latency = histogram!("cachewarden_cache_fill_seconds");
    for elapsed in written {
        latency.record(elapsed.as_secs_f64());
    }
}

/// Whether every node the miss listener follows reports key misses (`notify-keyspace-events` has `E` and `m`).
pub(crate) fn record_misses_reported(reported: bool) {
    gauge!("cachewarden_cache_misses_reported").set(f64::from(u8::from(reported)));
}

/// Why a refresh left its key deleted (`cachewarden_refresh_given_up_total{reason}`).
const REFRESH_GIVE_UP_REASONS: [&str; 5] = ["unverified", "outdated", "query_refused", "out_of_memory", "refused"];

/// How a warm run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// The job was still running when it fired again.
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Why a warm run skips a value, as `cachewarden_warm_values_skipped_total` labels it (in [`RunFigures`] order).
const SKIP_REASONS: [&str; 3] = ["oversize", "null_key", "invalid"];

/// A successful warm run's figures, as plain numbers (metrics know nothing of the executors).
pub(crate) struct RunFigures {
    pub duration: Duration,
    pub rows: u64,
    pub keys_written: u64,
    pub keys_pruned: u64,
    pub bytes_written: u64,
    pub bytes_rendered: u64,
    pub skipped_oversize: u64,
    pub skipped_null_key: u64,
    pub skipped_invalid: u64,
}

/// Counts one attempt of a warm job (a run retried after transient errors makes several).
pub(crate) fn record_attempt(job: &str, succeeded: bool) {
    let outcome = if succeeded { Outcome::Success } else { Outcome::Failure };
    counter!("cachewarden_warm_attempts_total", "warm_job" => job.to_string(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Records one warm run's outcome (after its retries) and, for a success, its figures.
pub(crate) fn record_run(job: &str, outcome: Outcome, summary: Option<&RunFigures>) {
    let job = job.to_string();
    counter!("cachewarden_warm_runs_total", "warm_job" => job.clone(), "outcome" => outcome.as_str()).increment(1);
    let Some(summary) = summary else {
        return;
    };
    histogram!("cachewarden_warm_duration_seconds", "warm_job" => job.clone()).record(summary.duration.as_secs_f64());
    counter!("cachewarden_warm_rows_total", "warm_job" => job.clone()).increment(summary.rows);
    counter!("cachewarden_warm_keys_written_total", "warm_job" => job.clone()).increment(summary.keys_written);
    counter!("cachewarden_warm_keys_pruned_total", "warm_job" => job.clone()).increment(summary.keys_pruned);
    counter!("cachewarden_warm_bytes_written_total", "warm_job" => job.clone()).increment(summary.bytes_written);
    counter!("cachewarden_warm_bytes_rendered_total", "warm_job" => job.clone()).increment(summary.bytes_rendered);
    let skipped = [
        summary.skipped_oversize,
        summary.skipped_null_key,
        summary.skipped_invalid,
    ];
    for (reason, count) in SKIP_REASONS.into_iter().zip(skipped) {
        counter!("cachewarden_warm_values_skipped_total", "warm_job" => job.clone(), "reason" => reason)
            .increment(count);
    }
    gauge!("cachewarden_warm_last_success_timestamp_seconds", "warm_job" => job).set(unix_now().as_secs_f64());
}

/// Counts a failed Redis operation.
pub(crate) fn redis_error() {
    counter!("cachewarden_redis_errors_total").increment(1);
}

/// How a batch of guarded writes went: `optimistic` (plain SETs in MULTI/EXEC, nothing invalidated since the read),
/// `discarded` (the optimistic EXEC lost to an invalidation; the batch went on through the script), `script` (the
/// guard script), `refused` (the script refused it: the read lease had ended).
pub(crate) fn record_guarded_batch(path: &'static str) {
    counter!("cachewarden_guarded_batches_total", "path" => path).increment(1);
}

/// Counts a failed MySQL operation.
pub(crate) fn mysql_error() {
    counter!("cachewarden_mysql_errors_total").increment(1);
}

/// Records the health checker's view of both servers.
pub(crate) fn record_health(redis_up: bool, mysql_up: bool) {
    gauge!("cachewarden_redis_up").set(f64::from(u8::from(redis_up)));
    gauge!("cachewarden_mysql_up").set(f64::from(u8::from(mysql_up)));
}

/// Records Redis' own keyspace hit and miss counters, as counters: `rate()` over any window gives the hit ratio of
/// that window (a Redis restart resets them, which Prometheus treats as a counter reset).
pub(crate) fn record_keyspace(hits: u64, misses: u64, evicted: u64) {
    counter!("cachewarden_redis_keyspace_hits_total").absolute(hits);
    counter!("cachewarden_redis_keyspace_misses_total").absolute(misses);
    counter!("cachewarden_redis_evicted_keys_total").absolute(evicted);
}

/// Records the keyspace sample's estimates (`ops::footprint`): each job's keys and bytes (`(job, keys, bytes)`), and
/// when and on how many keys the sample was taken.
pub(crate) fn record_footprint<'a>(estimates: impl Iterator<Item = (&'a str, f64, f64)>, drawn: usize) {
    for (job, keys, bytes) in estimates {
        gauge!("cachewarden_warm_job_keys", "warm_job" => job.to_string()).set(keys.round());
        gauge!("cachewarden_warm_job_memory_bytes", "warm_job" => job.to_string()).set(bytes.round());
    }
    gauge!("cachewarden_keyspace_sample_keys").set(drawn as f64);
    gauge!("cachewarden_keyspace_sample_timestamp_seconds").set(unix_now().as_secs_f64());
}

/// Counts a configuration reload.
pub(crate) fn record_reload(applied: bool) {
    let outcome = if applied { "applied" } else { "rejected" };
    counter!("cachewarden_config_reloads_total", "outcome" => outcome).increment(1);
}

/// Counts one refused invalidation message, with the reason.
pub(crate) fn record_message_refused(reason: &'static str) {
    counter!("cachewarden_channel_messages_total", "outcome" => "refused").increment(1);
    counter!("cachewarden_channel_refused_total", "reason" => reason).increment(1);
}

/// Counts invalidation messages whose actions were applied.
pub(crate) fn record_messages_applied(count: u64) {
    counter!("cachewarden_channel_messages_total", "outcome" => "applied").increment(count);
}

/// Counts a pub/sub gap (a reconnect).
pub(crate) fn record_gap() {
    counter!("cachewarden_channel_gaps_total").increment(1);
}

/// Counts a subscription dropped because applying fell too far behind (a gap follows).
pub(crate) fn record_channel_overflow() {
    counter!("cachewarden_channel_overflows_total").increment(1);
}

/// Counts what a batch of invalidations did: keys per action, and warm runs asked for.
pub(crate) fn record_invalidations(keys: &[(&'static str, u64)], warm_runs: u64) {
    for &(action, count) in keys {
        if count > 0 {
            counter!("cachewarden_invalidated_keys_total", "action" => action).increment(count);
        }
    }
    if warm_runs > 0 {
        counter!("cachewarden_invalidation_warm_runs_total").increment(warm_runs);
    }
}

/// Refreshes read from `[binlog] refresh_fallback` (the writer) and written, after the reader lagged.
pub(crate) fn record_refresh_fallback(keys: usize) {
    counter!("cachewarden_refresh_fallback_keys_total").increment(keys as u64);
}

/// A refused message or a rule error kept as a dead letter (or, with dead letters off, only counted).
pub(crate) fn record_dead_letter(source: &'static str, reason: &str) {
    counter!("cachewarden_dead_letters_total", "source" => source, "reason" => reason.to_string()).increment(1);
}

/// A dead letter lost: the writer's queue was full, or Redis refused it.
pub(crate) fn record_dead_letter_dropped() {
    counter!("cachewarden_dead_letters_dropped_total").increment(1);
}

/// With `[ha]`: whether this instance leads now, and whether that is a change of role.
pub(crate) fn record_ha_role(leader: bool, transition: bool) {
    gauge!("cachewarden_ha_leader").set(f64::from(u8::from(leader)));
    if transition {
        counter!("cachewarden_ha_transitions_total").increment(1);
    }
}

/// Counts the keys a derived join rule's lookup found for `job`.
pub(crate) fn record_lookup_keys(job: &str, keys: u64) {
    counter!("cachewarden_binlog_lookup_keys_total", "warm_job" => job.to_string()).increment(keys);
}

/// Counts a job re-run instead of a derived join rule's lookup (`fanout`: over max_fanout; `query_refused`).
pub(crate) fn record_lookup_rewarm(job: &str, reason: &'static str) {
    counter!("cachewarden_binlog_lookup_rewarms_total", "warm_job" => job.to_string(), "reason" => reason).increment(1);
}

/// Counts an admin connection closed at the cap to make room (or refused, every open one being busy).
pub(crate) fn record_admin_shed() {
    counter!("cachewarden_admin_connections_shed_total").increment(1);
}

/// Counts a refresh that could not be verified or whose query failed definitely; the key was deleted instead.
pub(crate) fn record_refresh_given_up(reason: &'static str) {
    counter!("cachewarden_refresh_given_up_total", "reason" => reason).increment(1);
}

/// What became of a piece this instance ran (see [`record_piece`]).
pub(crate) const PIECE_OUTCOMES: [&str; 3] = ["done", "failed", "lost"];

/// Counts a piece of a partitioned warm run this instance ran: `done`, `failed` (given back for another attempt), or
/// `lost` (its claim ran out and went to another instance, or its completion was not counted).
pub(crate) fn record_piece(job: &str, outcome: &'static str) {
    counter!("cachewarden_warm_pieces_total", "warm_job" => job.to_string(), "outcome" => outcome).increment(1);
}

/// Counts keys invalidated without stale-set protection because Redis refused its bookkeeping (`out_of_memory`).
pub(crate) fn record_protection_degraded(reason: &'static str, keys: u64) {
    counter!("cachewarden_protection_degraded_total", "reason" => reason).increment(keys);
}

/// Counts keys a write found holding another Redis type than its job writes (see `exec::cache::replies`).
pub(crate) fn record_other_type(keys: usize) {
    counter!("cachewarden_other_type_keys_total").increment(keys as u64);
}

/// One job's audit, as the metrics record it.
pub(crate) struct AuditFigures<'a> {
    pub job: &'a str,
    pub checked: u64,
    pub wrong: u64,
    pub orphaned: u64,
    pub missing: u64,
    /// Whether the keys the query no longer returns were looked for (all of them).
    pub orphans_checked: bool,
}

/// Records one job's sweep (`audit --all` in the daemon): the keys checked, what was found, when.
pub(crate) fn record_sweep(audit: &AuditFigures<'_>) {
    let job = || audit.job.to_string();
    let stale = audit.wrong + audit.orphaned;
    // Of the keys the job holds — those the query returns and orphans — the share that is right.
    let held = audit.checked + audit.orphaned;
    let ratio = if held == 0 {
        1.0
    } else {
        1.0 - stale as f64 / held as f64
    };
    gauge!("cachewarden_consistency_ratio", "warm_job" => job()).set(ratio);
    counter!("cachewarden_stale_keys_total", "warm_job" => job()).increment(stale);
    gauge!("cachewarden_audit_keys_checked", "warm_job" => job()).set(audit.checked as f64);
    gauge!("cachewarden_audit_wrong_keys", "warm_job" => job()).set(audit.wrong as f64);
    gauge!("cachewarden_audit_orphaned_keys", "warm_job" => job()).set(audit.orphaned as f64);
    gauge!("cachewarden_audit_missing_keys", "warm_job" => job()).set(audit.missing as f64);
    gauge!("cachewarden_audit_orphans_checked", "warm_job" => job()).set(f64::from(u8::from(audit.orphans_checked)));
    gauge!("cachewarden_audit_last_sweep_timestamp_seconds", "warm_job" => job()).set(unix_now().as_secs_f64());
}

/// Counts a job's audit that failed (a query or Redis error); it is tried again next period.
pub(crate) fn record_audit_failed(job: &str) {
    counter!("cachewarden_audit_failures_total", "warm_job" => job.to_string()).increment(1);
}

/// Counts keys the sweep repaired.
pub(crate) fn record_repaired(job: &str, keys: u64) {
    counter!("cachewarden_audit_repaired_keys_total", "warm_job" => job.to_string()).increment(keys);
}

/// Time since the Unix epoch.
pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_cpu_time_has_its_fractions() {
        let cpu = |text: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
                .and_then(|value| value.parse::<f64>().ok())
                .expect("process_cpu_seconds_total")
        };
        let before = cpu(&super::process_text());
        // Busy until the kernel has counted a few ticks (10 ms each): whole seconds would still read the same.
        let started = std::time::Instant::now();
        while cpu(&super::process_text()) < before + 0.03 && started.elapsed() < std::time::Duration::from_secs(5) {}
        let after = cpu(&super::process_text());
        // Counted in hundredths: the first change seen is a few of them, not a whole second.
        assert!(after >= before + 0.03 && after < before + 0.5, "{before} -> {after}");
        assert!(super::process_text().contains("# TYPE process_resident_memory_bytes gauge"));
    }
}
