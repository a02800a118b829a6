//! Follows the MySQL/MariaDB binlog (row events, replication protocol via mysql_async) and turns changed rows into
//! cache actions through the `[[on_change]]` rules.
//!
//! Owns the replication connection and the checkpoint; planning is `plan::plan_change`, applying is the `invalidate`
//! executor's. Changes are applied per transaction: rows are gathered until the XID (or a DDL statement) that ends
//! the transaction, applied, and only then is the position after that event saved, so a crash replays a transaction
//! rather than losing one (at-least-once). A transaction with many rows is applied in batches of `BATCH_ACTIONS` as
//! it streams, so memory stays bounded; its checkpoint still waits for its end.
//!
//! # Failure
//! - A purged position (error 1236) or no checkpoint at all: logged at ERROR (or WARN on a first start), counted as
//!   a gap, the `on_gap` recovery runs for what the rules cover, and reading continues from the current position.
//! - A broken connection or a silent one (no event or heartbeat for twice the heartbeat period): reconnect with
//!   backoff from the checkpoint.
//! - Redis down: the batch is retried with backoff and nothing more is read meanwhile (backpressure).
//! - A server that cannot be followed (binary logging off, not ROW/FULL, compressed MariaDB events, no
//!   replication privileges): a definite error at ERROR, retried every minute.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use mysql_async::binlog::events::EventData;
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable as _;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Value};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{BinlogSettings, BinlogStart, ChangeRule, CheckpointStore, OnGap};
use crate::invalidate::Invalidator;
use crate::metrics;
use crate::model::{KeyOp, Trigger, TriggerReason};
use crate::plan::{self, Action, RowChange, RowImage};
use crate::value::Cell;

/// Actions gathered before a batch is applied mid-transaction (bounded memory for huge transactions).
const BATCH_ACTIONS: usize = 5000;
/// A server that cannot be followed is looked at again this often.
const DEFINITE_RETRY: Duration = Duration::from_secs(60);
/// Connecting and the start-up checks must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a binlog session ended.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    /// The saved position is gone from the server (purged): changes in between are lost to us.
    #[error("binlog position {0} is no longer on the server: {1}")]
    Purged(String, String),
    /// The server cannot be followed as configured; an operator must act.
    #[error("{0}")]
    Definite(String),
    /// A network or server hiccup; reconnecting will do.
    #[error("{0}")]
    Transient(String),
}

impl From<mysql_async::Error> for BinlogError {
    fn from(error: mysql_async::Error) -> Self {
        match &error {
            mysql_async::Error::Server(server) => match server.code {
                // Access denied (user, database, missing REPLICATION privileges), unknown system variable.
                1044 | 1045 | 1227 | 1193 => BinlogError::Definite(error.to_string()),
                _ => BinlogError::Transient(error.to_string()),
            },
            _ => BinlogError::Transient(error.to_string()),
        }
    }
}

/// A binlog position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub pos: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl Position {
    fn parse(text: &str) -> Option<Self> {
        let (file, pos) = text.trim().rsplit_once(':')?;
        Some(Self {
            file: file.to_string(),
            pos: pos.parse().ok()?,
        })
    }
}

/// Follows the binlog.
pub struct BinlogListener {
    pub settings: BinlogSettings,
    pub rules: Arc<[ChangeRule]>,
    pub invalidator: Arc<Invalidator>,
}

