//! One binlog source's series, each labelled with the source's name (`source="main"`), registered once per listener.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, counter, gauge};

use super::unix_now;

/// The statements logged without row images that the binlog recovers from (`cachewarden_binlog_statements_total{kind}`).
pub(crate) const STATEMENT_KINDS: [&str; 5] = ["truncate", "drop", "rename", "partition", "statement_dml"];

/// The last checkpoint each source saved, as saved (`file:pos`, with `gtid=…` where the server has GTIDs): text,
/// which no gauge can carry, for the status page and `/ha`.
static CHECKPOINTS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Each source's last checkpoint saved by this process (by name): none before its first.
pub(crate) fn binlog_checkpoints() -> BTreeMap<String, String> {
    CHECKPOINTS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A source's series: what its listener records. Those at zero from the start are registered once; timestamps,
/// positions and the retention are created by their first reading (a 0 would read as 1970, see `initial`).
#[derive(Clone)]
pub(crate) struct BinlogSeries {
    source: Arc<str>,
    connected: Gauge,
    following: Gauge,
    lag: Gauge,
    transactions: Counter,
    rows: Counter,
    batches: Counter,
    batch_keys: Counter,
    apply_failing: Gauge,
    rewinds: Counter,
    gaps: Counter,
    checkpoint_failing: Gauge,
}

impl BinlogSeries {
    /// The series of the source named `source`. (A no-op until the recorder is installed.)
    pub(crate) fn new(source: &Arc<str>) -> Self {
        let label = || [("source", source.to_string())];
        BinlogSeries {
            source: source.clone(),
            connected: gauge!("cachewarden_binlog_connected", &label()),
            following: gauge!("cachewarden_binlog_following", &label()),
            lag: gauge!("cachewarden_binlog_lag_seconds", &label()),
            transactions: counter!("cachewarden_binlog_transactions_total", &label()),
            rows: counter!("cachewarden_binlog_rows_total", &label()),
            batches: counter!("cachewarden_binlog_batches_total", &label()),
            batch_keys: counter!("cachewarden_binlog_batch_keys_total", &label()),
            apply_failing: gauge!("cachewarden_binlog_apply_failing", &label()),
            rewinds: counter!("cachewarden_binlog_checkpoint_rewinds_total", &label()),
            gaps: counter!("cachewarden_binlog_gaps_total", &label()),
            checkpoint_failing: gauge!("cachewarden_binlog_checkpoint_failing", &label()),
        }
    }

    /// Every series of the source at zero, for the first scrape: no lag known yet (0 beside `connected` 0 and no
    /// `last_heard`) until the stream is read.
    pub(crate) fn initialise(&self) {
        for gauge in [
            &self.connected,
            &self.following,
            &self.lag,
            &self.apply_failing,
            &self.checkpoint_failing,
        ] {
            gauge.set(0.0);
        }
        for counter in [
            &self.transactions,
            &self.rows,
            &self.batches,
            &self.batch_keys,
            &self.gaps,
            &self.rewinds,
        ] {
            counter.increment(0);
        }
        for kind in STATEMENT_KINDS {
            self.statement(kind, 0);
        }
    }

    /// The source's gauge `name`, created by its first reading.
    fn gauge(&self, name: &'static str) -> Gauge {
        gauge!(name, "source" => self.source.to_string())
    }

    /// Whether this instance follows the source: its listener runs (always without `[ha]`; while it leads; under
    /// work sharing, while it holds the source). The other series of a source it does not follow keep their last
    /// readings.
    pub(crate) fn following(&self, following: bool) {
        self.following.set(f64::from(u8::from(following)));
    }

    /// Whether the stream is being read.
    pub(crate) fn connected(&self, connected: bool) {
        self.connected.set(f64::from(u8::from(connected)));
    }

    /// How long the server keeps binlog files (`None`: unknown).
    pub(crate) fn retention(&self, seconds: Option<f64>) {
        self.gauge("cachewarden_binlog_retention_seconds")
            .set(seconds.unwrap_or(f64::NAN));
    }

    /// Replication lag from a row event's timestamp (seconds since the epoch, server clock).
    pub(crate) fn lag(&self, event_timestamp: u32) {
        let lag = unix_now().as_secs_f64() - f64::from(event_timestamp);
        self.lag.set(lag.max(0.0));
    }

    /// Caught up (the server has nothing more to send): no lag.
    pub(crate) fn caught_up(&self) {
        self.lag.set(0.0);
    }

    /// An applied batch: its transactions, row events and the distinct keys and patterns they came down to.
    pub(crate) fn batch(&self, transactions: u64, rows: u64, keys: u64) {
        self.transactions.increment(transactions);
        self.rows.increment(rows);
        self.batches.increment(1);
        self.batch_keys.increment(keys);
        self.gauge("cachewarden_binlog_last_applied_timestamp_seconds")
            .set(unix_now().as_secs_f64());
    }

    /// The server was heard from (an event or a heartbeat) just now.
    pub(crate) fn heard(&self) {
        self.gauge("cachewarden_binlog_last_heard_timestamp_seconds")
            .set(unix_now().as_secs_f64());
    }

    /// Whether applying the source's changes keeps failing (it reads nothing more meanwhile).
    pub(crate) fn apply_failing(&self, failing: bool) {
        self.apply_failing.set(f64::from(u8::from(failing)));
    }

    /// A resume from an earlier position than Redis's checkpoint, or with none there (Redis lost writes).
    pub(crate) fn rewind(&self) {
        self.rewinds.increment(1);
    }

    /// A gap: a purged position or a lost checkpoint.
    pub(crate) fn gap(&self) {
        self.gaps.increment(1);
    }

    /// `count` statements logged without row images that changed tables the rules follow (`kind`: one of
    /// [`STATEMENT_KINDS`]).
    pub(crate) fn statement(&self, kind: &'static str, count: u64) {
        counter!("cachewarden_binlog_statements_total", "source" => self.source.to_string(), "kind" => kind)
            .increment(count);
    }

    /// A row an `[[on_change]]` rule could not plan (a template names a column the table lacks).
    pub(crate) fn rule_error(&self, table: &str) {
        counter!("cachewarden_binlog_rule_errors_total", "source" => self.source.to_string(), "table" => table.to_string())
            .increment(1);
    }

    /// The checkpoint saved: its offset, as saved, and when.
    pub(crate) fn checkpoint(&self, position: u64, saved: String, saved_at: Duration) {
        self.gauge("cachewarden_binlog_checkpoint_position")
            .set(position as f64);
        self.gauge("cachewarden_binlog_checkpoint_timestamp_seconds")
            .set(saved_at.as_secs_f64());
        let mut checkpoints = CHECKPOINTS.lock().unwrap_or_else(|p| p.into_inner());
        checkpoints.insert(self.source.to_string(), saved);
    }

    /// Whether the checkpoint store refuses the checkpoint (Redis full, checkpoint disk full or failing).
    pub(crate) fn checkpoint_failing(&self, failing: bool) {
        self.checkpoint_failing.set(f64::from(u8::from(failing)));
    }
}
