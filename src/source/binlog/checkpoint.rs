//! Where the binlog listener resumes: a position (`file:offset`, and the GTID position of the same point), saved in
//! Redis or in a file after each applied batch, and the file name a rotate event announces.
//!
//! A file offset means something only on the server that wrote the file; a GTID position (see `gtid`) means the same
//! on every server of a replication topology, so after a failover (RDS Multi-AZ, Aurora, a MariaDB switchover) the
//! listener resumes on the promoted server by GTID (on the same server, by offset). Saved as
//! `binlog.000042:1234 gtid=0-1-977 server=1` (MySQL: `gtid=<uuid>:1-977`); the older `binlog.000042:1234` still
//! reads.

use tracing::warn;

use crate::config::CheckpointStore;
use crate::exec::cache::Cache;
use crate::pure::model::KeyOp;
use crate::telemetry::metrics;

use super::BinlogError;
pub(crate) use super::gtid::Gtids;

/// A binlog position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub file: String,
    pub pos: u64,
    /// The GTID position of the same point, in the server's form (MariaDB `0-1-977`, MySQL `uuid:1-977`).
    pub gtid: Option<Gtids>,
    /// `@@server_id` of the server whose file `file` is: the offset means nothing on another.
    pub server: Option<u32>,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gtid.as_ref().filter(|gtid| !gtid.is_empty()) {
            // A GTID position alone (`binlog set --gtid`).
            Some(gtid) if self.file.is_empty() => write!(f, "gtid={gtid}")?,
            Some(gtid) => write!(f, "{}:{} gtid={gtid}", self.file, self.pos)?,
            None => write!(f, "{}:{}", self.file, self.pos)?,
        }
        if let Some(server) = self.server {
            write!(f, " server={server}")?;
        }
        Ok(())
    }
}

impl Position {
    /// A file position alone.
    pub(crate) fn at(file: String, pos: u64) -> Self {
        Self {
            file,
            pos,
            gtid: None,
            server: None,
        }
    }

    /// Of two positions on the same server's files, the earlier (`None` when they cannot be compared: another
    /// server's offsets mean nothing here).
    pub(crate) fn earlier<'a>(&'a self, other: &'a Position) -> Option<&'a Position> {
        if self.server.is_some() && other.server.is_some() && self.server != other.server {
            return None;
        }
        // `binlog.000042`: the number after the last dot orders the files (the text does too while it keeps its width).
        let number = |file: &str| file.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok());
        let order = match (number(&self.file), number(&other.file)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.file.cmp(&other.file),
        };
        Some(if order.then(self.pos.cmp(&other.pos)).is_le() {
            self
        } else {
            other
        })
    }

    /// Reads `file:offset`, optionally followed by ` gtid=…` and ` server=…`; or `gtid=…` alone.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace().peekable();
        // A GTID position alone (`binlog set --gtid`) has no file offset.
        let mut position = match words.peek()?.strip_prefix("gtid=") {
            Some(_) => Self::at(String::new(), 4),
            None => {
                let (file, pos) = words.next()?.rsplit_once(':')?;
                Self::at(file.to_string(), pos.parse().ok()?)
            }
        };
        for word in words {
            match word.split_once('=')? {
                ("gtid", gtid) => position.gtid = Some(Gtids::parse(gtid)?),
                ("server", server) => position.server = Some(server.parse().ok()?),
                _ => return None,
            }
        }
        Some(position)
    }
}

/// The file a rotate event names. Before the stream's format description event the client cannot know whether
/// events carry a checksum, so a rotate that comes first (the server's artificial one at the start of a dump) arrives
/// with the checksum glued to the name: `trailing_checksum` bytes are cut from such a name.
pub(crate) fn rotated_file(name: &[u8], trailing_checksum: usize) -> String {
    let name = &name[..name.len().saturating_sub(trailing_checksum)];
    String::from_utf8_lossy(name)
        .trim_end_matches(|c: char| !c.is_ascii_graphic())
        .to_string()
}

/// Where the checkpoint is kept: a Redis key (through the cache, so a full Redis is told apart) or a file.
#[derive(Clone)]
pub(crate) struct Checkpoints {
    store: CheckpointStore,
    cache: Cache,
    series: metrics::BinlogSeries,
}

impl Checkpoints {
    pub(crate) fn new(store: CheckpointStore, cache: Cache, series: metrics::BinlogSeries) -> Self {
        Checkpoints { store, cache, series }
    }