impl BinlogListener {
    /// Reads until `shutdown`, reconnecting and recovering as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut state = SessionState::default();
        loop {
            let delay = match self.session(&shutdown, &mut state).await {
                Ok(()) => return,
                Err(BinlogError::Purged(position, message)) => {
                    error!(%position, %message, "Binlog position was purged: changes since it are lost; recovering.");
                    metrics::record_binlog_gap();
                    if !self.recover(&shutdown).await {
                        return;
                    }
                    state.resume_from_current = true;
                    Duration::ZERO
                }
                Err(BinlogError::Definite(message)) => {
                    error!(%message, retry_in = ?DEFINITE_RETRY, "Cannot follow the binlog; fix the server or [binlog].");
                    DEFINITE_RETRY
                }
                Err(BinlogError::Transient(message)) => {
                    let delay = backoff.next_delay();
                    warn!(%message, retry_in = ?delay, "Binlog connection lost; reconnecting from the checkpoint.");
                    delay
                }
            };
            metrics::record_binlog_connected(false);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn session(&self, shutdown: &CancellationToken, state: &mut SessionState) -> Result<(), BinlogError> {
        let opts = Opts::from_url(self.settings.url.expose())
            .map_err(|_| BinlogError::Definite("[binlog] url is not a valid MySQL URL".into()))?;
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
            .await
            .map_err(|_| BinlogError::Transient("connecting for replication timed out".into()))??;
        let mariadb = check_server(&mut conn).await?;
        let current = current_position(&mut conn).await?;

        let saved = if state.resume_from_current {
            // After a purge the saved position is worthless: go on from now (the recovery has run).
            state.resume_from_current = false;
            self.save_checkpoint(&current).await?;
            Some(current.clone())
        } else {
            self.load_checkpoint().await?
        };
        let start = match saved {
            Some(saved) => saved,
            None => {
                let start = match &self.settings.start {
                    BinlogStart::At { file, pos } => Position {
                        file: file.clone(),
                        pos: *pos,
                    },
                    BinlogStart::Current => {
                        warn!(
                            position = %current,
                            "No binlog checkpoint: starting at the current position; recovering what the rules cover."
                        );
                        metrics::record_binlog_gap();
                        if !self.recover(shutdown).await {
                            return Ok(());
                        }
                        current
                    }
                };
                self.save_checkpoint(&start).await?;
                start
            }
        };

        let heartbeat_ns = self.settings.heartbeat.as_nanos();
        conn.query_drop(format!("SET @master_heartbeat_period = {heartbeat_ns}"))
            .await?;
        if mariadb {
            // Without this MariaDB sends its GTID events in a form older clients cannot skip.
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        }
        let request = BinlogStreamRequest::new(self.settings.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|error| classify(error, &start))?;
        info!(position = %start, server_id = self.settings.server_id, "Following the binlog.");
        metrics::record_binlog_connected(true);

        let silence = self.settings.heartbeat * 2 + Duration::from_secs(1);
        let mut file = start.file.clone();
        let mut pending: Vec<Action> = Vec::new();
        let mut in_transaction_rows = 0u64;
        loop {
            for job in state.debounce.due(Instant::now()) {
                self.warm(&job);
            }
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                next = tokio::time::timeout(silence, stream.next()) => next,
            };
            let event = match next {
                Err(_) => {
                    return Err(BinlogError::Transient(format!(
                        "no event or heartbeat for {silence:?}: the connection is dead"
                    )));
                }
                Ok(None) => return Err(BinlogError::Transient("the server closed the binlog stream".into())),
                Ok(Some(Err(error))) => {
                    return Err(classify(error, &Position { file, pos: 0 }));
                }
                Ok(Some(Ok(event))) => event,
            };
            let header = event.header();
            let log_pos = u64::from(header.log_pos());
            let data = event
                .read_data()
                .map_err(|e| BinlogError::Transient(format!("undecodable binlog event: {e}")))?;
            let mut ends_transaction = false;
            match data {
                // The server's artificial rotate (log_pos 0) at the start of a stream comes before the format
                // description, so its name still carries the checksum bytes; it only repeats the file we asked for.
                Some(EventData::RotateEvent(rotate)) if log_pos > 0 => {
                    let name = rotate.name();
                    file = name
                        .split(|c: char| !c.is_ascii_graphic())
                        .next()
                        .unwrap_or_default()
                        .to_string();
                }
                Some(EventData::RowsEvent(rows)) => {
                    metrics::record_binlog_lag(header.timestamp());
                    let Some(tme) = stream.get_tme(rows.table_id()) else {
                        continue;
                    };
                    let (database, table) = (tme.database_name(), tme.table_name());
                    let rules: Vec<&ChangeRule> = self
                        .rules
                        .iter()
                        .filter(|rule| rule.database == database && rule.table == table)
                        .collect();
                    if rules.is_empty() {
                        continue;
                    }
                    let projects = rules.iter().any(|rule| rule.project.is_some());
                    for row in rows.rows(tme) {
                        let (before, after) =
                            row.map_err(|e| BinlogError::Transient(format!("undecodable row event: {e}")))?;
                        let mut change = row_change(before.as_ref(), after.as_ref());
                        if projects && let Some(after) = &after {
                            change.after_json = Some(row_json(after, tme));
                        }
                        in_transaction_rows += 1;
                        for rule in &rules {
                            let plan = plan::plan_change(rule, &change);
                            for column in &plan.missing_columns {
                                if state.reported_missing.insert((rule.table.clone(), column.clone())) {
                                    warn!(
                                        table = %format!("{}.{}", rule.database, rule.table),
                                        column,
                                        "An [[on_change]] template names a column the table does not have; skipping it."
                                    );
                                }
                            }
                            for action in plan.actions {
                                match action {
                                    Action::Warm(job) => {
                                        if state.debounce.admit(&job, rule.debounce, Instant::now()) {
                                            self.warm(&job);
                                        }
                                    }
                                    action => pending.push(action),
                                }
                            }
                        }
                    }
                    if pending.len() >= BATCH_ACTIONS && !self.apply(&mut pending, shutdown).await {
                        return Ok(());
                    }
                }
                // A transaction ends at its XID; DDL and non-transactional statements end one of their own.
                Some(EventData::XidEvent(_)) => ends_transaction = true,
                Some(EventData::QueryEvent(query)) => ends_transaction = query.query() != "BEGIN",
                _ => {}
            }
            if ends_transaction
                && !self
                    .commit(&mut pending, &file, log_pos, &mut in_transaction_rows, shutdown)
                    .await?
            {
                return Ok(());
            }
        }
    }

