//! What can go wrong talking to Redis ([`CacheError`]), and how callers tell a transient failure from a definite one.

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The first connection failed.
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// A command or pipeline failed.
    #[error("Redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// Stale-set protection refused a batch: the read lease its data was read under had ended (the run timed out or
    /// gave up, or outlived its lease). Nothing of the batch was written; reading again is the remedy.
    #[error(
        "the read lease ended before its writes landed; the batch was refused so that it cannot install stale data"
    )]
    LeaseEnded,
    /// With `[ha]`: this instance does not hold the lease (it is the standby, or lost the lease), so Redis refuses
    /// its writes. Nothing was written; the leader writes instead.
    #[error("this instance does not hold the HA lease; its writes are refused")]
    Fenced,
    /// The server is a Redis Cluster (ElastiCache with cluster mode enabled), but `[redis] cluster` is not set.
    #[error(
        "the server is a Redis Cluster (ElastiCache: cluster mode enabled): set `cluster = true` in [redis] (or \
         CACHEWARDEN_REDIS__CLUSTER=true), with url = the configuration endpoint; as a single node, keys would land \
         on the wrong shard"
    )]
    ClusterMode,
    /// `[redis] cluster = true`, but the server is a single node (or cluster mode disabled).
    #[error(
        "[redis] cluster = true, but the server is not a Redis Cluster (cluster_enabled:0; ElastiCache: cluster mode \
         disabled): remove `cluster = true`, or point url at the cluster's configuration endpoint"
    )]
    NotCluster,
    /// The CA file configured for TLS could not be read.
    #[error("cannot read Redis CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl CacheError {
    /// Whether trying again later may succeed (a dropped connection rather than, say, a refused password).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => !matches!(
                error.kind(),
                redis::ErrorKind::AuthenticationFailed
                    | redis::ErrorKind::InvalidClientConfig
                    // An ACL refusal: the user may not touch that key or run that command, however often we ask.
                    | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
            ),
            // Reading again, under a new lease, is the remedy.
            CacheError::LeaseEnded => true,
            // Only a new term as leader (which starts its work afresh) may write again.
            CacheError::Fenced | CacheError::ClusterMode | CacheError::NotCluster | CacheError::CaFile { .. } => false,
        }
    }

    /// Whether Redis refused the user or password (`WRONGPASS`, `NOAUTH`): rotated credentials, maybe.
    pub(crate) fn is_auth_failure(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => {
                error.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
            }
            _ => false,
        }
    }

    /// Whether Redis refused a write for memory (`OOM`: `maxmemory` reached under `noeviction`). Deletes are still
    /// allowed then, and free memory.
    pub(crate) fn is_out_of_memory(&self) -> bool {
        matches!(self, CacheError::Command(error) if error.code() == Some("OOM"))
    }

    /// Whether Redis could not be reached at all (refused, timed out, TLS), as opposed to refusing us: exit 69.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, CacheError::Connect(_)) && self.is_transient()
    }

    /// Whether the server answered with an error reply (an unknown command, a refusal) rather than not answering.
    pub(crate) fn is_server_reply(&self) -> bool {
        match self {
            CacheError::Connect(error) | CacheError::Command(error) => {
                matches!(error.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension)
            }
            CacheError::LeaseEnded
            | CacheError::Fenced
            | CacheError::ClusterMode
            | CacheError::NotCluster
            | CacheError::CaFile { .. } => false,
        }
    }
}