    /// Whether it is kept in Redis, which may lose it (and so is compared with what was saved).
    pub(crate) fn in_redis(&self) -> bool {
        matches!(self.store, CheckpointStore::Redis(_))
    }

    /// Reads the saved position, if any.
    pub(crate) async fn load(&self) -> Result<Option<Position>, BinlogError> {
        let text = match &self.store {
            CheckpointStore::Redis(key) => self
                .cache
                .get(key)
                .await
                .map_err(BinlogError::redis("cannot read the checkpoint from Redis"))?,
            CheckpointStore::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(file_error("read", path, source)),
            },
        };
        match text {
            None => Ok(None),
            Some(text) => Position::parse(&text)
                .map(Some)
                .ok_or_else(|| BinlogError::Refused(format!("the saved checkpoint {text:?} is not file:position"))),
        }
    }

    /// Saves `position`, replacing the previous one.
    pub(crate) async fn save(&self, position: &Position) -> Result<(), BinlogError> {
        match &self.store {
            CheckpointStore::Redis(key) => {
                let op = KeyOp::Set {
                    key: key.clone(),
                    value: position.to_string().into_bytes(),
                    ttl: None,
                    read: None,
                };
                self.cache
                    .apply(&[op])
                    .await
                    .map_err(BinlogError::redis("cannot save the checkpoint to Redis"))?;
            }
            CheckpointStore::File(path) => {
                let temporary = path.with_extension("tmp");
                std::fs::write(&temporary, position.to_string())
                    .and_then(|()| std::fs::rename(&temporary, path))
                    .map_err(|source| file_error("write", path, source))?;
            }
        }
        self.series
            .checkpoint(position.pos, position.to_string(), metrics::unix_now());
        Ok(())
    }

    /// Removes the checkpoint; the one removed.
    pub(crate) async fn remove(&self) -> Result<Option<Position>, BinlogError> {
        let old = self.load().await?;
        match &self.store {
            CheckpointStore::Redis(key) => {
                self.cache
                    .apply(&[KeyOp::Delete { key: key.clone() }])
                    .await
                    .map_err(BinlogError::redis("cannot delete the checkpoint from Redis"))?;
            }
            CheckpointStore::File(path) => match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(file_error("remove", path, source)),
            },
        }
        Ok(old)
    }
}