    /// Applies a finished transaction and saves the position after it. `false` when shutdown interrupted.
    async fn commit(
        &self,
        pending: &mut Vec<Action>,
        file: &str,
        log_pos: u64,
        rows: &mut u64,
        shutdown: &CancellationToken,
    ) -> Result<bool, BinlogError> {
        if !self.apply(pending, shutdown).await {
            return Ok(false);
        }
        if log_pos > 0 {
            self.save_checkpoint(&Position {
                file: file.to_string(),
                pos: log_pos,
            })
            .await?;
        }
        metrics::record_binlog_transaction(*rows);
        *rows = 0;
        Ok(true)
    }

    /// Applies and clears `pending`, retrying while Redis is down. `false` when shutdown came first.
    async fn apply(&self, pending: &mut Vec<Action>, shutdown: &CancellationToken) -> bool {
        if pending.is_empty() {
            return true;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match self.invalidator.apply(pending).await {
                Ok(_) => {
                    pending.clear();
                    return true;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, "Could not apply binlog changes; will retry (not reading meanwhile).");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn warm(&self, job: &str) {
        let trigger = Trigger::Warm {
            job: Arc::from(job),
            reason: TriggerReason::Manual,
        };
        if self.invalidator.triggers.try_send(trigger).is_err() {
            warn!(
                job,
                "Trigger queue is full; the warm run asked for by a change was dropped."
            );
        }
    }

    /// The `on_gap` recovery for everything the rules cover. `false` when shutdown interrupted it.
    async fn recover(&self, shutdown: &CancellationToken) -> bool {
        match self.settings.on_gap {
            OnGap::None => true,
            OnGap::Warm => {
                let jobs = self.invalidator.jobs.borrow().clone();
                for job in jobs.iter().filter(|job| job.enabled) {
                    let pattern = plan::allow_pattern(&job.key);
                    let covered = self.rules.iter().any(|rule| {
                        rule.warm.iter().any(|name| name.as_str() == &*job.name)
                            || rule.refresh.contains(&job.key)
                            || rule
                                .delete
                                .iter()
                                .any(|template| plan::glob_match(&plan::allow_pattern(template), &pattern))
                    });
                    if covered {
                        let trigger = Trigger::Warm {
                            job: job.name.clone(),
                            reason: TriggerReason::Resync,
                        };
                        if self.invalidator.triggers.try_send(trigger).is_err() {
                            warn!(job = %job.name, "Trigger queue is full; the recovery run was dropped.");
                        }
                    }
                }
                true
            }
            OnGap::Flush => {
                let mut actions: Vec<Action> = self
                    .rules
                    .iter()
                    .flat_map(|rule| rule.delete.iter().chain(&rule.refresh))
                    .map(|template| Action::DeletePattern(plan::allow_pattern(template)))
                    .collect();
                actions.dedup();
                self.apply(&mut actions, shutdown).await
            }
        }
    }

    async fn load_checkpoint(&self) -> Result<Option<Position>, BinlogError> {
        let text = match &self.settings.checkpoint {
            CheckpointStore::Redis(key) => self
                .invalidator
                .cache
                .get(key)
                .await
                .map_err(|e| BinlogError::Transient(format!("cannot read the checkpoint from Redis: {e}")))?,
            CheckpointStore::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => {
                    return Err(BinlogError::Definite(format!(
                        "cannot read {}: {error}",
                        path.display()
                    )));
                }
            },
        };
        match text {
            None => Ok(None),
            Some(text) => Position::parse(&text)
                .map(Some)
                .ok_or_else(|| BinlogError::Definite(format!("the saved checkpoint {text:?} is not file:position"))),
        }
    }

    async fn save_checkpoint(&self, position: &Position) -> Result<(), BinlogError> {
        match &self.settings.checkpoint {
            CheckpointStore::Redis(key) => {
                let op = KeyOp::Set {
                    key: key.clone(),
                    value: position.to_string().into_bytes(),
                    ttl: None,
                    read: None,
                };
                self.invalidator
                    .cache
                    .apply(&[op])
                    .await
                    .map_err(|e| BinlogError::Transient(format!("cannot save the checkpoint to Redis: {e}")))?;
            }
            CheckpointStore::File(path) => {
                let temporary = path.with_extension("tmp");
                std::fs::write(&temporary, position.to_string())
                    .and_then(|()| std::fs::rename(&temporary, path))
                    .map_err(|e| BinlogError::Definite(format!("cannot write {}: {e}", path.display())))?;
            }
        }
        metrics::record_binlog_checkpoint(position.pos);
        Ok(())
    }
}

/// What survives reconnects within one run of the listener.
#[derive(Default)]
struct SessionState {
    debounce: Debounce,
    /// (table, column) pairs already reported missing.
    reported_missing: HashSet<(String, String)>,
    /// After a purge: skip the stale checkpoint and start at the server's current position.
    resume_from_current: bool,
}

/// At most one warm run per job and window; a change inside the window schedules one run at its end, so the last
/// change is never left unwarmed.
#[derive(Default)]
struct Debounce {
    last: HashMap<String, Instant>,
    trailing: HashMap<String, Instant>,
}

impl Debounce {
    fn admit(&mut self, job: &str, window: Duration, now: Instant) -> bool {
        match self.last.get(job) {
            Some(&at) if now.duration_since(at) < window => {
                self.trailing.insert(job.to_string(), at + window);
                false
            }
            _ => {
                self.last.insert(job.to_string(), now);
                self.trailing.remove(job);
                true
            }
        }
    }

    fn due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .trailing
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(job, _)| job.clone())
            .collect();
        for job in &due {
            self.trailing.remove(job);
            self.last.insert(job.clone(), now);
        }
        due
    }
}

