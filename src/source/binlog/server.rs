//! The replication connection's questions to the server: can its binlog be followed, and where does it end now.

use std::time::Duration;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts};

use super::checkpoint::Position;
use super::error::BinlogError;
use super::gtid::{Gtids, parse_mysql_gtid};
use super::settings::{self, Retention};
use crate::config::SecretUrl;

/// Connecting and the start-up checks must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream error at `position`: error 1236 means the position is gone.
pub(super) fn classify(error: mysql_async::Error, position: &Position) -> BinlogError {
    match &error {
        mysql_async::Error::Server(server) if server.code == 1236 => BinlogError::Purged {
            position: position.to_string(),
            reason: server.message.clone(),
        },
        _ => error.into(),
    }
}

/// A connection for replication as `url`.
pub(super) async fn connect(url: &SecretUrl) -> Result<Conn, BinlogError> {
    let mut opts = Opts::from_url(url.expose())
        .map_err(|_| BinlogError::Refused("[binlog] url is not a valid MySQL URL".into()))?;
    // mysql_async would otherwise move a connection to 127.0.0.1 onto the Unix socket the server names
    // (`@@socket`): through a tunnel or a local proxy to a remote server, that socket is a local server's, and the
    // binlog followed would be the wrong one. The URL's address is the server, unless it asks otherwise.
    if !url.expose().contains("prefer_socket=") {
        opts = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false).into();
    }
    tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
        .await
        .map_err(|_| BinlogError::Interrupted("connecting for replication timed out".into()))?
        .map_err(BinlogError::from)
}

/// Everything following the binlog needs from the server, asked up front (start-up, `check --connect`): the user
/// can log in, the binlog is on and in the form we decode, the current position can be read (REPLICATION CLIENT or
/// BINLOG MONITOR), the user holds REPLICATION SLAVE, and no replica the server reports has our `server_id`.
pub(crate) async fn preflight(url: &SecretUrl, server_id: u32) -> Result<ServerTraits, BinlogError> {
    let mut conn = connect(url).await?;
    let server = check_server(&mut conn).await?;
    current_position(&mut conn, &server).await?;
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let twin = replica_with_id(&mut conn, server_id).await;
    conn.disconnect().await.ok();
    if !grants.iter().any(|grant| may_replicate(grant)) {
        return Err(BinlogError::Refused(format!(
            "the [binlog] user lacks REPLICATION SLAVE ON *.* (SHOW GRANTS: {})",
            grants.join("; ")
        )));
    }
    match twin {
        Some(replica) => Err(BinlogError::Refused(format!(
            "server_id {server_id} is the id of the replica {replica} the server reports (SHOW REPLICAS): two \
             replicas with one id cut each other off; set another [binlog] server_id, or leave it out for one of \
             this instance's own"
        ))),
        None => Ok(server),
    }
}

/// The replica the server reports with `server_id` (`host:port`), if any: `SHOW REPLICAS` (MySQL 8.0.22 and later),
/// else `SHOW SLAVE HOSTS` (MariaDB, older MySQL); a server that answers neither is not checked. A registration
/// without a port is a binlog client like this one (mysql_async registers so), not a server: it is not counted, or
/// the session a crash left behind, which the server lists until it notices, would refuse this instance's restart.
async fn replica_with_id(conn: &mut Conn, server_id: u32) -> Option<String> {
    let mut rows: Option<Vec<mysql_async::Row>> = conn.query("SHOW REPLICAS").await.ok();
    if rows.is_none() {
        rows = conn.query("SHOW SLAVE HOSTS").await.ok();
    }
    rows?.into_iter().find_map(|row| {
        let id: Option<u32> = row.get(0);
        let host: Option<String> = row.get(1);
        let port: Option<u32> = row.get(2);
        let port = port.filter(|port| *port != 0)?;
        (id == Some(server_id)).then(|| format!("{}:{port}", host.unwrap_or_default()))
    })
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
pub(crate) struct ServerTraits {
    pub mariadb: bool,
    /// Transactions carry GTIDs: MariaDB always, MySQL with `gtid_mode = ON`.
    pub gtids: bool,
    /// `@@server_id`: whose binlog files these are.
    pub server_id: u32,
    /// Bytes of checksum glued to the name of the artificial rotate that opens a dump (before the stream's format
    /// description tells the client): MariaDB with `binlog_checksum = CRC32` sends 4; MySQL sends none (seen on 9.7:
    /// its dump thread follows what the replica announced, and mysql_async announces a value MySQL does not know).
    pub checksum_bytes: usize,
    /// How long the server keeps binlog files.
    pub retention: Retention,
    /// Settings that should change (GTIDs off on MySQL, a short retention), each saying what to set and where.
    pub warnings: Vec<String>,
}

/// Refuses servers whose binlog cannot be followed correctly (every reason at once, each saying what to set and
/// where); what should change but need not is in the traits' `warnings`.
pub(super) async fn check_server(conn: &mut Conn) -> Result<ServerTraits, BinlogError> {
    let version: String = conn.query_first("SELECT VERSION()").await?.unwrap_or_default();
    let mariadb = version.contains("MariaDB");
    let names: Vec<String> = settings::WATCHED.iter().map(|name| format!("'{name}'")).collect();
    let variables: Vec<(String, String)> = conn
        .query(format!(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})",
            names.join(", ")
        ))
        .await?;
    // RDS and Aurora keep binlogs as long as this says, whatever the server's own variables say; a user without
    // SELECT on it (or a server without it) reads nothing.
    let rds_retention_hours = conn
        .query_first::<Option<String>, _>(
            "SELECT value FROM mysql.rds_configuration WHERE name = 'binlog retention hours'",
        )
        .await
        .ok()
        .flatten()
        .map(|hours| hours.and_then(|hours| hours.trim().parse::<u64>().ok()));
    let observed = settings::Observed {
        variables: variables
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect(),
        mariadb,
        rds_retention_hours,
    };
    let judged = observed.judge();
    if !judged.refusals.is_empty() {
        return Err(BinlogError::Refused(judged.refusals.join("; ")));
    }
    let gtids = mariadb
        || observed
            .variables
            .get("gtid_mode")
            .is_some_and(|mode| mode.eq_ignore_ascii_case("ON"));
    let checksum: Option<String> = conn.query_first("SELECT @@GLOBAL.binlog_checksum").await?;
    let checksum_bytes = if mariadb && checksum.is_some_and(|c| c.eq_ignore_ascii_case("CRC32")) {
        4
    } else {
        0
    };
    let server_id: Option<u32> = conn.query_first("SELECT @@server_id").await?;
    Ok(ServerTraits {
        mariadb,
        gtids,
        server_id: server_id.unwrap_or_default(),
        checksum_bytes,
        retention: observed.retention(),
        warnings: judged.warnings,
    })
}

