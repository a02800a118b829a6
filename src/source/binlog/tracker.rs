//! Where the stream is: the binlog file being read, and the position (with its GTID set) after the last complete
//! transaction, advanced event by event (pure; the session feeds it each event's [`Marker`]).

use super::checkpoint::{self, Position};
use super::compressed::Payload;
use super::gtid::{Gtid, Gtids};

/// What of one event moves the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Marker<'a> {
    /// A format description: rotates from here on carry no checksum glued to their names.
    Format,
    /// A rotate naming the next file (its name as sent): real ones at the end of a file, artificial ones (log_pos 0)
    /// at the start of a dump and after a STOP event (a server restart), the only word of the new file then.
    Rotate(&'a [u8]),
    /// A transaction begins with this GTID (`None`: one the event did not let us read).
    Gtid(Option<Gtid>),
    /// MySQL's `Transaction_payload`: the events of a compressed transaction follow, ending where it ends.
    Payload,
    /// A transaction ends: its XID, or a statement of its own (DDL, non-transactional; not `BEGIN`).
    End,
    /// Anything else (rows, heartbeats, `BEGIN`).
    Other,
}

/// The position of one session's stream.
#[derive(Debug)]
pub(super) struct Tracker {
    file: String,
    /// The GTID set as transactions end; kept only when the start's is known (else it would be partial).
    gtids: Option<Gtids>,
    /// The GTID of the transaction being read.
    open: Option<Gtid>,
    payload: Payload,
    format_seen: bool,
    server_id: u32,
    /// Bytes of checksum glued to an artificial rotate's name before the stream's format description.
    checksum_bytes: usize,
    last_end: Position,
}

impl Tracker {
    /// A stream starting at `start` on the server `server_id`.
    pub(super) fn new(start: &Position, server_id: u32, checksum_bytes: usize) -> Self {
        Tracker {
            file: start.file.clone(),
            gtids: start.gtid.clone(),
            open: None,
            payload: Payload::default(),
            format_seen: false,
            server_id,
            checksum_bytes,
            last_end: start.clone(),
        }
    }

    /// The file being read.
    pub(super) fn file(&self) -> &str {
        &self.file
    }

    /// The position after the last complete transaction read (the start, before one): what comes before the next
    /// change.
    pub(super) fn last_end(&self) -> &Position {
        &self.last_end
    }

