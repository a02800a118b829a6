//! The replication connection's questions to the server: can its binlog be followed, where does it end now, and
//! what a failure means ([`BinlogError`]: purged, definite or transient).

use std::time::Duration;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts};

use super::checkpoint::Position;
use crate::cache::CacheError;
use crate::config::SecretUrl;

/// Connecting and the start-up checks must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A connection for replication as `url`.
pub async fn connect(url: &SecretUrl) -> Result<Conn, BinlogError> {
    let opts = Opts::from_url(url.expose())
        .map_err(|_| BinlogError::Definite("[binlog] url is not a valid MySQL URL".into()))?;
    tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
        .await
        .map_err(|_| BinlogError::Transient("connecting for replication timed out".into()))?
        .map_err(BinlogError::from)
}

/// Everything following the binlog needs from the server, asked up front (start-up, `check --connect`): the user
/// can log in, the binlog is on and in the form we decode, the current position can be read (REPLICATION CLIENT or
/// BINLOG MONITOR) and the user holds REPLICATION SLAVE.
pub async fn preflight(url: &SecretUrl) -> Result<(), BinlogError> {
    let mut conn = connect(url).await?;
    check_server(&mut conn).await?;
    current_position(&mut conn).await?;
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    conn.disconnect().await.ok();
    if grants.iter().any(|grant| may_replicate(grant)) {
        Ok(())
    } else {
        Err(BinlogError::Definite(format!(
            "the [binlog] user lacks REPLICATION SLAVE ON *.* (SHOW GRANTS: {})",
            grants.join("; ")
        )))
    }
}

/// Whether a `SHOW GRANTS` line gives (or may give, through a role) the right to read the binlog.
fn may_replicate(grant: &str) -> bool {
    let grant = grant.to_ascii_uppercase();
    let global = grant.contains(" ON *.* ");
    let role = !grant.contains(" ON ");
    role || global
        && ["REPLICATION SLAVE", "REPLICATION REPLICA", "ALL PRIVILEGES"]
            .iter()
            .any(|p| grant.contains(p))
}

/// What the start-up checks learned about the server.
pub struct ServerTraits {
    pub mariadb: bool,
    /// `@@server_id`: whose binlog files these are.
    pub server_id: u32,
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
    let server_id: Option<u32> = conn.query_first("SELECT @@server_id").await?;
    Ok(ServerTraits {
        mariadb,
        server_id: server_id.unwrap_or_default(),
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
        Some((file, pos)) if !file.is_empty() => Ok(Position::at(file, pos)),
        _ => Err(BinlogError::Definite(
            "SHOW MASTER STATUS returned nothing: binary logging is off, or the user lacks REPLICATION CLIENT".into(),
        )),
    }
}

/// MariaDB: `position` (a file offset on this server) with its GTID position and this server's id, so that the
/// checkpoint also means something on another server of the topology. The GTID stays unknown when the server
/// cannot map the offset (`BINLOG_GTID_POS` is NULL: not a transaction boundary, or purged).
pub async fn with_gtid(conn: &mut Conn, mut position: Position, server_id: u32) -> Result<Position, BinlogError> {
    // An error (a file the server never had) leaves the GTID unknown, like NULL: the offset is tried as it is.
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&position.file, position.pos))
        .await
        .unwrap_or_default();
    position.gtid = gtid.flatten().and_then(|gtid| super::checkpoint::Gtids::parse(&gtid));
    position.server = Some(server_id);
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::may_replicate;

    #[test]
    fn only_a_global_replication_grant_or_a_role_may_replicate() {
        assert!(may_replicate(
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `cw`@`%`"
        ));
        assert!(may_replicate(
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"
        ));
        assert!(may_replicate("GRANT `cdc_role` TO `cw`@`%`"));
        assert!(!may_replicate("GRANT USAGE ON *.* TO `cw`@`%`"));
        assert!(!may_replicate("GRANT BINLOG MONITOR ON *.* TO `cw`@`%`"));
        assert!(!may_replicate("GRANT ALL PRIVILEGES ON `shop`.* TO `cw`@`%`"));
    }
}