/// The server's current binlog position; on MySQL with GTIDs on, with the GTID set executed up to it (the same
/// statement reports both, so they agree).
pub(super) async fn current_position(conn: &mut Conn, server: &ServerTraits) -> Result<Position, BinlogError> {
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row,
        // MySQL 8.4 renamed it.
        Err(_) => conn.query_first("SHOW BINARY LOG STATUS").await?,
    };
    let Some(row) = row else {
        return Err(no_position());
    };
    let (file, pos): (String, u64) = (row.get(0).unwrap_or_default(), row.get(1).unwrap_or_default());
    if file.is_empty() {
        return Err(no_position());
    }
    let mut position = Position::at(file, pos);
    if !server.mariadb && server.gtids {
        // Executed_Gtid_Set, MySQL's fifth column.
        let executed: Option<String> = row.get(4);
        position.gtid = executed.as_deref().and_then(Gtids::parse);
        position.server = Some(server.server_id);
    }
    Ok(position)
}

fn no_position() -> BinlogError {
    BinlogError::Refused(
        "SHOW MASTER STATUS returned nothing: binary logging is off, or the user lacks REPLICATION CLIENT".into(),
    )
}

/// `position` (a file offset on this server) with its GTID position and this server's id, so that the checkpoint
/// also means something on another server of the topology. The GTID stays unknown when the server cannot map the
/// offset (not a transaction boundary, purged, or GTIDs off).
pub(super) async fn with_gtid(
    conn: &mut Conn,
    mut position: Position,
    server: &ServerTraits,
) -> Result<Position, BinlogError> {
    position.gtid = match (server.mariadb, server.gtids) {
        // An error (a file the server never had) leaves the GTID unknown, like NULL: the offset is tried as it is.
        (true, _) => {
            let gtid: Option<Option<String>> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&position.file, position.pos))
                .await
                .unwrap_or_default();
            gtid.flatten().and_then(|gtid| Gtids::parse(&gtid))
        }
        (false, true) => mysql_gtid_at(conn, &position).await,
        (false, false) => None,
    };
    position.server = Some(server.server_id);
    Ok(position)
}

/// MySQL has no `BINLOG_GTID_POS`: the set at `file:pos` is the file's Previous_gtids plus the GTID of every
/// transaction before `pos`, read with SHOW BINLOG EVENTS a page at a time (once, for a checkpoint saved before
/// GTIDs were). `None` when the file cannot be read.
async fn mysql_gtid_at(conn: &mut Conn, position: &Position) -> Option<Gtids> {
    const PAGE: u64 = 10_000;
    let file = &position.file;
    if !file
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return None;
    }
    let mut gtids: Option<Gtids> = None;
    let mut offset = 0;
    loop {
        let rows: Vec<(String, u64, String, u32, u64, String)> = conn
            .query(format!("SHOW BINLOG EVENTS IN '{file}' LIMIT {offset}, {PAGE}"))
            .await
            .ok()?;
        for (_, pos, kind, _, _, info) in &rows {
            if *pos >= position.pos {
                return gtids;
            }
            match kind.as_str() {
                "Previous_gtids" => gtids = Some(Gtids::parse(info)?),
                "Gtid" | "Gtid_tagged" => {
                    // `SET @@SESSION.GTID_NEXT= 'uuid:N'`
                    let gtid = info.split('\'').nth(1).and_then(parse_mysql_gtid)?;
                    gtids.as_mut()?.record(gtid);
                }
                _ => {}
            }
        }
        if (rows.len() as u64) < PAGE {
            return gtids;
        }
        offset += PAGE;
    }
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
