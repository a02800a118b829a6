//! Every series at zero from the first scrape: what a configuration implies (its jobs, the channel, the binlog,
//! `[ha]`, `[misses]`), with every label value known in advance; a test holds each described metric to it, but for
//! those listed with their reason.

use std::sync::Arc;

use metrics::{counter, gauge};

use super::{FILL_OUTCOMES, FILL_SKIP_REASONS, Outcome, PIECE_OUTCOMES, REFRESH_GIVE_UP_REASONS, SKIP_REASONS};

/// What the daemon is configured with, so that every series exists from the start (a job that has never succeeded
/// shows `last_success` 0, a failure counter starts at 0 so that its first increase is seen).
pub(crate) struct Configured<'a> {
    pub jobs: &'a [&'a str],
    pub channel: bool,
    /// The binlog sources' names.
    pub binlogs: &'a [&'a str],
    pub ha: bool,
    pub misses: bool,
}

/// Creates every series `configured` implies, at zero, and the build info, at start-up.
pub(crate) fn initialise(configured: &Configured<'_>) {
    gauge!(
        "cachewarden_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => option_env!("CACHEWARDEN_COMMIT").unwrap_or("unknown")
    )
    .set(1.0);
    initialise_jobs(configured.jobs, configured.misses);
    gauge!("cachewarden_keyspace_sample_keys").set(0.0);
    gauge!("cachewarden_keyspace_sample_timestamp_seconds").set(0.0);
    if configured.misses {
        gauge!("cachewarden_cache_misses_reported").set(0.0);
        counter!("cachewarden_cache_misses_ignored_total").increment(0);
        counter!("cachewarden_cache_fill_batches_total").increment(0);
        for outcome in FILL_OUTCOMES {
            counter!("cachewarden_cache_fills_total", "outcome" => outcome).increment(0);
        }
        for reason in FILL_SKIP_REASONS {
            counter!("cachewarden_cache_fills_skipped_total", "reason" => reason).increment(0);
        }
    }
    for name in [
        "cachewarden_redis_errors_total",
        "cachewarden_mysql_errors_total",
        "cachewarden_admin_connections_shed_total",
    ] {
        counter!(name).increment(0);
    }
    gauge!("cachewarden_redis_up").set(0.0);
    gauge!("cachewarden_mysql_up").set(0.0);
    for outcome in ["applied", "rejected"] {
        counter!("cachewarden_config_reloads_total", "outcome" => outcome).increment(0);
    }
    for name in [
        "cachewarden_dead_letters_dropped_total",
        "cachewarden_refresh_fallback_keys_total",
        "cachewarden_invalidation_warm_runs_total",
    ] {
        counter!(name).increment(0);
    }
    for action in INVALIDATION_ACTIONS {
        counter!("cachewarden_invalidated_keys_total", "action" => action).increment(0);
    }
    for path in GUARDED_PATHS {
        counter!("cachewarden_guarded_batches_total", "path" => path).increment(0);
    }
    if configured.channel {
        for outcome in ["applied", "refused"] {
            counter!("cachewarden_channel_messages_total", "outcome" => outcome).increment(0);
        }
        for reason in crate::pure::plan::Refusal::REASONS {
            counter!("cachewarden_channel_refused_total", "reason" => reason).increment(0);
        }
        counter!("cachewarden_channel_gaps_total").increment(0);
        counter!("cachewarden_channel_overflows_total").increment(0);
    }
    if configured.ha {
        gauge!("cachewarden_ha_leader").set(0.0);
        counter!("cachewarden_ha_transitions_total").increment(0);
    }
    for source in configured.binlogs {
        super::BinlogSeries::new(&Arc::from(*source)).initialise();
    }
    for reason in REFRESH_GIVE_UP_REASONS {
        counter!("cachewarden_refresh_given_up_total", "reason" => reason).increment(0);
    }
    counter!("cachewarden_protection_degraded_total", "reason" => "out_of_memory").increment(0);
    counter!("cachewarden_other_type_keys_total").increment(0);
}

/// Creates the series of each of `jobs` at zero (at start-up, and for the jobs a reload adds).
pub(crate) fn initialise_jobs(jobs: &[&str], misses: bool) {
    for &job in jobs {
        let job = job.to_string();
        for outcome in [Outcome::Success, Outcome::Failure, Outcome::Skipped] {
            counter!("cachewarden_warm_runs_total", "warm_job" => job.clone(), "outcome" => outcome.as_str())
                .increment(0);
        }
        for outcome in [Outcome::Success, Outcome::Failure] {
            counter!("cachewarden_warm_attempts_total", "warm_job" => job.clone(), "outcome" => outcome.as_str())
                .increment(0);
        }
        // (A job's pieces, should it be partitioned: every instance runs them, whichever leads.)
        for outcome in PIECE_OUTCOMES {
            counter!("cachewarden_warm_pieces_total", "warm_job" => job.clone(), "outcome" => outcome).increment(0);
        }
        for name in [
            "cachewarden_warm_rows_total",
            "cachewarden_warm_keys_written_total",
            "cachewarden_warm_keys_pruned_total",
            "cachewarden_warm_bytes_written_total",
            "cachewarden_warm_bytes_rendered_total",
        ] {
            counter!(name, "warm_job" => job.clone()).increment(0);
        }
        for reason in SKIP_REASONS {
            counter!("cachewarden_warm_values_skipped_total", "warm_job" => job.clone(), "reason" => reason)
                .increment(0);
        }
        gauge!("cachewarden_warm_last_success_timestamp_seconds", "warm_job" => job.clone()).set(0.0);
        gauge!("cachewarden_warm_job_keys", "warm_job" => job.clone()).set(0.0);
        gauge!("cachewarden_warm_job_memory_bytes", "warm_job" => job.clone()).set(0.0);
        // No consistency ratio until the job's first audit: "not audited" is not "consistent".
        counter!("cachewarden_stale_keys_total", "warm_job" => job.clone()).increment(0);
        counter!("cachewarden_audit_repaired_keys_total", "warm_job" => job.clone()).increment(0);
        counter!("cachewarden_audit_failures_total", "warm_job" => job.clone()).increment(0);
        if misses {
            counter!("cachewarden_cache_misses_total", "warm_job" => job).increment(0);
        }
    }
}

