//! Follows the MySQL/MariaDB binlog (row events, replication protocol via mysql_async) and turns changed rows into
//! cache actions through the `[[on_change]]` rules, applied in batches.
//!
//! Owns the replication connection's event loop. The parts: `server` (start-up checks, positions, error kinds),
//! `decode` (row images through the one value mapping), `batch` (coalescing by key, debounce), `checkpoint` (where
//! to resume), `gtid` (GTID positions, MariaDB's and MySQL's), `rows` (a rows event planned into the batch),
//! `statements` (statements logged without rows), `compressed` (compressed events made plain), `holds` (the warm runs the checkpoint waits for), `resume` (where
//! a session starts, how far the checkpoint goes). Planning is `plan::plan_change`; applying is the `invalidate`
//! executor's.
//!
//! # Batches
//! Row events are read as they arrive and gathered across transactions into one batch, coalesced by key (see
//! `batch`). A batch is applied when the stream has nothing more ready (so a lone change waits for nobody), when it
//! holds [`BATCH_KEYS`] keys or [`BATCH_ROWS`] row events, or when its oldest change has waited [`BATCH_WAIT`]. Only
//! after its Redis work succeeded is the position after its last complete transaction saved, so a crash replays at
//! most one batch (at-least-once). A huge transaction is applied in pieces as it streams, in bounded memory; its
//! checkpoint waits for its end.
//!
//! # Failure
//! - A purged position (error 1236) or no checkpoint at all: logged at ERROR (or WARN on a first start), counted as
//!   a gap; the current position is taken and saved *first*, then the `on_gap` recovery runs for what the rules
//!   cover, and reading continues from that position, so nothing committed during the recovery is missed.
//! - Redis lost the checkpoint or rolled it back — restarted without persistence, an evicted key, a failover to a
//!   replica that was behind — and with it, maybe, the invalidations before it. The invariant: **after any session
//!   ends, resume from the earlier of the checkpoint Redis holds and the position this listener saved last (kept in
//!   memory); with none in Redis, from the one in memory** ([`resume_from`]); what is applied twice is idempotent.
//!   The listener compares Redis's checkpoint with its own once a second while busy and at every heartbeat while
//!   idle, and ends the session when they differ, so a loss is repaired within a heartbeat even when nothing else
//!   failed (`cachewarden_binlog_checkpoint_rewinds_total`).
//! - A stop or a crash before a warm run a change asked for has ended (waiting for its debounce window, or running):
//!   the checkpoint is held at the last position before the change until a run of that job asked for after it has
//!   ended (`holds`), so the next start replays that change and asks again.
//! - A broken connection or a silent one (no event or heartbeat for twice the heartbeat period): reconnect with
//!   backoff from the checkpoint; the backoff resets once a session has been healthy for a while.
//! - Redis or MySQL down while applying: the batch is retried with backoff and nothing more is read meanwhile
//!   (backpressure). If that lasts, or the failure is definite (a Redis ACL refusal), the daemon reports itself not
//!   ready (`binlog: …`) and `cachewarden_binlog_apply_failing` is 1 until a retry succeeds.
//! - A server that cannot be followed (binary logging off, not ROW/FULL, partial JSON updates, no
//!   replication privileges, a wrong password): found at start-up by [`preflight`], which stops the daemon (exit
//!   78); later, a definite error at ERROR, not ready, retried every minute.

mod apply;
mod batch;
pub(crate) mod checkpoint;
mod compressed;
pub(crate) mod decode;
mod error;
mod gtid;
mod holds;
pub(crate) mod position;
mod resume;
mod rows;
mod server;
mod session;
mod settings;
mod statements;
mod tracker;
mod url;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::BinlogStreamRequest;
use mysql_async::prelude::Queryable as _;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{BinlogSettings, ChangeRule};
use crate::exec::database::Database;
use crate::exec::invalidate::Invalidator;
use crate::pure::backoff::Backoff;
use crate::pure::plan;
use crate::telemetry::health::Health;
use crate::telemetry::metrics;

