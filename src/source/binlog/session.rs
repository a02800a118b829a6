//! One session's event loop: wait for the next event (or for what is due), batch its changes, apply the batch when
//! the stream pauses, and move the position ([`Tracker`]) as transactions end.

use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use mysql_async::binlog::events::{Event, EventData};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::batch::Batch;
use super::tracker::{Marker, Tracker};
use super::{
    BATCH_ENOUGH_KEYS, BATCH_KEYS, BATCH_ROWS, BATCH_WAIT, BinlogError, BinlogListener, HEARD_RECORD_EVERY,
    HOLD_CHECK_EVERY, IDLE_GAP, Opened, SessionState, compressed, gtid, holds, server, statements,
};
use crate::config::SecretUrl;
use crate::pure::model::TriggerReason;

/// How long a session started by GTID may hear nothing past the stream's preamble before it is taken for dead: the
/// server first reads its binlog up to the GTID position (MariaDB from the start of the file that holds it; MySQL
/// skipping what the replica has), sending no heartbeat meanwhile — seconds on a large file on a slow disk. A session
/// by file and offset starts where it asks and is held to the heartbeat's silence at once.
const START_GRACE: Duration = Duration::from_secs(120);

/// The events a stream opens with before the server has found its start: the (fake) rotate, the file's format
/// description, and its GTID list (MySQL's previous GTIDs, MariaDB's GTID list and binlog checkpoint).
fn is_preamble(event_type: u8) -> bool {
    use mysql_async::binlog::EventType;
    // MariaDB's own types, which mysql_common's `EventType` does not name.
    const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
    const MARIADB_GTID_LIST: u8 = 163;
    [
        EventType::ROTATE_EVENT as u8,
        EventType::FORMAT_DESCRIPTION_EVENT as u8,
        EventType::PREVIOUS_GTIDS_EVENT as u8,
        MARIADB_BINLOG_CHECKPOINT,
        MARIADB_GTID_LIST,
    ]
    .contains(&event_type)
}

/// What one session reads and keeps between events.
pub(super) struct Reading {
    stream: mysql_async::BinlogStream,
    position: Tracker,
    batch: Batch,
    url: watch::Receiver<SecretUrl>,
    /// No event or heartbeat for this long: the connection is dead.
    silence: Duration,
    /// Started by GTID, and nothing past the stream's preamble heard yet: the server may still be reading its binlog
    /// up to the GTID position, with no heartbeat meanwhile, so the silence allowed is [`START_GRACE`].
    finding_start: bool,
    /// Whether the wait beyond `silence` for the start was said.
    finding_said: bool,
    last_heard: Instant,
    heard_recorded: Option<Instant>,
    /// Warm runs a logged statement asked for, requested once its deletes are applied (see `statements`); the
    /// checkpoint waits before the statement until they have run.
    statement_warms: Vec<String>,
}

impl Reading {
    /// Says once, past the usual silence, that the server is still looking for the GTID position to start from.
    fn say_still_finding(&mut self) {
        if self.finding_start && !self.finding_said && self.last_heard.elapsed() >= self.silence {
            self.finding_said = true;
            info!(
                waiting_up_to = ?START_GRACE,
                "The server is still finding the GTID position in its binlog (no heartbeat meanwhile)."
            );
        }
    }

    /// Notes that the stream gave something now; whether it is time to record that in the metrics (at most every
    /// [`HEARD_RECORD_EVERY`]).
    fn heard(&mut self) -> bool {
        self.last_heard = Instant::now();
        let record = (self.heard_recorded).is_none_or(|at| self.last_heard.duration_since(at) >= HEARD_RECORD_EVERY);
        if record {
            self.heard_recorded = Some(self.last_heard);
        }
        record
    }
}

/// What waiting for the stream gave.
enum Next {
    Event(Event),
    /// The stream paused (or the batch is full): apply the batch.
    Pause,
    /// Nothing arrived yet, but something may be due.
    Nothing,
    /// Shutdown.
    Stop,
}