fn file_error(doing: &'static str, path: &std::path::Path, source: std::io::Error) -> BinlogError {
    BinlogError::CheckpointFile {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a session resumes, and whether Redis had lost the checkpoint (so it must be saved again).
pub(crate) struct Resume {
    pub position: Position,
    pub lost: bool,
}

/// Where to resume from the checkpoint Redis holds (`saved`) and the position this listener last saved itself
/// (`applied`, kept in memory across sessions). The invariant: never after either. Redis may have lost the checkpoint
/// (a restart without persistence, an eviction) or rolled it back (a failover to a replica that was behind) — and
/// the invalidations written before it with it — so the earlier of the two is applied again (every operation is
/// idempotent); with none in Redis, the one in memory. `None` when neither exists (a first start).
pub(crate) fn resume_from(
    saved: Option<Position>,
    applied: Option<Position>,
    series: &metrics::BinlogSeries,
) -> Option<Resume> {
    let resume = |position, lost| Some(Resume { position, lost });
    match (saved, applied) {
        (None, None) => None,
        (Some(saved), None) => resume(saved, false),
        (None, Some(applied)) => {
            warn!(
                position = %applied,
                "The binlog checkpoint is gone from Redis (restarted without persistence, or evicted): resuming from \
                 the position this listener saved last, applying again what Redis may have lost."
            );
            series.rewind();
            resume(applied, true)
        }
        (Some(saved), Some(applied)) if saved.to_string() == applied.to_string() => resume(saved, false),
        (Some(saved), Some(applied)) => match saved.earlier(&applied) {
            Some(earlier) => {
                let earlier = earlier.clone();
                warn!(
                    redis = %saved,
                    saved_last = %applied,
                    from = %earlier,
                    "Redis holds another binlog checkpoint than the one this listener saved last (a failover to a \
                     replica that was behind?): resuming from the earlier, applying again what Redis may have lost."
                );
                series.rewind();
                let lost = earlier != saved;
                resume(earlier, lost)
            }
            // Positions on different servers cannot be compared: Redis's (a database failover) decides, by GTID.
            None => resume(saved, false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_positions_round_trip_and_old_checkpoints_still_read() {
        let position = Position::parse("binlog.000042:1234 gtid=0-1-977,3-7-12 server=1").unwrap();
        assert_eq!(position.file, "binlog.000042");
        assert_eq!(position.pos, 1234);
        assert_eq!(position.gtid.as_ref().unwrap().to_string(), "0-1-977,3-7-12");
        assert_eq!(position.server, Some(1));
        assert_eq!(position.to_string(), "binlog.000042:1234 gtid=0-1-977,3-7-12 server=1");
        let mysql = "binlog.000003:157 gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-977:979 server=11";
        assert_eq!(Position::parse(mysql).unwrap().to_string(), mysql);
        let old = Position::parse("binlog.000042:1234").unwrap();
        assert_eq!((old.gtid, old.server), (None, None));
        assert!(Position::parse("binlog.000042:1234 gtid=0-1").is_none());
        assert!(Position::parse("binlog.000042:1234 colour=red").is_none());
    }

    #[test]
    fn the_earlier_of_two_positions_on_one_server() {
        let at = |text: &str| Position::parse(text).unwrap();
        let (a, b) = (at("binlog.000009:900 server=1"), at("binlog.000010:4 server=1"));
        assert_eq!(a.earlier(&b), Some(&a));
        assert_eq!(b.earlier(&a), Some(&a));
        let c = at("binlog.000010:120 server=1");
        assert_eq!(c.earlier(&b), Some(&b));
        assert_eq!(
            at("binlog.999999:4").earlier(&at("binlog.1000000:4")).map(|p| p.pos),
            Some(4)
        );
        assert_eq!(
            at("binlog.1000000:4").earlier(&at("binlog.999999:8")).map(|p| p.pos),
            Some(8)
        );
        assert_eq!(a.earlier(&at("binlog.000001:4 server=2")), None);
    }

    #[test]
    fn a_gtid_position_alone_round_trips() {
        let position = Position::parse("gtid=0-1-977").unwrap();
        assert_eq!((position.file.as_str(), position.server), ("", None));
        assert_eq!(position.to_string(), "gtid=0-1-977");
        assert!(Position::parse("gtid=nonsense").is_none());
    }

    #[test]
    fn positions_round_trip() {
        let position = Position::parse("binlog.000042:1234").unwrap();
        assert_eq!(position.file, "binlog.000042");
        assert_eq!(position.pos, 1234);
        assert_eq!(position.to_string(), "binlog.000042:1234");
        assert!(Position::parse("nonsense").is_none());
    }

    #[test]
    fn rotate_names_lose_their_checksum_bytes() {
        assert_eq!(rotated_file(b"binlog.000008", 0), "binlog.000008");
        assert_eq!(rotated_file(b"binlog.000008\x12\xab\x00\x7f", 4), "binlog.000008");
        assert_eq!(rotated_file(b"binlog.0000081234", 4), "binlog.000008");
    }

    fn at(text: &str) -> Position {
        Position::parse(text).unwrap()
    }

    #[test]
    fn a_session_resumes_from_the_earlier_of_redis_and_memory_or_from_memory_when_redis_lost_it() {
        let series = metrics::BinlogSeries::new(&"main".into());
        assert!(resume_from(None, None, &series).is_none(), "a first start");
        let first = resume_from(Some(at("b.000002:100 server=1")), None, &series).unwrap();
        assert_eq!((first.position.pos, first.lost), (100, false));
        // Redis restarted empty: the position in memory, saved again.
        let lost = resume_from(None, Some(at("b.000002:900 server=1")), &series).unwrap();
        assert_eq!((lost.position.pos, lost.lost), (900, true));
        // A failover to a replica that was behind: its older checkpoint.
        let behind = resume_from(
            Some(at("b.000002:300 server=1")),
            Some(at("b.000002:900 server=1")),
            &series,
        )
        .unwrap();
        assert_eq!((behind.position.pos, behind.lost), (300, false));
        // Redis ahead of memory (written by someone else): still the earlier.
        let ahead = resume_from(
            Some(at("b.000003:4 server=1")),
            Some(at("b.000002:900 server=1")),
            &series,
        )
        .unwrap();
        assert_eq!((ahead.position.file.as_str(), ahead.lost), ("b.000002", true));
        // Another server's offsets (a database failover): Redis's, to resume by GTID.
        let other = resume_from(
            Some(at("b.000009:4 server=2")),
            Some(at("b.000002:900 server=1")),
            &series,
        )
        .unwrap();
        assert_eq!(other.position.server, Some(2));
    }
}