use batch::Debounce;
use checkpoint::Position;
pub(crate) use error::{BinlogError, Verdict};
pub(crate) use server::preflight;
pub(crate) use settings::SHORT_RETENTION;
pub(crate) use url::ReplicationUrl;

/// Distinct keys (and patterns) a batch gathers at most before it is applied: bounds memory and one apply's work.
pub(crate) const BATCH_KEYS: usize = 5000;
/// A batch holding this many keys at the end of a transaction is applied then, without waiting for a pause: big
/// transactions go out one by one as before, single-row ones still gather.
pub(crate) const BATCH_ENOUGH_KEYS: usize = 1000;
/// Row events a batch gathers at most, whatever they coalesce to.
pub(crate) const BATCH_ROWS: u64 = 20_000;
/// How long the oldest change of a batch waits at most while more keep arriving: short next to the lag anyone
/// notices, long enough that a write storm is applied in a few large batches rather than per transaction.
pub(crate) const BATCH_WAIT: Duration = Duration::from_millis(10);
/// A stream that sends nothing for this long has paused: the batch is applied. Events of a backlog or a busy primary
/// come microseconds apart; a lone change waits this much at most.
pub(crate) const IDLE_GAP: Duration = Duration::from_millis(1);
/// `cachewarden_binlog_last_heard_timestamp_seconds` is updated at most this often (not per event).
const HEARD_RECORD_EVERY: Duration = Duration::from_secs(1);
/// How often the warm runs the checkpoint waits for are looked up (a lock per waiting job): a checkpoint a little
/// late costs nothing, and events come far more often.
const HOLD_CHECK_EVERY: Duration = Duration::from_millis(50);
/// A server that cannot be followed is looked at again this often.
const DEFINITE_RETRY: Duration = Duration::from_secs(60);

/// A stream opened: where it starts, on what server, and whether by GTID (the server then reads its binlog up to the
/// GTID position before it sends anything, see `session::START_GRACE`).
struct Opened {
    stream: mysql_async::BinlogStream,
    start: Position,
    server: server::ServerTraits,
    by_gtid: bool,
}

/// Follows the binlog.
pub(crate) struct BinlogListener {
    /// `[binlog]`; its `checkpoint` is in `checkpoints`.
    pub settings: BinlogSettings,
    /// Where the listener keeps its position.
    pub checkpoints: checkpoint::Checkpoints,
    /// The replication URL as it is now (`settings.url` at start): a SIGHUP replaces it, and so does reading the
    /// configuration again after an access denied.
    pub url: Arc<ReplicationUrl>,
    pub rules: Arc<[ChangeRule]>,
    pub invalidator: Arc<Invalidator>,
    pub health: Health,
    /// `[binlog] refresh_fallback`: the writer, read once more for refreshes the reader could not show in time.
    pub fallback: Option<Database>,
    /// Where rule errors are kept.
    pub dead_letters: crate::exec::dead_letter::DeadLetters,
    /// The source's series.
    pub series: metrics::BinlogSeries,
}

/// What survives reconnects within one run of the listener.
#[derive(Default)]
struct SessionState {
    debounce: Debounce,
    /// (rule, column) pairs already reported missing.
    reported_missing: HashSet<(usize, String)>,
    /// After a purge: start at the server's current position, then run the recovery.
    resume_from_current: bool,
    /// The last position this listener saved (or started from): where it may resume when Redis lost or rolled back
    /// its checkpoint (see `# Failure`).
    applied: Option<Position>,
    /// When the checkpoint in Redis was last compared with `applied`.
    verified: Option<Instant>,
    /// The newest position whose batch was applied: the checkpoint goes there unless a warm run holds it back
    /// (`holds`) or Redis is too full to save it.
    latest: Option<Position>,
    /// The warm runs changes asked for and the checkpoint waits for (see `holds`).
    holds: holds::Holds,
    /// When `holds` was last compared with the warm runs' ends.
    released: Option<Instant>,
    /// The checkpoint store refused the last checkpoint for space: the stalled cause `/readyz` shows.
    checkpoint_waits: Option<&'static str>,
    /// The session that just ended received an event (it was following, not failing to start).
    followed: bool,
    /// The server's settings warnings were logged (once: every session reads them again).
    settings_warned: bool,
    /// Warm runs changes asked for, requested once the batch holding those changes' deletes is applied: a run that
    /// wrote first would have its fresh keys deleted by them.
    warms_after_apply: Vec<String>,
}

