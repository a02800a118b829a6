//! Every metric's help text and unit, as `/metrics` shows them: the catalogue in one place (docs/operations.md
//! lists the same names).

use metrics::{KeyName, SharedString, Unit};

/// Every counter's name and help text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "cachewarden_warm_runs_total",
        "Warm job runs by outcome (success, failure after its retries, skipped).",
    ),
    (
        "cachewarden_protection_degraded_total",
        "Keys invalidated by a plain delete because Redis refused stale-set protection's bookkeeping, by reason \
         (out_of_memory: maxmemory reached under noeviction).",
    ),
    (
        "cachewarden_other_type_keys_total",
        "Keys a write found holding another Redis type than its job writes (the job's type changed, or two jobs \
         write one key): written over as the job's type, or deleted by a set's member change.",
    ),
    (
        "cachewarden_binlog_statements_total",
        "Statements logged without row images (TRUNCATE, DROP, RENAME, partitions, statement-logged DML) on tables \
         the rules follow, by kind: their keys deleted, or recovered as after a gap.",
    ),
    (
        "cachewarden_binlog_checkpoint_rewinds_total",
        "Times the binlog resumed from the position saved last because Redis lost or rolled back its checkpoint.",
    ),
    (
        "cachewarden_binlog_lookup_keys_total",
        "Keys a derived join rule's lookup found to refresh or delete after a change in a joined table.",
    ),
    (
        "cachewarden_binlog_lookup_rewarms_total",
        "Jobs re-run instead of a derived join rule's lookup, by reason (fanout over max_fanout, query_refused).",
    ),
    (
        "cachewarden_warm_attempts_total",
        "Warm job attempts by outcome (success, failure); a run retried after transient errors has several.",
    ),
    ("cachewarden_warm_rows_total", "Rows read by warm queries."),
    ("cachewarden_warm_keys_written_total", "Keys written by warm jobs."),
    (
        "cachewarden_warm_keys_pruned_total",
        "Keys deleted after a run a change asked for because its query no longer returned them.",
    ),
    (
        "cachewarden_warm_bytes_written_total",
        "Value bytes written by warm jobs, as stored (after compression).",
    ),
    (
        "cachewarden_warm_bytes_rendered_total",
        "The same values' bytes as rendered JSON, before compression.",
    ),
    (
        "cachewarden_warm_values_skipped_total",
        "Values not written, by reason.",
    ),
    ("cachewarden_redis_errors_total", "Failed Redis operations."),
    (
        "cachewarden_guarded_batches_total",
        "Write batches under stale-set protection, by how they were written (optimistic, discarded, script, refused).",
    ),
    ("cachewarden_mysql_errors_total", "Failed MySQL operations."),
    (
        "cachewarden_redis_evicted_keys_total",
        "Redis INFO stats evicted_keys, sampled: keys Redis dropped under maxmemory (the cache's own or cachewarden's).",
    ),
    (
        "cachewarden_redis_keyspace_hits_total",
        "Redis INFO stats keyspace_hits, sampled (rate() over a window gives the hit ratio with the misses).",
    ),
    (
        "cachewarden_redis_keyspace_misses_total",
        "Redis INFO stats keyspace_misses, sampled.",
    ),
    ("cachewarden_config_reloads_total", "Configuration reloads by outcome."),
    (
        "cachewarden_admin_connections_shed_total",
        "Admin connections closed at the connection cap to make room for new ones.",
    ),
    (
        "cachewarden_channel_messages_total",
        "Invalidation messages by outcome (applied, refused).",
    ),
    (
        "cachewarden_channel_refused_total",
        "Refused invalidation messages by reason.",
    ),
    (
        "cachewarden_channel_gaps_total",
        "Pub/sub reconnects after which messages may have been lost.",
    ),
    (
        "cachewarden_channel_overflows_total",
        "Pub/sub subscriptions dropped because applying fell behind by more than the queue holds.",
    ),
    (
        "cachewarden_invalidated_keys_total",
        "Keys changed by invalidations, by action.",
    ),
    (
        "cachewarden_invalidation_warm_runs_total",
        "Warm runs asked for by invalidation messages.",
    ),
    (
        "cachewarden_cache_misses_total",
        "Keys of each job Redis reported missing (keyspace notifications, [misses]).",
    ),
    (
        "cachewarden_cache_misses_ignored_total",
        "Reported misses of keys no job's template fits (ignored).",
    ),
    (
        "cachewarden_cache_fills_total",
        "Missed keys loaded (fill_on_miss): written, absent (no row; not read again for negative_ttl), or failed.",
    ),
    (
        "cachewarden_cache_fills_skipped_total",
        "Misses not filled: recent (filled under a second ago), absent (negative cache), queue_full, not_allowed.",
    ),
    (
        "cachewarden_cache_fill_batches_total",
        "Batches of fills; each reads its keys in one statement per job (up to 1,024 keys).",
    ),
    (
        "cachewarden_refresh_fallback_keys_total",
        "Refreshes the reader endpoint did not show within refresh_wait, read from refresh_fallback and written.",
    ),
    (
        "cachewarden_dead_letters_total",
        "Refused channel messages and binlog rule errors, by source and reason (kept in [daemon] dead_letter).",
    ),
    (
        "cachewarden_dead_letters_dropped_total",
        "Dead letters lost: the writer's queue was full or Redis refused them.",
    ),
    ("cachewarden_binlog_transactions_total", "Binlog transactions applied."),
    ("cachewarden_binlog_rows_total", "Binlog row events applied."),
    ("cachewarden_binlog_batches_total", "Batches of binlog changes applied."),
    (
        "cachewarden_binlog_batch_keys_total",
        "Distinct keys and patterns the applied batches came down to after coalescing.",
    ),
    (
        "cachewarden_ha_transitions_total",
        "With [ha]: times this instance became leader or stopped being leader.",
    ),
    (
        "cachewarden_binlog_gaps_total",
        "Binlog gaps (purged or missing checkpoint) recovered from.",
    ),
    (
        "cachewarden_binlog_rule_errors_total",
        "Row changes an [[on_change]] rule could not turn into keys (a template names a missing column).",
    ),
    (
        "cachewarden_warm_pieces_total",
        "Pieces of partitioned warm runs this instance ran, by job and outcome (done; failed: given back for another \
         attempt; lost: its claim ran out and went to another instance).",
    ),
    (
        "cachewarden_refresh_given_up_total",
        "Refreshed keys deleted instead of written, by reason (unverified: the read never showed the change; \
         outdated: a backlog's change the read did not show; query_refused: the refresh query failed definitely; \
         out_of_memory: Redis full; refused: the write refused three reads in a row, the lease's bookkeeping \
         evicted).",
    ),
    ("cachewarden_stale_keys_total", "Stale keys found by audits."),
    (
        "cachewarden_audit_failures_total",
        "Audits of the job that failed (a query or Redis error); tried again next period.",
    ),
    (
        "cachewarden_audit_repaired_keys_total",
        "Stale keys the audit repaired (audit_repair = true).",
    ),
];

