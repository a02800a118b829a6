//! The replication connection's questions to the server: can its binlog be followed, where does it end now, and
//! what a failure means ([`BinlogError`]: purged, definite or transient).

use mysql_async::Conn;
use mysql_async::prelude::Queryable as _;

use super::checkpoint::Position;
use crate::cache::CacheError;

/// Why a binlog session ended.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    /// The saved position is gone from the server (purged): changes in between are lost to us.
    #[error("binlog position {0} is no longer on the server: {1}")]
    Purged(String, String),
    /// The server cannot be followed as configured, or Redis refuses what we must do; an operator must act.
    #[error("{0}")]
    Definite(String),
    /// A network or server hiccup; reconnecting will do.
    #[error("{0}")]
    Transient(String),
}

impl BinlogError {
    /// A Redis failure while `doing`, by its kind.
    pub fn from_cache(doing: &str, error: CacheError) -> Self {
        if error.is_transient() {
            BinlogError::Transient(format!("{doing}: {error}"))
        } else {
            BinlogError::Definite(format!("{doing}: {error}"))
        }
    }
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

/// A stream error at `position`: error 1236 means the position is gone.
pub fn classify(error: mysql_async::Error, position: &Position) -> BinlogError {
    match &error {
        mysql_async::Error::Server(server) if server.code == 1236 => {
            BinlogError::Purged(position.to_string(), server.message.clone())
        }
        _ => error.into(),
    }
}

/// What the start-up checks learned about the server.
pub struct ServerTraits {
    pub mariadb: bool,
    /// Bytes of checksum after each event (`binlog_checksum`): 4 for CRC32, else 0.
    pub checksum_bytes: usize,
}

/// Refuses servers whose binlog cannot be followed correctly.
pub async fn check_server(conn: &mut Conn) -> Result<ServerTraits, BinlogError> {
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
    let checksum: Option<String> = conn.query_first("SELECT @@GLOBAL.binlog_checksum").await?;
    let checksum_bytes = if checksum.is_some_and(|c| c.eq_ignore_ascii_case("CRC32")) {
        4
    } else {
        0
    };
    Ok(ServerTraits {
        mariadb,
        checksum_bytes,
    })
}

/// The server's current binlog position.
pub async fn current_position(conn: &mut Conn) -> Result<Position, BinlogError> {
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
