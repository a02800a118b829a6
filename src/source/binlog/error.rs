//! Why a binlog session ended ([`BinlogError`], each failure with its typed source) and what that asks of the
//! listener ([`Verdict`]: recover from a gap, retry soon, wait for an operator, or let the checkpoint wait).

use std::path::PathBuf;

use crate::exec::cache::CacheError;

/// `EIO` on Linux: an I/O error of the device, which may pass.
const EIO: i32 = 5;

/// Why a binlog session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BinlogError {
    /// The saved position is gone from the server (purged, or it means nothing here): changes in between are lost
    /// to us.
    #[error("binlog position {position} is no longer on the server: {reason}")]
    Purged { position: String, reason: String },
    /// MySQL answered with an error, or the connection failed.
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    /// Redis failed while `doing` something with the checkpoint.
    #[error("{}", redis_failure(doing, source))]
    Redis {
        doing: &'static str,
        #[source]
        source: CacheError,
    },
    /// The checkpoint file could not be read or written.
    #[error("{}", file_failure(doing, path, source))]
    CheckpointFile {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An event the stream sent could not be read (a network or server hiccup: reading it again may do).
    #[error("undecodable {what}: {source}")]
    Undecodable {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The server cannot be followed as configured, the saved position is wrong, or the binlog holds what we cannot
    /// decode: an operator must act.
    #[error("{0}")]
    Refused(String),
    /// The session was cut without an error to keep (a timeout, a closed stream, a checkpoint Redis lost).
    #[error("{0}")]
    Interrupted(String),
    /// The replication URL changed: reconnect at once with the new one.
    #[error("[binlog] url changed")]
    Reconnect,
}

/// What a [`BinlogError`] asks of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The position is gone: recover as after a gap.
    Purged,
    /// Reconnecting will do.
    Transient,
    /// MySQL denied the replication user access (1045): a wrong or rotated password. Definite, unless the
    /// configuration read again holds another URL.
    AccessDenied,
    /// An operator must act (the server, `[binlog]` or Redis).
    Definite,
    /// The checkpoint store has no room — Redis is full (`maxmemory` under `noeviction`), or the checkpoint file's
    /// disk is full or failing — so the checkpoint waits and the stream goes on. It names the cause for `/readyz`
    /// (`redis_full`, `checkpoint_file`).
    CheckpointWaits(&'static str),
    /// Reconnect at once.
    Reconnect,
}

impl BinlogError {
    /// A Redis failure while `doing`.
    pub(crate) fn redis(doing: &'static str) -> impl FnOnce(CacheError) -> Self {
        move |source| BinlogError::Redis { doing, source }
    }

    /// What this failure asks of the listener.
    pub(crate) fn verdict(&self) -> Verdict {
        match self {
            BinlogError::Purged { .. } => Verdict::Purged,
            BinlogError::Mysql(mysql_async::Error::Server(server)) => match server.code {
                1045 => Verdict::AccessDenied,
                // Access denied to a database, missing REPLICATION privileges, an unknown system variable.
                1044 | 1227 | 1193 => Verdict::Definite,
                _ => Verdict::Transient,
            },
            BinlogError::Mysql(_) | BinlogError::Undecodable { .. } | BinlogError::Interrupted(_) => Verdict::Transient,
            BinlogError::Redis { source, .. } if source.is_out_of_memory() => Verdict::CheckpointWaits("redis_full"),
            BinlogError::Redis { source, .. } if source.is_transient() => Verdict::Transient,
            // A full disk or an I/O error passes (space is freed, a volume comes back): the checkpoint waits,
            // invalidations go on. A missing directory or a permission does not.
            BinlogError::CheckpointFile { source, .. } if file_error_passes(source) => {
                Verdict::CheckpointWaits("checkpoint_file")
            }
            BinlogError::Redis { .. } | BinlogError::CheckpointFile { .. } | BinlogError::Refused(_) => {
                Verdict::Definite
            }
            BinlogError::Reconnect => Verdict::Reconnect,
        }
    }

    /// Whether an operator must act before following the binlog can work (access denied included).
    pub(crate) fn is_definite(&self) -> bool {
        matches!(self.verdict(), Verdict::Definite | Verdict::AccessDenied)
    }
}

fn file_error_passes(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull || error.raw_os_error() == Some(EIO)
}

fn redis_failure(doing: &str, error: &CacheError) -> String {
    if error.is_out_of_memory() {
        format!(
            "Redis is out of memory (maxmemory under noeviction): invalidations are plain deletes, the binlog \
             checkpoint waits ({doing}: {error})"
        )
    } else {
        format!("{doing}: {error}")
    }
}

fn file_failure(doing: &str, path: &std::path::Path, error: &std::io::Error) -> String {
    let message = format!("cannot {doing} {}: {error}", path.display());
    if file_error_passes(error) {
        format!("{message}: the binlog checkpoint waits, invalidations go on")
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_error(error: std::io::Error) -> BinlogError {
        BinlogError::CheckpointFile {
            doing: "write",
            path: PathBuf::from("/var/lib/cachewarden/checkpoint"),
            source: error,
        }
    }

    #[test]
    fn a_full_disk_lets_the_checkpoint_wait_and_a_permission_needs_an_operator() {
        let full = file_error(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(full.verdict(), Verdict::CheckpointWaits("checkpoint_file"));
        assert!(full.to_string().contains("the binlog checkpoint waits"), "{full}");
        let eio = file_error(std::io::Error::from_raw_os_error(EIO));
        assert_eq!(eio.verdict(), Verdict::CheckpointWaits("checkpoint_file"));
        let denied = file_error(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(denied.verdict(), Verdict::Definite);
        assert!(denied.is_definite());
        assert!(
            denied
                .to_string()
                .starts_with("cannot write /var/lib/cachewarden/checkpoint: "),
            "{denied}"
        );
    }

    #[test]
    fn server_errors_are_judged_by_their_code() {
        let server = |code| {
            BinlogError::Mysql(mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "refused".into(),
                state: "HY000".into(),
            }))
        };
        assert_eq!(server(1045).verdict(), Verdict::AccessDenied);
        assert_eq!(server(1227).verdict(), Verdict::Definite);
        assert_eq!(server(2013).verdict(), Verdict::Transient);
        assert!(!server(2013).is_definite());
        assert_eq!(BinlogError::Interrupted("closed".into()).verdict(), Verdict::Transient);
        assert_eq!(
            BinlogError::Refused("binlog_format".into()).verdict(),
            Verdict::Definite
        );
    }
}
