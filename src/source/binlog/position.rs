//! What `cachewarden binlog status|set|replay` asks the server about positions: the saved checkpoint held against
//! the server now (its files, its end, how long it keeps them), a checkpoint moved by an operator to a position the
//! server has, and a `file:pos` where the server shows an event, for a replay. (`reset` is
//! `checkpoint::Checkpoints::remove`.)
//!
//! A checkpoint is moved (`set`) only while the daemon is stopped (the caller makes sure): a running listener would
//! save its own position over it.

use mysql_async::prelude::Queryable as _;

use super::checkpoint::{Checkpoints, Position};
use super::server::{self, ServerTraits};
use super::{BinlogError, settings::Retention};
use crate::config::BinlogSettings;

/// The checkpoint against the server.
pub(crate) struct Inspection {
    pub checkpoint: Option<Position>,
    /// The server's current position (its last file and the end of it).
    pub server: Position,
    /// The server's binlog files and their sizes, oldest first.
    pub files: Vec<(String, u64)>,
    pub retention: Retention,
    pub warnings: Vec<String>,
}

impl Inspection {
    /// Whether the server still has the checkpoint's file (on its own server; another server's offset is judged by
    /// its GTID at start).
    pub(crate) fn checkpoint_on_server(&self) -> Option<bool> {
        let checkpoint = self.checkpoint.as_ref()?;
        if checkpoint.server.is_some() && checkpoint.server != self.server.server {
            return None;
        }
        Some(self.files.iter().any(|(file, _)| *file == checkpoint.file))
    }

    /// Bytes of binlog between the checkpoint and the server's end, when the checkpoint is on this server.
    pub(crate) fn bytes_behind(&self) -> Option<u64> {
        let checkpoint = self.checkpoint.as_ref()?;
        if self.checkpoint_on_server() != Some(true) {
            return None;
        }
        let mut behind = 0;
        let mut counting = false;
        for (file, size) in &self.files {
            if *file == checkpoint.file {
                counting = true;
                behind += size.saturating_sub(checkpoint.pos);
            } else if counting {
                behind += size;
            }
        }
        Some(behind)
    }
}

/// Reads the checkpoint and asks the server where it is.
pub(crate) async fn inspect(settings: &BinlogSettings, checkpoints: &Checkpoints) -> Result<Inspection, BinlogError> {
    let checkpoint = checkpoints.load().await?;
    let mut conn = server::connect(&settings.url).await?;
    let traits = server::check_server(&mut conn).await?;
    let mut server = server::current_position(&mut conn, &traits).await?;
    // MySQL with GTIDs reports its set (and the server) with the position; otherwise ask (MariaDB's BINLOG_GTID_POS;
    // nothing to read with GTIDs off), never MySQL's scan of the file for a set already known.
    if server.gtid.is_none() {
        server = server::with_gtid(&mut conn, server, &traits).await?;
    }
    let files = binary_logs(&mut conn).await?;
    conn.disconnect().await.ok();
    Ok(Inspection {
        checkpoint,
        server,
        files,
        retention: traits.retention,
        warnings: traits.warnings,
    })
}

/// Saves `file:pos` as the checkpoint once the server shows an event starting there; the checkpoint it replaces.
pub(crate) async fn set(
    settings: &BinlogSettings,
    checkpoints: &Checkpoints,
    file: &str,
    pos: u64,
) -> Result<(Option<Position>, Position), BinlogError> {
    let old = checkpoints.load().await?;
    let position = locate(settings, file, pos).await?;
    checkpoints.save(&position).await?;
    Ok((old, position))
}