fn classify(error: mysql_async::Error, position: &Position) -> BinlogError {
    match &error {
        mysql_async::Error::Server(server) if server.code == 1236 => {
            BinlogError::Purged(position.to_string(), server.message.clone())
        }
        _ => error.into(),
    }
}

/// Refuses servers whose binlog cannot be followed correctly. Returns whether it is MariaDB.
async fn check_server(conn: &mut Conn) -> Result<bool, BinlogError> {
    let version: String = conn.query_first("SELECT VERSION()").await?.unwrap_or_default();
    let mariadb = version.contains("MariaDB");
    let expect = [
        ("log_bin", "1", "binary logging is off: start the server with log_bin"),
        ("binlog_format", "ROW", "binlog_format must be ROW"),
        (
            "binlog_row_image",
            "FULL",
            "binlog_row_image must be FULL (both images, every column)",
        ),
        (
            "binlog_row_metadata",
            "FULL",
            "binlog_row_metadata must be FULL, so row events carry column names (MySQL >= 8.0.1, MariaDB >= 10.5)",
        ),
    ];
    for (variable, wanted, advice) in expect {
        let value: Option<String> = conn.query_first(format!("SELECT @@GLOBAL.{variable}")).await?;
        let value = value.unwrap_or_default();
        let matches = match variable {
            "log_bin" => matches!(value.as_str(), "1" | "ON"),
            _ => value.eq_ignore_ascii_case(wanted),
        };
        if !matches {
            return Err(BinlogError::Definite(format!("{advice} (it is {value:?})")));
        }
    }
    if mariadb {
        let compressed: Option<String> = conn.query_first("SELECT @@GLOBAL.log_bin_compress").await?;
        if matches!(compressed.as_deref(), Some("1" | "ON")) {
            return Err(BinlogError::Definite(
                "log_bin_compress must be OFF: compressed MariaDB row events cannot be decoded and would be skipped"
                    .into(),
            ));
        }
    }
    Ok(mariadb)
}