/// Every gauge's name and help text.
const GAUGES: &[(&str, &str)] = &[
    (
        "cachewarden_warm_last_success_timestamp_seconds",
        "Unix time of each job's last successful run.",
    ),
    ("cachewarden_redis_up", "1 when the last Redis health check succeeded."),
    ("cachewarden_mysql_up", "1 when the last MySQL health check succeeded."),
    (
        "cachewarden_binlog_connected",
        "1 while the binlog stream is being read.",
    ),
    (
        "cachewarden_binlog_following",
        "1 while this instance follows the binlog source (without [ha]; while it leads; under work sharing, while it holds the source).",
    ),
    (
        "cachewarden_binlog_lag_seconds",
        "Age of the last row event read from the binlog (0 once the server reports nothing more to send).",
    ),
    (
        "cachewarden_binlog_retention_seconds",
        "How long the server keeps binlog files (+Inf: never purged; NaN: unknown), read at each connection.",
    ),
    (
        "cachewarden_cache_misses_reported",
        "1 when every node followed reports key misses (notify-keyspace-events has E and m), else 0.",
    ),
    (
        "cachewarden_binlog_last_applied_timestamp_seconds",
        "Unix time the last binlog batch was applied.",
    ),
    (
        "cachewarden_binlog_last_heard_timestamp_seconds",
        "Unix time the server last sent anything (an event or an idle heartbeat); old means the stream is stuck.",
    ),
    (
        "cachewarden_binlog_apply_failing",
        "1 while applying binlog changes fails (nothing more is read meanwhile).",
    ),
    (
        "cachewarden_binlog_checkpoint_failing",
        "1 while the checkpoint store refuses the binlog checkpoint (Redis full, its disk full or failing); changes are still applied.",
    ),
    (
        "cachewarden_binlog_checkpoint_timestamp_seconds",
        "Unix time the binlog checkpoint was last saved.",
    ),
    (
        "cachewarden_ha_leader",
        "With [ha]: 1 while this instance holds the lease (runs the producers and writes), 0 as standby.",
    ),
    (
        "cachewarden_binlog_checkpoint_position",
        "Offset of the saved binlog checkpoint in its file.",
    ),
    (
        "cachewarden_consistency_ratio",
        "Share of the job's cached keys equal to what its query renders, in its last audit (absent before one).",
    ),
    (
        "cachewarden_audit_keys_checked",
        "Keys the job's last audit compared (every key its query returns).",
    ),
    (
        "cachewarden_audit_wrong_keys",
        "Keys cached with another value than the query renders, in the last audit.",
    ),
    (
        "cachewarden_audit_orphaned_keys",
        "Cached keys of the job's template the query no longer returns, in the last audit.",
    ),
    (
        "cachewarden_audit_missing_keys",
        "Keys the query returns that were not cached, in the last audit.",
    ),
    (
        "cachewarden_audit_last_sweep_timestamp_seconds",
        "Unix time the job's last audit ended.",
    ),
    (
        "cachewarden_audit_orphans_checked",
        "1 when the job's last audit looked for every orphaned key, 0 when it could not (see the log).",
    ),
    ("cachewarden_build_info", "Always 1; the labels say which build runs."),
    (
        "cachewarden_warm_job_keys",
        "The job's keys in Redis, estimated from the last keyspace sample (0 before it).",
    ),
    (
        "cachewarden_warm_job_memory_bytes",
        "The memory of the job's keys in Redis (MEMORY USAGE), estimated from the last keyspace sample (0 before it).",
    ),
    (
        "cachewarden_keyspace_sample_keys",
        "Keys drawn by the last keyspace sample (per node at most 1000; 0 before the first).",
    ),
    (
        "cachewarden_keyspace_sample_timestamp_seconds",
        "When the last keyspace sample was taken (Unix seconds; 0 before the first).",
    ),
];