/// `file:pos` as a position the listener can start from, once the server shows an event starting there (with its
/// GTID position, where the server has one).
pub(crate) async fn locate(settings: &BinlogSettings, file: &str, pos: u64) -> Result<Position, BinlogError> {
    if !file
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(BinlogError::Refused(format!("{file:?} is not a binlog file name")));
    }
    let mut conn = server::connect(&settings.url).await?;
    let traits: ServerTraits = server::check_server(&mut conn).await?;
    let files = binary_logs(&mut conn).await?;
    if !files.iter().any(|(name, _)| name == file) {
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        return Err(BinlogError::Refused(format!(
            "the server has no binlog file {file:?} (it has {})",
            names.join(", ")
        )));
    }
    // The position must be where an event starts: the server reads from there.
    let at: Result<Vec<mysql_async::Row>, _> = conn
        .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {pos} LIMIT 1"))
        .await;
    let end = files.iter().find(|(name, _)| name == file).map_or(0, |(_, size)| *size);
    match at {
        Ok(rows) if !rows.is_empty() || pos == end => {}
        _ => {
            return Err(BinlogError::Refused(format!(
                "no event starts at {file}:{pos} (SHOW BINLOG EVENTS IN '{file}' lists where they do)"
            )));
        }
    }
    let position = Position::at(file.to_string(), pos);
    let position = server::with_gtid(&mut conn, position, &traits).await?;
    conn.disconnect().await.ok();
    Ok(position)
}

/// Saves a GTID position as the checkpoint (no file offset: the next start connects by GTID and reads the
/// transactions after it) once the server shows it can: GTIDs on, the same form, every transaction of it executed
/// there and, on MySQL, none after it purged.
pub(crate) async fn set_gtid(
    settings: &BinlogSettings,
    checkpoints: &Checkpoints,
    text: &str,
) -> Result<(Option<Position>, Position), BinlogError> {
    let gtid = super::gtid::Gtids::parse(text.trim())
        .filter(|gtid| !gtid.is_empty())
        .ok_or_else(|| {
            BinlogError::Refused(format!(
                "{text:?} is not a GTID position: MariaDB's is `domain-server-seq[,…]` (SELECT @@gtid_binlog_pos), \
             MySQL's `uuid:1-977[,…]` (SELECT @@gtid_executed)"
            ))
        })?;
    let old = checkpoints.load().await?;
    let mut conn = server::connect(&settings.url).await?;
    let traits: ServerTraits = server::check_server(&mut conn).await?;
    if !traits.gtids {
        return Err(BinlogError::Refused(
            "the server has GTIDs off: set the position by --file and --pos".into(),
        ));
    }
    if gtid.is_mysql() == traits.mariadb {
        return Err(BinlogError::Refused(format!(
            "{gtid} is in the other server's form: this is {}",
            if traits.mariadb {
                "MariaDB (domain-server-seq)"
            } else {
                "MySQL (uuid:intervals)"
            }
        )));
    }
    let (executed, purged) = if traits.mariadb {
        let pos: Option<String> = conn.query_first("SELECT @@GLOBAL.gtid_binlog_pos").await?;
        (pos.and_then(|pos| super::gtid::Gtids::parse(&pos)), None)
    } else {
        let row: Option<(String, String)> = conn
            .query_first("SELECT @@GLOBAL.gtid_executed, @@GLOBAL.gtid_purged")
            .await?;
        let (executed, purged) = row.unwrap_or_default();
        (
            super::gtid::Gtids::parse(&executed.replace('\n', "")),
            Some(purged.replace('\n', "")),
        )
    };
    conn.disconnect().await.ok();
    if !executed.as_ref().is_some_and(|executed| gtid.within(executed)) {
        return Err(BinlogError::Refused(format!(
            "the server has not executed all of {gtid} (it is at {})",
            executed.map_or("nothing".to_string(), |executed| executed.to_string())
        )));
    }
    if let Some(purged) = purged.and_then(|purged| super::gtid::Gtids::parse(&purged))
        && !purged.within(&gtid)
    {
        return Err(BinlogError::Refused(format!(
            "the server purged transactions after {gtid} (gtid_purged {purged}): starting there would skip them"
        )));
    }
    let position = Position {
        file: String::new(),
        pos: 4,
        gtid: Some(gtid),
        server: None,
    };
    checkpoints.save(&position).await?;
    Ok((old, position))
}

/// `SHOW BINARY LOGS`: (file, size).
async fn binary_logs(conn: &mut mysql_async::Conn) -> Result<Vec<(String, u64)>, BinlogError> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.get::<String, _>(0)?, row.get::<u64, _>(1)?)))
        .collect())
}