/// What an invalidation did to keys (`cachewarden_invalidated_keys_total{action}`; `Applied::counts` names them).
pub(crate) const INVALIDATION_ACTIONS: [&str; 6] = [
    "delete",
    "pattern_delete",
    "refresh",
    "refresh_delete",
    "project",
    "member",
];
/// The paths a guarded batch takes (`cachewarden_guarded_batches_total{path}`).
const GUARDED_PATHS: [&str; 4] = ["optimistic", "script", "refused", "discarded"];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    /// Notes which metrics are described and which series are created.
    #[derive(Default)]
    struct Names {
        described: Mutex<BTreeSet<String>>,
        created: Mutex<BTreeSet<String>>,
    }

    impl Names {
        fn describe(&self, name: KeyName) {
            self.described.lock().unwrap().insert(name.as_str().to_string());
        }

        fn create(&self, key: &Key) {
            self.created.lock().unwrap().insert(key.name().to_string());
        }
    }

    impl Recorder for Names {
        fn describe_counter(&self, name: KeyName, _: Option<Unit>, _: SharedString) {
            self.describe(name);
        }
        fn describe_gauge(&self, name: KeyName, _: Option<Unit>, _: SharedString) {
            self.describe(name);
        }
        fn describe_histogram(&self, name: KeyName, _: Option<Unit>, _: SharedString) {
            self.describe(name);
        }
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.create(key);
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.create(key);
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.create(key);
            Histogram::noop()
        }
    }

    /// What a configuration with every part (a job, the channel, the binlog, `[ha]`, `[misses]`) shows at its first
    /// scrape: every described metric, but for those whose labels name what only happens later.
    #[test]
    fn every_described_metric_exists_from_the_first_scrape() {
        let names = Names::default();
        metrics::with_local_recorder(&names, || {
            super::super::describe::describe();
            super::initialise(&super::Configured {
                jobs: &["products"],
                channel: true,
                binlogs: &["main"],
                ha: true,
                misses: true,
            });
        });
        let described = names.described.into_inner().unwrap();
        let created = names.created.into_inner().unwrap();
        let missing: Vec<&String> = described
            .iter()
            .filter(|name| !created.contains(*name) && !LATER.contains(&name.as_str()))
            .collect();
        assert!(missing.is_empty(), "described but not created at start: {missing:?}");
        // And the exceptions are still described (a renamed metric leaves no stale exception behind).
        for name in LATER {
            assert!(described.contains(*name), "{name} is no longer described");
        }
    }

    /// Series created only once what they count has happened, because a label names it (a table, a dead letter's
    /// reason) or a histogram's first observation creates it.
    const LATER: &[&str] = &[
        // No sweep yet: a ratio or a count would claim an audit that did not happen ("not audited yet").
        "cachewarden_consistency_ratio",
        "cachewarden_audit_keys_checked",
        "cachewarden_audit_wrong_keys",
        "cachewarden_audit_missing_keys",
        "cachewarden_audit_orphaned_keys",
        "cachewarden_audit_orphans_checked",
        "cachewarden_audit_last_sweep_timestamp_seconds",
        // Timestamps and positions of what has not happened: 0 would read as 1970 ("heard 56 years ago").
        "cachewarden_binlog_checkpoint_position",
        "cachewarden_binlog_checkpoint_timestamp_seconds",
        "cachewarden_binlog_last_applied_timestamp_seconds",
        "cachewarden_binlog_last_heard_timestamp_seconds",
        // Read from the server at the first connection (unknown until then).
        "cachewarden_binlog_retention_seconds",
        // Redis's own counters, copied whole at the first health check (2 s): a 0 first would make rate() see the
        // server's whole history as one jump.
        "cachewarden_redis_keyspace_hits_total",
        "cachewarden_redis_keyspace_misses_total",
        "cachewarden_redis_evicted_keys_total",
        // Labelled by what happened: the table of a failing rule, a dead letter's reason, a lookup rule's job.
        "cachewarden_binlog_rule_errors_total",
        "cachewarden_dead_letters_total",
        "cachewarden_binlog_lookup_keys_total",
        "cachewarden_binlog_lookup_rewarms_total",
        // Histograms: created by their first observation.
        "cachewarden_warm_duration_seconds",
        "cachewarden_cache_fill_seconds",
    ];
}
