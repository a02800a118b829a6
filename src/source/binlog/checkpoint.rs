//! Where the binlog listener resumes: a position (`file:offset`), saved in Redis or in a file after each applied
//! batch, and the file name a rotate event announces.

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
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl Position {
    /// Reads `file:offset`.
    pub fn parse(text: &str) -> Option<Self> {
        let (file, pos) = text.trim().rsplit_once(':')?;
        Some(Self {
            file: file.to_string(),
            pos: pos.parse().ok()?,
        })
    }
}

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