impl BinlogListener {
    /// One session: open the stream where the checkpoint says, then read, batch and apply until it ends.
    pub(super) async fn session(
        &self,
        shutdown: &CancellationToken,
        state: &mut SessionState,
    ) -> Result<(), BinlogError> {
        let url = self.url.subscribe();
        let Some(Opened {
            stream,
            start,
            server,
            by_gtid,
        }) = self.open(shutdown, state).await?
        else {
            return Ok(());
        };
        self.series.connected(true);
        self.health.set_stalled(&self.settings.label, None);
        let mut reading = Reading {
            stream,
            position: Tracker::new(&start, server.server_id, server.checksum_bytes),
            batch: Batch::default(),
            url,
            silence: self.settings.heartbeat * 2 + Duration::from_secs(1),
            finding_start: by_gtid,
            finding_said: false,
            last_heard: Instant::now(),
            heard_recorded: None,
            statement_warms: Vec::new(),
        };
        loop {
            self.fire_due(state).await?;
            match self.next(&mut reading, state, shutdown).await? {
                Next::Event(event) => {
                    state.followed = true;
                    if !self.take(event, &mut reading, state, shutdown).await? {
                        return Ok(());
                    }
                }
                Next::Pause => {
                    if !self.flush(&mut reading.batch, state, shutdown).await? {
                        return Ok(());
                    }
                    self.verify_checkpoint(state).await?;
                }
                Next::Nothing => {}
                Next::Stop => return Ok(()),
            }
        }
    }

    /// Requests the debounced warm runs that are due, and lets the checkpoint pass the warm runs that have ended.
    async fn fire_due(&self, state: &mut SessionState) -> Result<(), BinlogError> {
        let now = Instant::now();
        let due = state.debounce.due(now);
        for job in &due {
            self.invalidator.warm(job, TriggerReason::Change);
        }
        state.holds.fired(&due, SystemTime::now());
        if state
            .released
            .is_some_and(|at| now.duration_since(at) < HOLD_CHECK_EVERY)
        {
            return Ok(());
        }
        state.released = Some(now);
        let mut expired = Vec::new();
        let finished = |job: &str| self.invalidator.last_finished(job);
        if state.holds.release(finished, SystemTime::now(), &mut expired) {
            for job in expired {
                warn!(
                    job,
                    waited = ?holds::MAX_HOLD,
                    "A warm run a change asked for has not ended; the binlog checkpoint no longer waits for it."
                );
            }
            self.advance(state).await?;
        }
        Ok(())
    }

