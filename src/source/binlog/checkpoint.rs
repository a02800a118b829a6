//! Where the binlog listener resumes: a position (`file:offset`, and on MariaDB the GTID position of the same point),
//! saved in Redis or in a file after each applied batch, and the file name a rotate event announces.
//!
//! A file offset means something only on the server that wrote the file; a GTID position (`domain-server-seq` per
//! replication domain) means the same on every server of a replication topology, so after a failover (RDS
//! Multi-AZ, a MariaDB switchover) the listener resumes on the promoted server by GTID (on the same server, by offset). Saved as
//! `binlog.000042:1234 gtid=0-1-977 server=1`; the older `binlog.000042:1234` still reads.

use crate::cache::Cache;
use crate::config::CheckpointStore;
use crate::metrics;
use crate::model::KeyOp;

use super::BinlogError;

/// A binlog position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub pos: u64,
    /// MariaDB: the GTID position of the same point (`0-1-977`, one `domain-server-seq` per domain).
    pub gtid: Option<Gtids>,
    /// `@@server_id` of the server whose file `file` is: the offset means nothing on another.
    pub server: Option<u32>,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(gtid) = self.gtid.as_ref().filter(|gtid| !gtid.is_empty()) {
            write!(f, " gtid={gtid}")?;
        }
        if let Some(server) = self.server {
            write!(f, " server={server}")?;
        }
        Ok(())
    }
}

impl Position {
    /// A file position alone.
    pub fn at(file: String, pos: u64) -> Self {
        Self {
            file,
            pos,
            gtid: None,
            server: None,
        }
    }

    /// Reads `file:offset`, optionally followed by ` gtid=…` and ` server=…`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let (file, pos) = words.next()?.rsplit_once(':')?;
        let mut position = Self::at(file.to_string(), pos.parse().ok()?);
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

/// A MariaDB GTID position: for each replication domain, the last transaction (server id, sequence number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gtids(std::collections::BTreeMap<u32, (u32, u64)>);

impl Gtids {
    /// Reads `0-1-977,1-2-5` (MariaDB's `@@gtid_binlog_pos` form); empty text is an empty position.
    pub fn parse(text: &str) -> Option<Self> {
        let mut gtids = Self::default();
        for gtid in text.split(',').map(str::trim).filter(|gtid| !gtid.is_empty()) {
            let mut parts = gtid.splitn(3, '-');
            let (domain, server, seq) = (parts.next()?, parts.next()?, parts.next()?);
            gtids
                .0
                .insert(domain.parse().ok()?, (server.parse().ok()?, seq.parse().ok()?));
        }
        Some(gtids)
    }

    /// The transaction `seq` of `domain` by `server` is the latest of its domain.
    pub fn record(&mut self, domain: u32, server: u32, seq: u64) {
        self.0.insert(domain, (server, seq));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Gtids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (domain, (server, seq))) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

/// The GTID a MariaDB GTID event (type 162) opens its transaction with: (domain, sequence number). Its body starts
/// with the sequence number (8 bytes) and the domain id (4 bytes), little-endian; the server id is the event
/// header's.
pub fn mariadb_gtid(data: &[u8]) -> Option<(u32, u64)> {
    let seq = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    Some((domain, seq))
}

/// MariaDB's GTID event type.
pub const MARIADB_GTID_EVENT: u8 = 162;

/// The file a rotate event names. Before the stream's format description event the client cannot know whether
/// events carry a checksum, so a rotate that comes first (the server's artificial one at the start of a dump) arrives
/// with the checksum glued to the name: `trailing_checksum` bytes are cut from such a name.
pub fn rotated_file(name: &[u8], trailing_checksum: usize) -> String {
    let name = &name[..name.len().saturating_sub(trailing_checksum)];
    String::from_utf8_lossy(name)
        .trim_end_matches(|c: char| !c.is_ascii_graphic())
        .to_string()
}

/// Reads the saved position, if any.
pub async fn load(store: &CheckpointStore, cache: &Cache) -> Result<Option<Position>, BinlogError> {
    let text = match store {
        CheckpointStore::Redis(key) => cache
            .get(key)
            .await
            .map_err(|e| BinlogError::from_cache("cannot read the checkpoint from Redis", e))?,
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

/// Saves `position`, replacing the previous one.
pub async fn save(store: &CheckpointStore, cache: &Cache, position: &Position) -> Result<(), BinlogError> {
    match store {
        CheckpointStore::Redis(key) => {
            let op = KeyOp::Set {
                key: key.clone(),
                value: position.to_string().into_bytes(),
                ttl: None,
                read: None,
            };
            cache
                .apply(&[op])
                .await
                .map_err(|e| BinlogError::from_cache("cannot save the checkpoint to Redis", e))?;
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
        let old = Position::parse("binlog.000042:1234").unwrap();
        assert_eq!((old.gtid, old.server), (None, None));
        assert!(Position::parse("binlog.000042:1234 gtid=0-1").is_none());
        assert!(Position::parse("binlog.000042:1234 colour=red").is_none());
        let mut gtids = Gtids::parse("0-1-5").unwrap();
        gtids.record(0, 2, 6);
        gtids.record(1, 2, 1);
        assert_eq!(gtids.to_string(), "0-2-6,1-2-1");
        let mut event = 977u64.to_le_bytes().to_vec();
        event.extend_from_slice(&3u32.to_le_bytes());
        event.push(0);
        assert_eq!(mariadb_gtid(&event), Some((3, 977)));
        assert_eq!(mariadb_gtid(&event[..5]), None);
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
}