    /// Takes in one event, which the server says ends at `log_pos`. When it ends a transaction, the position after
    /// it (the one before, for a transaction that carries no position). `Err` when a compressed transaction's events
    /// never came (mysql_async could not unpack it): what it changed is unknown.
    pub(super) fn on_event(&mut self, marker: Marker<'_>, log_pos: u64) -> Result<Option<Position>, String> {
        let log_pos = self.payload.position(log_pos);
        match marker {
            Marker::Format => self.format_seen = true,
            Marker::Rotate(name) => {
                let checksum = if self.format_seen { 0 } else { self.checksum_bytes };
                self.file = checkpoint::rotated_file(name, checksum);
            }
            Marker::Gtid(gtid) => {
                self.payload.not_open()?;
                self.open = gtid;
            }
            Marker::Payload => self.payload.opened(log_pos)?,
            Marker::End => {
                self.payload.ended();
                if let (Some(gtids), Some(gtid)) = (&mut self.gtids, self.open.take()) {
                    gtids.record(gtid);
                }
                if log_pos > 0 {
                    self.last_end = Position {
                        file: self.file.clone(),
                        pos: log_pos,
                        gtid: self.gtids.clone(),
                        server: Some(self.server_id),
                    };
                }
                return Ok(Some(self.last_end.clone()));
            }
            Marker::Other => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mariadb(seq: u64) -> Gtid {
        Gtid::MariaDb {
            domain: 0,
            server: 1,
            seq,
        }
    }

    fn start() -> Position {
        Position::at("mariadb-bin.000007".into(), 4)
    }

    #[test]
    fn a_transaction_moves_the_position_at_its_end_and_not_before() {
        let mut tracker = Tracker::new(&start(), 1, 0);
        assert_eq!(tracker.on_event(Marker::Gtid(Some(mariadb(5))), 300), Ok(None));
        assert_eq!(tracker.on_event(Marker::Other, 400), Ok(None));
        assert_eq!(tracker.last_end().pos, 4, "nothing ended yet");
        let end = tracker.on_event(Marker::End, 500).unwrap().unwrap();
        assert_eq!(
            (end.file.as_str(), end.pos, end.server),
            ("mariadb-bin.000007", 500, Some(1))
        );
        assert_eq!(
            end.gtid, None,
            "the start's GTID set was unknown: a partial one is not kept"
        );
        assert_eq!(tracker.last_end(), &end);
    }

    #[test]
    fn the_gtid_set_grows_by_each_ended_transaction_when_the_start_had_one() {
        let mut begin = start();
        begin.gtid = Gtids::parse("0-1-4");
        let mut tracker = Tracker::new(&begin, 1, 0);
        tracker.on_event(Marker::Gtid(Some(mariadb(5))), 300).unwrap();
        let end = tracker.on_event(Marker::End, 500).unwrap().unwrap();
        assert_eq!(end.gtid.unwrap().to_string(), "0-1-5");
        // A statement without a GTID of its own ends at its position; the set stays.
        let end = tracker.on_event(Marker::End, 600).unwrap().unwrap();
        assert_eq!((end.pos, end.gtid.unwrap().to_string()), (600, "0-1-5".to_string()));
    }

    #[test]
    fn rotates_name_the_next_file_cutting_a_glued_checksum_only_before_the_format_description() {
        let mut tracker = Tracker::new(&start(), 1, 4);
        tracker
            .on_event(Marker::Rotate(b"mariadb-bin.000008\x01\x02\x03\x04"), 0)
            .unwrap();
        assert_eq!(tracker.file(), "mariadb-bin.000008");
        tracker.on_event(Marker::Format, 0).unwrap();
        tracker.on_event(Marker::Rotate(b"mariadb-bin.000009"), 0).unwrap();
        assert_eq!(tracker.file(), "mariadb-bin.000009");
        let end = tracker.on_event(Marker::End, 120).unwrap().unwrap();
        assert_eq!((end.file.as_str(), end.pos), ("mariadb-bin.000009", 120));
    }

    #[test]
    fn a_compressed_transaction_ends_where_its_payload_ends() {
        let mut tracker = Tracker::new(&Position::at("binlog.000002".into(), 4), 9, 0);
        tracker.on_event(Marker::Gtid(None), 200).unwrap();
        tracker.on_event(Marker::Payload, 900).unwrap();
        // Its inner events say 0 or the payload's end.
        tracker.on_event(Marker::Other, 0).unwrap();
        let end = tracker.on_event(Marker::End, 0).unwrap().unwrap();
        assert_eq!((end.pos, end.server), (900, Some(9)));
        // The next transaction's own positions count again.
        tracker.on_event(Marker::Gtid(None), 1000).unwrap();
        assert_eq!(tracker.on_event(Marker::End, 1100).unwrap().unwrap().pos, 1100);
    }

    #[test]
    fn a_payload_whose_events_never_came_is_an_error_at_the_next_transaction() {
        let mut tracker = Tracker::new(&Position::at("binlog.000002".into(), 4), 9, 0);
        tracker.on_event(Marker::Payload, 900).unwrap();
        let error = tracker.on_event(Marker::Gtid(None), 1000).unwrap_err();
        assert!(error.contains("ending at 900 was not unpacked"), "{error}");
        let mut tracker = Tracker::new(&Position::at("binlog.000002".into(), 4), 9, 0);
        tracker.on_event(Marker::Payload, 900).unwrap();
        assert!(tracker.on_event(Marker::Payload, 1900).is_err());
    }

    #[test]
    fn a_transaction_without_a_position_leaves_the_last_one() {
        let mut tracker = Tracker::new(&start(), 1, 0);
        assert_eq!(tracker.on_event(Marker::End, 0).unwrap(), Some(start()));
    }
}