    /// The next event; or, with a batch gathering, a pause of the stream, which applies it.
    async fn next(
        &self,
        reading: &mut Reading,
        state: &SessionState,
        shutdown: &CancellationToken,
    ) -> Result<Next, BinlogError> {
        let now = Instant::now();
        let batch = &mut reading.batch;
        batch.take_due(now);
        let item = if batch.is_empty() {
            // Wait for the next event, or for the next deferred refresh (or debounced warm run) to be due.
            let next_due = [batch.next_due(), state.debounce.next_due()]
                .into_iter()
                .flatten()
                .min();
            let silence = match reading.finding_start {
                true => START_GRACE,
                false => reading.silence,
            };
            let wait = next_due.map_or(reading.silence, |due| {
                due.saturating_duration_since(now).min(reading.silence)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(Next::Stop),
                Ok(()) = reading.url.changed() => {
                    // Nothing is in flight between batches: the next session resumes from the position applied.
                    info!("[binlog] url changed: reconnecting with it from the position applied.");
                    return Err(BinlogError::Reconnect);
                }
                next = tokio::time::timeout(wait, reading.stream.next()) => match next {
                    Ok(item) => item,
                    Err(_) if reading.last_heard.elapsed() >= silence => {
                        return Err(BinlogError::Interrupted(format!(
                            "no event or heartbeat for {silence:?}: the connection is dead"
                        )));
                    }
                    Err(_) => {
                        reading.say_still_finding();
                        return Ok(Next::Nothing);
                    }
                },
            }
        } else {
            let full = batch.len() >= BATCH_KEYS || batch.rows >= BATCH_ROWS || batch.is_older_than(BATCH_WAIT, now);
            // Whatever arrives without a pause joins the batch; once the stream pauses (or the batch is full), apply.
            if full {
                return Ok(Next::Pause);
            }
            match tokio::time::timeout(IDLE_GAP, reading.stream.next()).await {
                Ok(item) => item,
                Err(_) => return Ok(Next::Pause),
            }
        };
        if reading.heard() {
            self.series.heard();
        }
        match item {
            None => Err(BinlogError::Interrupted("the server closed the binlog stream".into())),
            // Named by the position we were reading from.
            Some(Err(error)) => Err(server::classify(error, reading.position.last_end())),
            Some(Ok(event)) => {
                if reading.finding_start && !is_preamble(event.header().event_type_raw()) {
                    reading.finding_start = false;
                }
                Ok(Next::Event(event))
            }
        }
    }

    /// Takes in one event: its changes join the batch, and its end of a transaction moves the position. `false`
    /// when shutdown interrupted an apply.
    async fn take(
        &self,
        event: Event,
        reading: &mut Reading,
        state: &mut SessionState,
        shutdown: &CancellationToken,
    ) -> Result<bool, BinlogError> {
        let event = match compressed::is_compressed(event.header().event_type_raw()) {
            true => compressed::uncompress(&event).map_err(|e| {
                let file = reading.position.file();
                BinlogError::Refused(format!("an undecodable compressed binlog event in {file}: {e}"))
            })?,
            false => event,
        };
        let header = event.header();
        let data = event.read_data().map_err(|source| BinlogError::Undecodable {
            what: "binlog event",
            source,
        })?;
        let marker = match (header.event_type_raw(), &data) {
            (gtid::MARIADB_GTID_EVENT, _) => Marker::Gtid(gtid::mariadb_gtid(event.data(), header.server_id())),
            (compressed::TRANSACTION_PAYLOAD, _) => Marker::Payload,
            (_, Some(EventData::GtidEvent(event))) => Marker::Gtid(Some(gtid::mysql_gtid(event))),
            (_, Some(EventData::FormatDescriptionEvent(_))) => Marker::Format,
            (_, Some(EventData::RotateEvent(rotate))) => Marker::Rotate(rotate.name_raw()),
            (_, Some(EventData::HeartbeatEvent)) => {
                if reading.batch.is_empty() {
                    self.series.caught_up();
                    // A checkpoint that could not be saved is tried again at each heartbeat, so a quiet database does
                    // not keep it waiting after space returns.
                    if state.checkpoint_waits.is_some() {
                        self.advance(state).await?;
                    }
                    self.verify_checkpoint(state).await?;
                }
                Marker::Other
            }
            (_, Some(EventData::RowsEvent(rows))) => {
                self.series.lag(header.timestamp());
                if let Some(tme) = reading.stream.get_tme(rows.table_id()) {
                    let last_end = reading.position.last_end();
                    self.plan_rows(rows, tme, header.timestamp(), &mut reading.batch, last_end, state)?;
                }
                Marker::Other
            }
            // A transaction ends at its XID; DDL and non-transactional statements end one of their own.
            (_, Some(EventData::XidEvent(_))) => Marker::End,
            (_, Some(EventData::QueryEvent(query))) if query.query() != "BEGIN" => {
                for job in statements::plan(&query.query(), &query.schema(), self, &mut reading.batch) {
                    state.holds.deferred(&job, reading.position.last_end());
                    reading.statement_warms.push(job);
                }
                Marker::End
            }
            _ => Marker::Other,
        };
        self.moved(reading, state, shutdown, marker, header.log_pos()).await
    }

    /// Moves the position by one event's `marker`; at the end of a transaction, the batch's checkpoint follows and a
    /// batch worth applying now is applied. `false` when shutdown interrupted that apply.
    async fn moved(
        &self,
        reading: &mut Reading,
        state: &mut SessionState,
        shutdown: &CancellationToken,
        marker: Marker<'_>,
        log_pos: u32,
    ) -> Result<bool, BinlogError> {
        let ended = reading
            .position
            .on_event(marker, u64::from(log_pos))
            .map_err(|e| BinlogError::Refused(format!("in {}: {e}", reading.position.file())))?;
        let Some(end) = ended else { return Ok(true) };
        let batch = &mut reading.batch;
        batch.transactions += 1;
        batch.checkpoint = Some(end);
        // A batch this big is worth applying at once: waiting for more only delays what it holds. So is one with a
        // statement's deletes, whose warm runs must come after them.
        if batch.len() < BATCH_ENOUGH_KEYS && reading.statement_warms.is_empty() {
            return Ok(true);
        }
        if !self.flush(batch, state, shutdown).await? {
            return Ok(false);
        }
        for job in &reading.statement_warms {
            self.invalidator.warm(job, TriggerReason::Resync);
        }
        state.holds.fired(&reading.statement_warms, SystemTime::now());
        reading.statement_warms.clear();
        Ok(true)
    }
}