impl BinlogListener {
    /// Reads until `shutdown`, reconnecting and recovering as described in the module docs.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        self.series.following(true);
        self.follow(&shutdown).await;
        self.series.following(false);
        self.series.connected(false);
    }

    /// [`BinlogListener::run`]'s loop.
    async fn follow(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::replication();
        let mut state = SessionState::default();
        loop {
            let started = Instant::now();
            // Boxed: a session's future nests deep (read, batch, apply, refresh), and one starts per connection.
            let ended = Box::pin(self.session(shutdown, &mut state)).await;
            // A session that followed the stream (the server sent it something) was a success: the next outage
            // starts from the shortest delay, however short this session was (a server restarted every few
            // seconds must not push the delay up restart after restart).
            let followed = std::mem::take(&mut state.followed);
            if followed {
                backoff.reset();
            } else {
                backoff.session_ended(started.elapsed());
            }
            let Err(error) = ended else { return };
            let delay = match error.verdict() {
                Verdict::Purged => {
                    error!(%error, "Binlog position was purged: changes since it are lost; recovering.");
                    self.series.gap();
                    state.resume_from_current = true;
                    Duration::ZERO
                }
                Verdict::Reconnect => Duration::ZERO,
                // A rotated password: the configuration read again may hold the new one.
                Verdict::AccessDenied if self.url.reread() => {
                    info!(
                        "The binlog connection was denied access; [binlog] url changed where it is read from: using it."
                    );
                    Duration::ZERO
                }
                Verdict::Definite | Verdict::AccessDenied => {
                    error!(%error, retry_in = ?DEFINITE_RETRY, "Cannot follow the binlog; fix the server, [binlog] or Redis.");
                    self.health.set_stalled(&self.settings.label, Some(error.to_string()));
                    DEFINITE_RETRY
                }
                Verdict::Transient | Verdict::CheckpointWaits(_) => {
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, "Binlog connection lost; reconnecting from the checkpoint.");
                    if !followed && matches!(error.verdict(), Verdict::Transient) {
                        // Its server cannot be reached, or refuses the stream: readiness names the source until a
                        // session starts (the other sources go on meanwhile).
                        let why = format!("cannot follow the binlog: {error}");
                        self.health.set_stalled(&self.settings.label, Some(why));
                    }
                    delay
                }
            };
            self.series.connected(false);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Connects, checks the server, decides where to start — by file offset on the server the offset belongs to, by
    /// GTID on another (after a failover) — and opens the stream. `None` when shutdown interrupted a
    /// recovery.
    async fn open(
        &self,
        shutdown: &CancellationToken,
        state: &mut SessionState,
    ) -> Result<Option<Opened>, BinlogError> {
        let mut conn = server::connect(&self.url.current()).await?;
        let server = server::check_server(&mut conn).await?;
        if !std::mem::replace(&mut state.settings_warned, true) {
            for warning in &server.warnings {
                warn!("The binlog's server: {warning}");
            }
            info!("The binlog's server: {}.", server.retention.can_be_down_for());
            if let Some(identity) = &self.settings.server_id_from {
                info!(
                    server_id = self.settings.server_id,
                    from = %identity,
                    "[binlog] server_id is not set: using this instance's own, derived from its name."
                );
            }
        }
        self.series.retention(server.retention.seconds());
        let current = server::current_position(&mut conn, &server).await?;
        let start = self.start_position(current, shutdown, state).await?;
        let Some(mut start) = start else { return Ok(None) };
        // A position without a file (`binlog set --gtid`) is only a GTID position.
        let here = !start.file.is_empty() && start.server.is_none_or(|id| id == server.server_id);
        if server.gtids && start.gtid.is_none() && here {
            // A checkpoint from before GTIDs were saved (or MariaDB's current position): learn its GTID position
            // while the offset still means it (reading the file up to it: only when needed).
            start = server::with_gtid(&mut conn, start, &server).await?;
        }
        // The offset where it means something — this server's own file, after a restart or a reconnect — and the GTID
        // position where only it does: another server, after a failover. (MariaDB's dump thread is measurably slower
        // to stream to a GTID-connected replica under a write storm, so GTIDs are used only when needed.)
        let gtid = start.gtid.as_ref().filter(|gtid| !gtid.is_empty());
        let by_gtid = server.gtids && !here && gtid.is_some();
        if let Some(gtid) = gtid.filter(|gtid| by_gtid && gtid.is_mysql() == server.mariadb) {
            return Err(BinlogError::Purged {
                position: start.to_string(),
                reason: format!("the checkpoint's GTID position {gtid} is not in this server's form"),
            });
        }
        if !by_gtid && !here {
            // Another server's offset (a failover) and no GTID to translate it: it means nothing here.
            return Err(BinlogError::Purged {
                position: start.to_string(),
                reason: format!(
                    "the checkpoint is an offset on server {:?}, this is server {}",
                    start.server, server.server_id
                ),
            });
        }

        let request = self.stream_request(&mut conn, &start, &server, by_gtid).await?;
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|error| server::classify(error, &start))?;
        info!(position = %start, by_gtid, server_id = self.settings.server_id, "Following the binlog.");
        Ok(Some(Opened {
            stream,
            start,
            server,
            by_gtid,
        }))
    }

    /// Prepares the session (heartbeat, MariaDB's capabilities and GTID state) and the dump request: from the GTID
    /// position when `by_gtid`, else from the file offset.
    async fn stream_request<'s>(
        &self,
        conn: &mut mysql_async::Conn,
        start: &'s Position,
        server: &server::ServerTraits,
        by_gtid: bool,
    ) -> Result<BinlogStreamRequest<'s>, BinlogError> {
        let heartbeat_ns = self.settings.heartbeat.as_nanos();
        // (MySQL 8.4 and later read the second name.)
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {heartbeat_ns}, @source_heartbeat_period = {heartbeat_ns}"
        ))
        .await?;
        if server.mariadb {
            // Without this MariaDB sends its GTID events in a form older clients cannot skip.
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        }
        let request = match (&start.gtid, by_gtid) {
            (Some(gtid), true) if server.mariadb => {
                // MariaDB resumes a GTID-connecting replica after the transactions of @slave_connect_state, wherever
                // they are in its files; the file and offset of the request are ignored.
                conn.query_drop(format!("SET @slave_connect_state = '{gtid}'")).await?;
                conn.query_drop("SET @slave_gtid_strict_mode = 0").await?;
                BinlogStreamRequest::new(self.settings.server_id)
                    .with_filename(b"")
                    .with_pos(4u64)
            }
            // MySQL sends every transaction not in the set (COM_BINLOG_DUMP_GTID).
            (Some(gtid), true) => BinlogStreamRequest::new(self.settings.server_id)
                .with_gtid()
                .with_gtid_set(gtid.mysql_sids())
                .with_filename(b"")
                .with_pos(4u64),
            _ => BinlogStreamRequest::new(self.settings.server_id)
                .with_filename(start.file.as_bytes())
                .with_pos(start.pos),
        };
        Ok(request)
    }

    /// The `on_gap` recovery for everything the rules cover. `false` when shutdown interrupted it.
    async fn recover(&self, shutdown: &CancellationToken) -> bool {
        let patterns: Vec<String> = self
            .rules
            .iter()
            .flat_map(|rule| rule.delete.iter().chain(&rule.refresh))
            .map(crate::pure::glob::template_pattern)
            .collect();
        let named: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|rule| rule.warm.iter().map(String::as_str))
            .collect();
        let actions = plan::gap_actions(self.settings.on_gap, &self.invalidator.jobs(), &patterns, &named);
        self.invalidator
            .recover(&self.settings.label, Some(&self.series), actions, shutdown)
            .await
    }
}