/// Every histogram's name and help text.
const HISTOGRAMS: &[(&str, &str)] = &[
    ("cachewarden_warm_duration_seconds", "Duration of successful warm runs."),
    (
        "cachewarden_cache_fill_seconds",
        "From a miss reaching cachewarden to its key written.",
    ),
];

/// The unit of every series that has one.
const UNITS: &[(&str, Unit)] = &[
    ("cachewarden_warm_duration_seconds", Unit::Seconds),
    ("cachewarden_warm_bytes_written_total", Unit::Bytes),
    ("cachewarden_warm_bytes_rendered_total", Unit::Bytes),
    ("cachewarden_warm_last_success_timestamp_seconds", Unit::Seconds),
    ("cachewarden_binlog_lag_seconds", Unit::Seconds),
    ("cachewarden_binlog_retention_seconds", Unit::Seconds),
    ("cachewarden_cache_fill_seconds", Unit::Seconds),
    ("cachewarden_binlog_last_applied_timestamp_seconds", Unit::Seconds),
    ("cachewarden_binlog_last_heard_timestamp_seconds", Unit::Seconds),
    ("cachewarden_binlog_checkpoint_timestamp_seconds", Unit::Seconds),
    ("cachewarden_audit_last_sweep_timestamp_seconds", Unit::Seconds),
];

/// Gives every series of the catalogue its help text and unit in the installed recorder.
pub(super) fn describe() {
    let unit = |name: &str| UNITS.iter().find(|(known, _)| *known == name).map(|&(_, unit)| unit);
    let entries = |list: &'static [(&'static str, &'static str)]| {
        list.iter()
            .map(move |&(name, help)| (KeyName::from_const_str(name), unit(name), SharedString::const_str(help)))
    };
    metrics::with_recorder(|recorder| {
        for (key, unit, help) in entries(COUNTERS) {
            recorder.describe_counter(key, unit, help);
        }
        for (key, unit, help) in entries(GAUGES) {
            recorder.describe_gauge(key, unit, help);
        }
        for (key, unit, help) in entries(HISTOGRAMS) {
            recorder.describe_histogram(key, unit, help);
        }
    });
}