/// The server's current binlog position.
async fn current_position(conn: &mut Conn) -> Result<Position, BinlogError> {
    let row: Option<(String, u64)> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row.map(|row: mysql_async::Row| (row.get(0).unwrap_or_default(), row.get(1).unwrap_or_default())),
        // MySQL 8.4 renamed it.
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await?
            .map(|row: mysql_async::Row| (row.get(0).unwrap_or_default(), row.get(1).unwrap_or_default())),
    };
    match row {
        Some((file, pos)) if !file.is_empty() => Ok(Position { file, pos }),
        _ => Err(BinlogError::Definite(
            "SHOW MASTER STATUS returned nothing: binary logging is off, or the user lacks REPLICATION CLIENT".into(),
        )),
    }
}

/// Both images of a changed row as key text, and which columns differ.
fn row_change(before: Option<&BinlogRow>, after: Option<&BinlogRow>) -> RowChange {
    let image = |row: &BinlogRow| -> RowImage {
        row.columns_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, column)| {
                let value = row.as_ref(i)?;
                Some((column.name_str().into_owned(), key_text(value)))
            })
            .collect()
    };
    let changed = match (before, after) {
        (Some(before), Some(after)) => before
            .columns_ref()
            .iter()
            .enumerate()
            .filter(|(i, _)| before.as_ref(*i) != after.as_ref(*i))
            .map(|(_, column)| column.name_str().into_owned())
            .collect(),
        _ => Vec::new(),
    };
    RowChange {
        before: before.map(image),
        after: after.map(image),
        changed,
        after_json: None,
    }
}

/// Each column of a row as JSON, mapped as warm jobs map the same types (see `value`): numbers, DECIMAL and text
/// as strings, dates ISO-8601 (TIMESTAMP in UTC), JSON embedded, non-UTF-8 bytes in base64.
fn row_json(row: &BinlogRow, tme: &mysql_async::binlog::events::TableMapEvent<'_>) -> HashMap<String, Vec<u8>> {
    row.columns_ref()
        .iter()
        .enumerate()
        .filter_map(|(i, column)| {
            let value = row.as_ref(i)?;
            let column_type = tme.get_column_type(i).ok().flatten();
            Some((column.name_str().into_owned(), json_of(value, column_type)))
        })
        .collect()
}

fn json_of(value: &BinlogValue<'_>, column_type: Option<ColumnType>) -> Vec<u8> {
    use std::borrow::Cow;
    let mut out = Vec::new();
    let cell = match value {
        BinlogValue::Value(value) => match value {
            Value::NULL => Cell::Null,
            Value::Int(seconds) if column_type == Some(ColumnType::MYSQL_TYPE_TIMESTAMP) => {
                Cell::Text(Cow::Owned(utc_timestamp(&seconds.to_string())))
            }
            Value::Int(n) => Cell::Int(*n),
            Value::UInt(n) => Cell::UInt(*n),
            Value::Float(x) => Cell::Float(*x),
            Value::Double(x) => Cell::Double(*x),
            Value::Bytes(bytes) => match column_type {
                Some(ColumnType::MYSQL_TYPE_TIMESTAMP2) => {
                    Cell::Text(Cow::Owned(utc_timestamp(&String::from_utf8_lossy(bytes))))
                }
                Some(ColumnType::MYSQL_TYPE_BIT) if bytes.len() <= 8 => {
                    Cell::UInt(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
                }
                _ => match std::str::from_utf8(bytes) {
                    Ok(text) => Cell::Text(Cow::Borrowed(text)),
                    Err(_) => Cell::Bytes(bytes),
                },
            },
            Value::Date(y, m, d, h, mi, s, us) => {
                let mut text = format!("{y:04}-{m:02}-{d:02}");
                if column_type != Some(ColumnType::MYSQL_TYPE_DATE) {
                    text.push_str(&format!("T{h:02}:{mi:02}:{s:02}"));
                    if *us != 0 {
                        text.push_str(format!(".{us:06}").trim_end_matches('0'));
                    }
                }
                Cell::Text(Cow::Owned(text))
            }
            Value::Time(negative, days, h, mi, s, us) => {
                let hours = u64::from(*days) * 24 + u64::from(*h);
                let mut text = format!("{}{hours:02}:{mi:02}:{s:02}", if *negative { "-" } else { "" });
                if *us != 0 {
                    text.push_str(format!(".{us:06}").trim_end_matches('0'));
                }
                Cell::Text(Cow::Owned(text))
            }
        },
        BinlogValue::Jsonb(json) => {
            let document = json
                .clone()
                .parse()
                .map(serde_json::Value::from)
                .unwrap_or(serde_json::Value::Null);
            out.extend_from_slice(document.to_string().as_bytes());
            return out;
        }
        BinlogValue::JsonDiff(_) => Cell::Null,
    };
    cell.write_json(&mut out);
    out
}

/// `seconds[.micros]` since the epoch as `2026-11-26T08:30:00Z`.
fn utc_timestamp(epoch: &str) -> String {
    let (seconds, micros) = epoch.split_once('.').unwrap_or((epoch, "0"));
    let seconds: i64 = seconds.parse().unwrap_or_default();
    let micros: u32 = micros.parse().unwrap_or_default();
    match chrono::DateTime::from_timestamp(seconds, micros * 1000) {
        Some(at) if micros == 0 => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(at) => {
            let text = at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
            format!("{}Z", text.trim_end_matches('0'))
        }
        None => epoch.to_string(),
    }
}

/// A binlog value as key text, the way warm jobs render the same column (`None` for NULL).
fn key_text(value: &BinlogValue<'_>) -> Option<String> {
    match value {
        BinlogValue::Value(value) => match value {
            Value::NULL => None,
            Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Value::Int(n) => Some(n.to_string()),
            Value::UInt(n) => Some(n.to_string()),
            Value::Float(x) => Some(x.to_string()),
            Value::Double(x) => Some(x.to_string()),
            Value::Date(y, m, d, h, mi, s, us) => {
                let mut text = format!("{y:04}-{m:02}-{d:02}");
                if (*h, *mi, *s, *us) != (0, 0, 0, 0) {
                    text.push_str(&format!("T{h:02}:{mi:02}:{s:02}"));
                }
                Some(text)
            }
            Value::Time(negative, days, h, mi, s, _) => {
                let hours = u64::from(*days) * 24 + u64::from(*h);
                Some(format!("{}{hours:02}:{mi:02}:{s:02}", if *negative { "-" } else { "" }))
            }
        },
        BinlogValue::Jsonb(_) | BinlogValue::JsonDiff(_) => None,
    }
}
